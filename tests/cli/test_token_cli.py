"""``pgwarden token init | mint``: tokens a verifier for the dev issuer accepts and any other refuses."""

from __future__ import annotations

import stat
from pathlib import Path

import jwt
import pytest
from test_approvals_cli import pgwarden

from pgwarden.engine.config import Identity
from pgwarden.engine.dev_issuer import DEV_ISSUER, DevIssuer
from pgwarden.engine.identity import AuthenticationError, TokenVerifier


def _verifier(issuer: str = DEV_ISSUER, *, audience: str = "pgwarden", **keys: str) -> TokenVerifier:
    return TokenVerifier(Identity(issuer=issuer, audience=audience, algorithms=["EdDSA"], **keys))


def test_mint_is_accepted_by_the_dev_identity_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    minted = pgwarden("token", "mint", "--sub", "alice", "--groups", "dba,oncall", "--ttl", "15min",
                      "--state", str(state))
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert "\n" not in token and "DEVELOPMENT-ONLY" in minted.stderr
    assert stat.S_IMODE((state / "dev-issuer.key.pem").stat().st_mode) == 0o600

    for keys in ({"jwks_file": str(state / "jwks.json")}, {"public_key_file": str(state / "dev-issuer.pub.pem")}):
        principal = _verifier(**keys).verify(token)
        assert principal.subject == "alice" and principal.groups == {"dba", "oncall"}
        assert principal.claims["dev"] is True and principal.claims["iss"] == DEV_ISSUER
        assert principal.claims["exp"] - principal.claims["iat"] == 900

    # A gateway configured for a real issuer refuses it, and so does one with another dev key.
    with pytest.raises(AuthenticationError) as other_issuer:
        _verifier("https://id.example.com/realms/eng", jwks_file=str(state / "jwks.json")).verify(token)
    assert other_issuer.value.code == "wrong_issuer"
    other = DevIssuer.init(tmp_path / "other")
    with pytest.raises(AuthenticationError) as other_key:
        _verifier(jwks_file=str(other.jwks_file)).verify(token)
    assert other_key.value.code in ("unknown_key", "bad_signature")
    with pytest.raises(AuthenticationError) as other_key_pem:
        _verifier(public_key_file=str(other.public_key_file)).verify(token)
    assert other_key_pem.value.code == "bad_signature"
    with pytest.raises(AuthenticationError) as audience:
        _verifier(audience="another-service", jwks_file=str(state / "jwks.json")).verify(token)
    assert audience.value.code == "wrong_audience"


def test_init_keeps_the_key_and_audience_is_configurable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = pgwarden("token", "init", "--state", str(state), "--json")
    assert first.returncode == 0, first.stderr
    again = pgwarden("token", "init", "--state", str(state))
    assert again.returncode == 0 and "issuer: https://pgwarden-dev-issuer.invalid" in again.stdout
    assert DevIssuer.load(state).kid in first.stdout and DevIssuer.load(state).kid in again.stdout
    minted = pgwarden("token", "mint", "--sub", "svc", "--audience", "pgwarden-staging", "--state", str(state))
    claims = jwt.decode(minted.stdout.strip(), options={"verify_signature": False})
    assert claims["aud"] == "pgwarden-staging" and claims["groups"] == [] and claims["dev"] is True
    assert _verifier(audience="pgwarden-staging", jwks_file=str(state / "jwks.json")).verify(
        minted.stdout.strip()).subject == "svc"


def test_bad_input(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert pgwarden("token", "mint", "--sub", "a", "--ttl", "forever", "--state", str(state)).returncode == 2
    assert pgwarden("token", "mint", "--sub", "a", "--ttl", "30d", "--state", str(state)).returncode == 2
    assert pgwarden("token", "mint", "--groups", "dba", "--state", str(state)).returncode == 2  # --sub required
    DevIssuer.init(state)
    (state / "dev-issuer.key.pem").chmod(0o644)
    loose = pgwarden("token", "mint", "--sub", "a", "--state", str(state))
    assert loose.returncode == 2 and "dev_key_permissions" in loose.stderr
