"""Token verification: real keys, real signatures, a real JWKS endpoint, and the known attacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from pgwarden.engine.config import Identity, parse_config
from pgwarden.engine.identity import (
    MAX_TOKEN_CHARS,
    AuthenticationError,
    AuthErrorCode,
    KeySourceError,
    Principal,
    TokenVerifier,
)

ISSUER = "https://id.example.test"
AUDIENCE = "pgwarden"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key_2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _jwk(private_key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    public = private_key.public_key()
    algo = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    data: dict[str, Any] = json.loads(algo.to_jwk(public))
    data.update(kid=kid, use="sig")
    if alg:
        data["alg"] = alg
    return data


def _write_jwks(path: Path, *jwks: dict[str, Any]) -> Path:
    # Write then rename: a new inode, as a careful rotation script would do.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": list(jwks)}))
    os.replace(tmp, path)
    return path


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "agent", "iat": now, "exp": now + 300,
                              "groups": ["ai-agents", "staff"]}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _token(key: Any, kid: str | None = "k1", alg: str = "RS256", **claims: Any) -> str:
    headers = {"kid": kid} if kid else {}
    return jwt.encode(_claims(**claims), key, algorithm=alg, headers=headers)


def _identity(**keys: Any) -> Identity:
    values: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE}
    values.update(keys)
    return Identity.model_validate(values)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _refused(verifier: TokenVerifier, token: Any) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(token)
    if isinstance(token, str) and token:
        assert token not in str(info.value)  # never echo the token
        for part in token.split(".")[:2]:
            assert len(part) < 16 or part not in str(info.value)
    return info.value


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> Path:
    return _write_jwks(tmp_path / "jwks.json", _jwk(rsa_key, "k1"), _jwk(ec_key, "e1", "ES256"))


@pytest.fixture
def verifier(jwks_file: Path) -> TokenVerifier:
    return TokenVerifier(_identity(jwks_file=str(jwks_file)))


# -- accepted tokens --------------------------------------------------------------------------------


def test_valid_token_gives_a_principal(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    principal = verifier.verify(_token(rsa_key, email="a@example.test"))
    assert principal.subject == "agent"
    assert principal.groups == frozenset({"ai-agents", "staff"})
    assert principal.auth_method == "jwt"
    assert principal.claims["email"] == "a@example.test"
    with pytest.raises(TypeError):
        principal.claims["sub"] = "root"  # type: ignore[index]
    assert "a@example.test" not in repr(principal)  # claims stay out of logs


def test_ec_key_from_the_same_jwks(verifier: TokenVerifier, ec_key: ec.EllipticCurvePrivateKey) -> None:
    assert verifier.verify(_token(ec_key, kid="e1", alg="ES256")).subject == "agent"


def test_pem_public_key_file_and_eddsa(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    verifier = TokenVerifier(_identity(public_key_file="key.pem"), base_dir=tmp_path)
    assert verifier.verify(_token(key, kid=None, alg="EdDSA")).subject == "agent"


def test_from_config_reads_key_files_next_to_the_config(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    _write_jwks(tmp_path / "keys.json", _jwk(rsa_key, "k1"))
    text = (f"version: 1\ntargets: {{main: {{dsn: 'host=x'}}}}\n"
            f"identity: {{issuer: '{ISSUER}', audience: {AUDIENCE}, jwks_file: keys.json}}\n")
    config = parse_config(text, base_dir=tmp_path)
    assert TokenVerifier.from_config(config).verify(_token(rsa_key)).subject == "agent"


def test_audience_list_accepts_any(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(_identity(jwks_file=str(jwks_file), audience=["other", AUDIENCE]))
    assert verifier.verify(_token(rsa_key, aud=[AUDIENCE, "x"])).subject == "agent"


def test_expiry_within_leeway_is_accepted(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(_identity(jwks_file=str(jwks_file), leeway="60s"))
    assert verifier.verify(_token(rsa_key, exp=int(time.time()) - 30)).subject == "agent"


def test_token_without_kid_is_tried_against_each_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey,
                                                     rsa_key_2: rsa.RSAPrivateKey) -> None:
    path = _write_jwks(tmp_path / "j.json", _jwk(rsa_key_2, "other"), _jwk(rsa_key, "k1"))
    verifier = TokenVerifier(_identity(jwks_file=str(path)))
    assert verifier.verify(_token(rsa_key, kid=None)).subject == "agent"


# -- groups and subject -----------------------------------------------------------------------------


def test_groups_from_a_dotted_claim(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(_identity(jwks_file=str(jwks_file), groups_claim="realm_access.roles"))
    token = _token(rsa_key, groups=None, realm_access={"roles": ["dba", "ai-agents"]})
    assert verifier.verify(token).groups == frozenset({"dba", "ai-agents"})


def test_namespaced_claim_with_dots_in_its_name(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(_identity(jwks_file=str(jwks_file), groups_claim="https://example.test/groups"))
    token = _token(rsa_key, **{"https://example.test/groups": ["dba"]})
    assert verifier.verify(token).groups == frozenset({"dba"})


def test_string_groups_claim_is_one_group(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    assert verifier.verify(_token(rsa_key, groups="dba")).groups == frozenset({"dba"})


def test_missing_groups_claim_is_no_groups(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    assert verifier.verify(_token(rsa_key, groups=None)).groups == frozenset()


def test_odd_groups_claim_is_refused(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    assert _refused(verifier, _token(rsa_key, groups={"dba": True})).code is AuthErrorCode.INVALID_CLAIM
    assert _refused(verifier, _token(rsa_key, groups=["dba", 7])).code is AuthErrorCode.INVALID_CLAIM


def test_custom_subject_claim(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(_identity(jwks_file=str(jwks_file), subject_claim="preferred_username"))
    assert verifier.verify(_token(rsa_key, preferred_username="ada")).subject == "ada"
    assert _refused(verifier, _token(rsa_key)).code is AuthErrorCode.MISSING_CLAIM


def test_required_claims(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    for claim in ("sub", "exp", "iss", "aud"):
        error = _refused(verifier, _token(rsa_key, **{claim: None}))
        assert error.code is AuthErrorCode.MISSING_CLAIM, claim
        assert claim in error.message


def test_principal_for_the_cli() -> None:
    principal = Principal.local("ada", ["dba"])
    assert principal.auth_method == "cli" and principal.groups == frozenset({"dba"})
    assert hash(principal) == hash(Principal.local("ada", {"dba"}))


# -- refused tokens ---------------------------------------------------------------------------------


def test_expired(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    error = _refused(verifier, _token(rsa_key, exp=int(time.time()) - 3600))
    assert error.code is AuthErrorCode.TOKEN_EXPIRED
    assert "fresh" in error.message


def test_not_yet_valid(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    error = _refused(verifier, _token(rsa_key, nbf=int(time.time()) + 3600))
    assert error.code is AuthErrorCode.TOKEN_NOT_YET_VALID


def test_wrong_issuer(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    error = _refused(verifier, _token(rsa_key, iss="https://evil.example"))
    assert error.code is AuthErrorCode.WRONG_ISSUER
    assert ISSUER in error.message


def test_wrong_audience(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    error = _refused(verifier, _token(rsa_key, aud="some-other-api"))
    assert error.code is AuthErrorCode.WRONG_AUDIENCE
    assert AUDIENCE in error.message


def test_tampered_payload(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    header, _, signature = _token(rsa_key).split(".")
    forged = _b64(json.dumps(_claims(groups=["dba"])).encode())
    assert _refused(verifier, f"{header}.{forged}.{signature}").code is AuthErrorCode.BAD_SIGNATURE


def test_signed_by_someone_else(verifier: TokenVerifier, rsa_key_2: rsa.RSAPrivateKey) -> None:
    assert _refused(verifier, _token(rsa_key_2, kid="k1")).code is AuthErrorCode.BAD_SIGNATURE


def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    payload = _b64(json.dumps(_claims(groups=["dba"])).encode())
    for alg in ("none", "None", "NONE"):
        header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": "k1"}).encode())
        for token in (f"{header}.{payload}.", f"{header}.{payload}.{_b64(b'x')}"):
            error = _refused(verifier, token)
            assert error.code is AuthErrorCode.ALGORITHM_NOT_ALLOWED
            assert "unsigned" in error.message


def test_hmac_with_the_public_key_as_secret_is_refused(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    # The confusion attack: sign HS256 using the published public key (PEM, or its JWK) as the secret.
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
        header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": "k1"}).encode())
        payload = _b64(json.dumps(_claims(groups=["dba"])).encode())
        signature = _b64(hmac.new(pem, f"{header}.{payload}".encode(), digest).digest())
        error = _refused(verifier, f"{header}.{payload}.{signature}")
        assert error.code is AuthErrorCode.ALGORITHM_NOT_ALLOWED
        assert "HMAC" in error.message


def test_algorithm_not_in_the_configured_list(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(_identity(jwks_file=str(jwks_file), algorithms=["RS256"]))
    error = _refused(verifier, _token(rsa_key, alg="PS256"))
    assert error.code is AuthErrorCode.ALGORITHM_NOT_ALLOWED
    assert "RS256" in error.message


def test_algorithm_that_does_not_fit_the_key(verifier: TokenVerifier, ec_key: ec.EllipticCurvePrivateKey,
                                             rsa_key: rsa.RSAPrivateKey) -> None:
    # An ES256 token naming the RSA key's id, and an RS256 token naming the EC key's id.
    assert _refused(verifier, _token(ec_key, kid="k1", alg="ES256")).code is AuthErrorCode.ALGORITHM_NOT_ALLOWED
    assert _refused(verifier, _token(rsa_key, kid="e1", alg="RS256")).code is AuthErrorCode.ALGORITHM_NOT_ALLOWED


def test_jwk_declared_alg_is_binding(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = _write_jwks(tmp_path / "j.json", _jwk(rsa_key, "k1", alg="PS256"))
    verifier = TokenVerifier(_identity(jwks_file=str(path), algorithms=["RS256", "PS256"]))
    assert verifier.verify(_token(rsa_key, alg="PS256")).subject == "agent"
    assert _refused(verifier, _token(rsa_key, alg="RS256")).code is AuthErrorCode.ALGORITHM_NOT_ALLOWED


def test_unknown_kid(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    error = _refused(verifier, _token(rsa_key, kid="rotated-away"))
    assert error.code is AuthErrorCode.UNKNOWN_KEY
    assert "'rotated-away'" in error.message


GARBAGE: list[Any] = [
    "",
    "abc",
    "a.b",
    "a.b.c.d",
    "!!!.###.$$$",
    "eyJ.eyJ.",
    "..",
    _b64(b"not json") + "." + _b64(b"{}") + ".sig",
    _b64(b"[1, 2]") + "." + _b64(b"{}") + ".sig",
    "Bearer " + "a.b.c",
    "a" * (1024 * 1024),
    ("eyJhbGciOiJSUzI1NiJ9." + "A" * (1024 * 1024) + ".sig"),
    None,
    b"a.b.c",
    12,
]


@pytest.mark.parametrize("token", GARBAGE, ids=lambda t: repr(t)[:24])
def test_garbage_is_malformed_and_fast(verifier: TokenVerifier, token: Any) -> None:
    started = time.perf_counter()
    error = _refused(verifier, token)
    assert error.code is AuthErrorCode.MALFORMED_TOKEN
    assert time.perf_counter() - started < 0.05


def test_rs256_payload_that_is_not_json(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    header = _b64(json.dumps({"alg": "RS256", "kid": "k1"}).encode())
    payload = _b64(b"\xff not json")
    signing_input = f"{header}.{payload}".encode()
    signature = _b64(rsa_key.sign(signing_input, *_rs256_padding()))
    assert _refused(verifier, f"{header}.{payload}.{signature}").code is AuthErrorCode.MALFORMED_TOKEN


def _rs256_padding() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PKCS1v15(), hashes.SHA256()


def test_max_token_size_is_generous() -> None:
    assert MAX_TOKEN_CHARS >= 16 * 1024


# -- key sources ------------------------------------------------------------------------------------


def test_jwks_file_rotation(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, rsa_key_2: rsa.RSAPrivateKey) -> None:
    path = _write_jwks(tmp_path / "j.json", _jwk(rsa_key, "k1"))
    verifier = TokenVerifier(_identity(jwks_file=str(path)))
    assert _refused(verifier, _token(rsa_key_2, kid="k2")).code is AuthErrorCode.UNKNOWN_KEY
    _write_jwks(path, _jwk(rsa_key_2, "k2"))
    assert verifier.verify(_token(rsa_key_2, kid="k2")).subject == "agent"
    assert _refused(verifier, _token(rsa_key, kid="k1")).code is AuthErrorCode.UNKNOWN_KEY  # retired key
    path.write_text("{ half written")
    assert verifier.verify(_token(rsa_key_2, kid="k2")).subject == "agent"  # last good set kept


def test_key_source_problems_surface_at_start(tmp_path: Path) -> None:
    with pytest.raises(KeySourceError) as info:
        TokenVerifier(_identity(jwks_file=str(tmp_path / "absent.json")))
    assert info.value.code == "key_file_missing"
    (tmp_path / "bad.json").write_text('{"keys": []}')
    with pytest.raises(KeySourceError):
        TokenVerifier(_identity(jwks_file=str(tmp_path / "bad.json")))
    (tmp_path / "oct.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": _b64(b"secret"), "kid": "h"}]}))
    with pytest.raises(KeySourceError) as info:
        TokenVerifier(_identity(jwks_file=str(tmp_path / "oct.json")))
    assert info.value.code == "jwks_empty"
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(KeySourceError) as info:
        TokenVerifier(_identity(public_key_file=str(tmp_path / "bad.pem")))
    assert info.value.code == "key_file_invalid"


@dataclass
class _JwksServer:
    url: str
    keys: list[dict[str, Any]]
    hits: list[float] = field(default_factory=list)


@pytest.fixture
def jwks_server(rsa_key: rsa.RSAPrivateKey) -> Iterator[_JwksServer]:
    state = _JwksServer(url="", keys=[_jwk(rsa_key, "k1")])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(time.monotonic())
            body = json.dumps({"keys": state.keys}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/jwks"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_jwks_url_key_rotation(jwks_server: _JwksServer, rsa_key: rsa.RSAPrivateKey,
                               rsa_key_2: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(_identity(jwks_url=jwks_server.url, jwks_refresh_cooldown=0))
    assert verifier.verify(_token(rsa_key, kid="k1")).subject == "agent"
    assert verifier.verify(_token(rsa_key, kid="k1")).subject == "agent"
    assert len(jwks_server.hits) == 1  # the key set is cached

    jwks_server.keys = [_jwk(rsa_key, "k1"), _jwk(rsa_key_2, "k2")]  # the provider rotates
    assert verifier.verify(_token(rsa_key_2, kid="k2")).subject == "agent"
    assert len(jwks_server.hits) == 2  # one refetch, caused by the unknown kid

    assert _refused(verifier, _token(rsa_key_2, kid="k3")).code is AuthErrorCode.UNKNOWN_KEY


def test_jwks_url_refetch_cooldown_limits_unknown_kid_floods(jwks_server: _JwksServer,
                                                             rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(_identity(jwks_url=jwks_server.url, jwks_refresh_cooldown="10min"))
    assert verifier.verify(_token(rsa_key, kid="k1")).subject == "agent"
    for i in range(20):
        assert _refused(verifier, _token(rsa_key, kid=f"made-up-{i}")).code is AuthErrorCode.UNKNOWN_KEY
    assert len(jwks_server.hits) == 1


def test_jwks_url_unreachable(rsa_key: rsa.RSAPrivateKey) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    verifier = TokenVerifier(_identity(jwks_url=f"http://127.0.0.1:{port}/jwks"))
    error = _refused(verifier, _token(rsa_key))
    assert error.code is AuthErrorCode.KEY_SOURCE_UNAVAILABLE
    assert "retry" in error.message


def test_jwks_url_token_without_kid(jwks_server: _JwksServer, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(_identity(jwks_url=jwks_server.url))
    assert verifier.verify(_token(rsa_key, kid=None)).subject == "agent"


def test_unusable_keys_in_a_jwks_file_are_skipped(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    odd = [
        {"kty": "oct", "k": _b64(b"published-secret"), "kid": "h"},
        {**_jwk(rsa_key, "n"), "alg": "none"},
        {**_jwk(rsa_key, "enc"), "use": "enc"},
        "not a key",
    ]
    path = _write_jwks(tmp_path / "j.json", *odd, _jwk(rsa_key, "k1"))  # type: ignore[arg-type]
    verifier = TokenVerifier(_identity(jwks_file=str(path)))
    assert verifier.verify(_token(rsa_key, kid="k1")).subject == "agent"
    for kid in ("h", "n", "enc"):
        assert _refused(verifier, _token(rsa_key, kid=kid)).code is AuthErrorCode.UNKNOWN_KEY


def test_private_key_material_in_a_jwks_is_used_only_as_public_key(tmp_path: Path,
                                                                   rsa_key: rsa.RSAPrivateKey) -> None:
    private_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key))
    private_jwk.update(kid="k1")
    path = _write_jwks(tmp_path / "j.json", private_jwk)
    assert TokenVerifier(_identity(jwks_file=str(path))).verify(_token(rsa_key)).subject == "agent"


@pytest.mark.parametrize("served", [[], [{"kty": "RSA", "alg": "none", "kid": "k1", "n": "AQAB", "e": "AQAB"}]])
def test_jwks_url_serving_junk_fails_closed(jwks_server: _JwksServer, rsa_key: rsa.RSAPrivateKey,
                                            served: list[Any]) -> None:
    jwks_server.keys = served
    verifier = TokenVerifier(_identity(jwks_url=jwks_server.url))
    error = _refused(verifier, _token(rsa_key))
    assert error.code in (AuthErrorCode.KEY_SOURCE_UNAVAILABLE, AuthErrorCode.UNKNOWN_KEY)


def test_serving_without_identity_section_is_refused_clearly() -> None:
    from pgwarden.engine.config import parse_config
    from pgwarden.engine.identity import KeySourceError, TokenVerifier

    config = parse_config("version: 1\ntargets: {main: {dsn: 'host=x'}}\n", "t")
    with pytest.raises(KeySourceError) as err:
        TokenVerifier.from_config(config)
    assert err.value.code == "identity_missing"
