"""A local token issuer for DEVELOPMENT ONLY: an Ed25519 key in a state folder, and JWTs signed with it.

This exists so the demo and a developer's laptop can run pgwarden without an identity provider. It is
not an identity provider: whoever can read the state folder can mint a token for any subject and any
group. Every token it mints says so (``iss: https://pgwarden-dev-issuer.invalid`` and a ``dev: true`` claim), and the
``pgwarden token`` command warns on stderr each time.

A gateway accepts these tokens only when its ``identity`` section names this issuer and this key, e.g.::

    identity:
      issuer: https://pgwarden-dev-issuer.invalid
      audience: pgwarden
      jwks_file: .pgwarden-dev/jwks.json      # or public_key_file: .pgwarden-dev/dev-issuer.pub.pem
      algorithms: [EdDSA]

A gateway configured for a real issuer refuses them (``wrong_issuer``; ``bad_signature`` or
``unknown_key`` if someone also forges the ``iss``). Never point a production gateway at this key.

State folder layout (created by :func:`DevIssuer.init`, files the key is in are mode 0600):

* ``dev-issuer.key.pem`` — the Ed25519 private key (PKCS#8 PEM), 0600;
* ``dev-issuer.pub.pem`` — its public key (SubjectPublicKeyInfo PEM);
* ``jwks.json`` — the same public key as a JWKS with its ``kid`` (RFC 7638 thumbprint).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = ["DEFAULT_AUDIENCE", "DEV_ISSUER", "WARNING", "DevIssuer", "DevIssuerError", "identity_yaml"]

DEV_ISSUER = "https://pgwarden-dev-issuer.invalid"
DEFAULT_AUDIENCE = "pgwarden"
WARNING = ("pgwarden token: DEVELOPMENT-ONLY issuer — anyone who can read the state folder can mint any "
           "identity; never configure a production gateway to trust it")

KEY_FILE = "dev-issuer.key.pem"
PUBLIC_FILE = "dev-issuer.pub.pem"
JWKS_FILE = "jwks.json"
MAX_TTL_S = 7 * 24 * 3600


class DevIssuerError(Exception):
    """The state folder cannot be used, or a mint request is invalid. ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(public: ed25519.Ed25519PublicKey) -> dict[str, str]:
    x = _b64(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    # RFC 7638 thumbprint: the required members, sorted, no whitespace.
    thumb = _b64(hashlib.sha256(json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"),
                                           sort_keys=True).encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": thumb, "alg": "EdDSA", "use": "sig"}


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class DevIssuer:
    state_dir: Path
    private_key: ed25519.Ed25519PrivateKey
    kid: str

    # -- state ------------------------------------------------------------------------------------

    @classmethod
    def init(cls, state_dir: str | Path) -> DevIssuer:
        """Create the key in ``state_dir`` if there is none yet (an existing key is kept); return the issuer."""
        state = Path(state_dir).expanduser().resolve()
        try:
            state.mkdir(parents=True, exist_ok=True)
            os.chmod(state, 0o700)
            key_path = state / KEY_FILE
            if not key_path.exists():
                key = ed25519.Ed25519PrivateKey.generate()
                pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
                _write_private(key_path, pem)
        except OSError as exc:
            raise DevIssuerError("dev_state_unusable",
                                 f"the dev issuer's state folder {state} cannot be used ({exc.strerror})") from None
        issuer = cls.load(state)
        issuer._write_public()
        return issuer

    @classmethod
    def load(cls, state_dir: str | Path) -> DevIssuer:
        state = Path(state_dir).expanduser().resolve()
        key_path = state / KEY_FILE
        try:
            data = key_path.read_bytes()
        except FileNotFoundError:
            raise DevIssuerError("dev_issuer_not_initialised",
                                 f"no dev issuer key in {state}; run 'pgwarden token init --state {state}'") from None
        except OSError as exc:
            raise DevIssuerError("dev_state_unusable", f"{key_path} cannot be read ({exc.strerror})") from None
        if key_path.stat().st_mode & 0o077:
            raise DevIssuerError("dev_key_permissions",
                                 f"{key_path} is readable by others; it must be mode 0600 (chmod 600 it)")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError:
            raise DevIssuerError("dev_key_invalid", f"{key_path} is not a PEM private key") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise DevIssuerError("dev_key_invalid", f"{key_path} is not an Ed25519 key")
        return cls(state, key, _jwk(key.public_key())["kid"])

    def _write_public(self) -> None:
        public = self.private_key.public_key()
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        (self.state_dir / PUBLIC_FILE).write_bytes(pem)
        (self.state_dir / JWKS_FILE).write_text(json.dumps({"keys": [_jwk(public)]}, indent=2) + "\n")

    @property
    def public_key_file(self) -> Path:
        return self.state_dir / PUBLIC_FILE

    @property
    def jwks_file(self) -> Path:
        return self.state_dir / JWKS_FILE

    # -- minting ----------------------------------------------------------------------------------

    def mint(self, subject: str, groups: Iterable[str] = (), *, ttl_s: float = 3600,
             audience: str | list[str] = DEFAULT_AUDIENCE, extra: Mapping[str, Any] | None = None,
             now: float | None = None) -> str:
        """A JWT (EdDSA) for ``subject`` in ``groups``, valid ``ttl_s`` seconds, marked ``dev: true``."""
        if not isinstance(subject, str) or not subject.strip():
            raise DevIssuerError("dev_subject_missing", "give a subject (--sub), e.g. --sub alice")
        group_list = sorted({g.strip() for g in groups if g and g.strip()})
        if not 0 < ttl_s <= MAX_TTL_S:
            raise DevIssuerError("dev_ttl_invalid", f"the lifetime must be more than 0 and at most 7 days "
                                                    f"(got {ttl_s:g} s)")
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = dict(extra or {})
        claims.update({"iss": DEV_ISSUER, "sub": subject, "aud": audience, "groups": group_list,
                       "iat": issued, "nbf": issued, "exp": issued + int(ttl_s), "jti": secrets.token_hex(12),
                       "dev": True})
        return jwt.encode(claims, self.private_key, algorithm="EdDSA", headers={"kid": self.kid, "typ": "JWT"})


def identity_yaml(issuer: DevIssuer, audience: str = DEFAULT_AUDIENCE) -> str:
    """The ``identity:`` section a (development) gateway needs to accept this issuer's tokens."""
    return (f"identity:\n  issuer: {DEV_ISSUER}   # DEVELOPMENT ONLY\n  audience: {audience}\n"
            f"  jwks_file: {issuer.jwks_file}\n  algorithms: [EdDSA]\n")
