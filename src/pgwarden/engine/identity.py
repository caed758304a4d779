"""Who is asking: verifying bearer tokens (JWT) into a :class:`Principal`.

A :class:`Principal` is built only from a token whose signature, issuer, audience
and validity window have been checked. :class:`TokenVerifier` takes the
``identity`` section of the configuration and does that with pyjwt, drawing keys
from one source: a JWKS URL (through ``jwt.PyJWKClient``, cached, refetched when a
token names an unknown key id so key rotation is followed, but no more often than
a cooldown allows), a JWKS file (re-read when it changes on disk) or a single PEM
public key. The token's header is judged *before* any key is chosen: ``alg:
none`` and every HMAC algorithm are refused outright (HMAC "verified" with a
published public key is the classic confusion attack), and so is any algorithm
the configuration does not list; the key must also be of the family the
algorithm needs. Every failure is an :class:`AuthenticationError` with a stable
``code`` and a message saying what the client should do; messages never contain
the token. Verification is synchronous and may fetch the JWKS over the network:
async callers run it in a worker thread.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .config import GatewayConfig, Identity
from .principal import AuthMethod, Principal

log = logging.getLogger("pgwarden.identity")

# Far above any real access token (a few KB even with hundreds of groups), far below what
# would make base64/JSON decoding a cheap way to burn the gateway's CPU.
MAX_TOKEN_CHARS = 64 * 1024
_JWKS_FETCH_TIMEOUT_S = 5.0
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]*$")


class AuthErrorCode(StrEnum):
    MALFORMED_TOKEN = "malformed_token"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    KEY_SOURCE_UNAVAILABLE = "key_source_unavailable"


class AuthenticationError(Exception):
    """A token was refused. ``code`` is stable (:class:`AuthErrorCode`); ``message`` says what to do."""

    def __init__(self, code: AuthErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class KeySourceError(Exception):
    """The configured key file cannot be used; raised when the verifier is built, at start-up."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _show(value: object, limit: int = 64) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- keys -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    alg: str | None  # as declared by the JWK, if it declares one
    key: Any  # a cryptography public key object, never bytes: pyjwt cannot mistake it for an HMAC secret


_PUBLIC = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)
_PRIVATE = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)


def _is_asymmetric(key: Any) -> bool:
    # Symmetric ("oct") keys come back as bytes: a published HMAC secret is never a verification key.
    return isinstance(key, _PUBLIC + _PRIVATE)


def _public(key: Any) -> Any:
    # A JWKS may (wrongly) carry private material; verification only ever needs the public half.
    return key.public_key() if isinstance(key, _PRIVATE) else key


def _keys_from_jwk_set(data: Any, where: str) -> list[_Key]:
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise KeySourceError("jwks_invalid", f"{where} is not a JWKS (expected a JSON object with a 'keys' list)")
    keys: list[_Key] = []
    for jwk_data in data["keys"]:
        if not isinstance(jwk_data, Mapping) or jwk_data.get("use") not in (None, "sig"):
            continue
        if jwk_data.get("kty") == "oct":
            log.warning("%s holds a symmetric ('oct') key; it is ignored: published keys must be public keys", where)
            continue
        try:
            jwk = jwt.PyJWK(dict(jwk_data))
        except Exception as exc:  # pyjwt raises NotImplementedError for e.g. "alg": "none"
            log.warning("%s: a key is skipped (%s)", where, exc)
            continue
        if not _is_asymmetric(jwk.key):
            log.warning("%s: a key that is not an RSA, EC or EdDSA key is skipped", where)
            continue
        keys.append(_Key(jwk.key_id, jwk_data.get("alg"), _public(jwk.key)))
    if not keys:
        raise KeySourceError("jwks_empty", f"{where} holds no usable public signing key")
    return keys


def _pick(keys: list[_Key], kid: str | None, source: str) -> list[_Key]:
    if kid is None:
        return keys  # no kid: every key is a candidate; the signature decides
    chosen = [k for k in keys if k.kid == kid]
    if not chosen:
        raise AuthenticationError(
            AuthErrorCode.UNKNOWN_KEY,
            f"the token was signed with key id {_show(kid)}, which is not among the keys in {source}; "
            f"get a fresh token from the identity provider (if it just rotated keys, the operator may "
            f"need to update the key source)",
        )
    return chosen


class _PemKey:
    def __init__(self, path: Path) -> None:
        try:
            key = load_pem_public_key(path.read_bytes())
        except FileNotFoundError:
            raise KeySourceError("key_file_missing", f"identity.public_key_file {path} does not exist") from None
        except OSError as exc:
            raise KeySourceError("key_file_unreadable",
                                 f"identity.public_key_file {path} cannot be read ({exc.strerror})") from None
        except ValueError:
            raise KeySourceError(
                "key_file_invalid", f"identity.public_key_file {path} is not a PEM public key "
                                    "('-----BEGIN PUBLIC KEY-----')") from None
        if not isinstance(key, _PUBLIC):
            raise KeySourceError("key_file_invalid", f"identity.public_key_file {path} holds a "
                                                     f"{type(key).__name__}; expected an RSA, EC or Ed25519 key")
        self._keys = [_Key(None, None, key)]

    def candidates(self, kid: str | None) -> list[_Key]:
        return self._keys


class _JwksFile:
    """A JWKS on disk, re-read when its size or modification time changes (file-based rotation)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keys: list[_Key] = []
        self._refresh(initial=True)

    def _refresh(self, *, initial: bool = False) -> None:
        try:
            st = self._path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp:
                return
            keys = _keys_from_jwk_set(json.loads(self._path.read_bytes()), f"identity.jwks_file {self._path}")
        except (OSError, ValueError, KeySourceError) as exc:
            if initial:
                if isinstance(exc, KeySourceError):
                    raise
                code = "key_file_missing" if isinstance(exc, FileNotFoundError) else "key_file_invalid"
                raise KeySourceError(code, f"identity.jwks_file {self._path} cannot be used: {exc}") from None
            # A half-written file during rotation must not lock everyone out: keep the last good set.
            log.error("identity.jwks_file %s could not be re-read (%s); keeping the previous keys", self._path, exc)
            return
        self._keys, self._stamp = keys, stamp

    def candidates(self, kid: str | None) -> list[_Key]:
        with self._lock:
            self._refresh()
            keys = self._keys
        return _pick(keys, kid, "the configured JWKS file")


class _JwksUrl:
    def __init__(self, url: str, cache_ms: int, cooldown_ms: int) -> None:
        self._client = jwt.PyJWKClient(
            url,
            cache_jwk_set=cache_ms > 0,
            lifespan=max(cache_ms, 1) / 1000,
            timeout=_JWKS_FETCH_TIMEOUT_S,
            cooldown_duration=cooldown_ms / 1000,
        )

    def candidates(self, kid: str | None) -> list[_Key]:
        try:
            if kid is None:
                jwks = self._client.get_jwk_set()
                found = [k for k in jwks.keys if k.public_key_use in (None, "sig")]
            else:
                found = [self._client.get_signing_key(kid)]
        except jwt.PyJWKClientConnectionError as exc:
            log.error("fetching the JWKS failed: %s", exc)
            raise AuthenticationError(
                AuthErrorCode.KEY_SOURCE_UNAVAILABLE,
                "the gateway could not fetch the identity provider's signing keys; retry in a moment "
                "(operator: check identity.jwks_url and the network)",
            ) from None
        except (jwt.PyJWKSetError, jwt.PyJWKError) as exc:
            log.error("the JWKS from the identity provider is unusable: %s", exc)
            raise AuthenticationError(
                AuthErrorCode.KEY_SOURCE_UNAVAILABLE,
                "the identity provider's key set could not be used; retry later (operator: check identity.jwks_url)",
            ) from None
        except jwt.PyJWKClientError:
            raise AuthenticationError(
                AuthErrorCode.UNKNOWN_KEY,
                f"the token was signed with key id {_show(kid)}, which the identity provider does not "
                f"publish; get a fresh token from the identity provider",
            ) from None
        except Exception as exc:  # whatever a hostile or broken endpoint serves, fail closed
            log.error("the JWKS from the identity provider could not be read: %r", exc)
            raise AuthenticationError(
                AuthErrorCode.KEY_SOURCE_UNAVAILABLE,
                "the identity provider's key set could not be used; retry later (operator: check identity.jwks_url)",
            ) from None
        return [
            _Key(k.key_id, getattr(k, "_jwk_data", {}).get("alg"), _public(k.key))
            for k in found
            if _is_asymmetric(k.key)
        ]


# -- verification -----------------------------------------------------------------------------------

_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}


def _fits(key: _Key, alg: str) -> bool:
    """Does this key belong to the family ``alg`` needs? (pyjwt would fail less clearly.)"""
    if key.alg is not None and key.alg != alg:
        return False
    k = key.key
    if alg[:2] in ("RS", "PS"):
        return isinstance(k, rsa.RSAPublicKey)
    if alg in _CURVES:
        return isinstance(k, ec.EllipticCurvePublicKey) and isinstance(k.curve, _CURVES[alg])
    if alg == "EdDSA":
        return isinstance(k, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))
    return False


_MISSING = object()


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    # A literal key wins: namespaced claims such as "https://example.com/groups" contain dots.
    if path in claims:
        return claims[path]
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


class TokenVerifier:
    """Verifies bearer tokens against the ``identity`` configuration."""

    def __init__(self, identity: Identity, *, base_dir: Path | str | None = None) -> None:
        self._identity = identity
        self._leeway_s = identity.leeway / 1000
        self._audience = list(identity.audience)
        self._keys: _PemKey | _JwksFile | _JwksUrl
        if identity.jwks_url is not None:
            self._keys = _JwksUrl(identity.jwks_url, identity.jwks_cache, identity.jwks_refresh_cooldown)
        elif identity.jwks_file is not None:
            self._keys = _JwksFile(_resolve(identity.jwks_file, base_dir))
        else:
            assert identity.public_key_file is not None  # Identity guarantees one source
            self._keys = _PemKey(_resolve(identity.public_key_file, base_dir))

    @classmethod
    def from_config(cls, config: GatewayConfig) -> TokenVerifier:
        if config.identity is None:
            raise KeySourceError("identity_missing", "the configuration has no 'identity' section; add one "
                                 "(issuer, audience and a key source) to accept agents' tokens")
        return cls(config.identity, base_dir=config.base_dir)

    def verify(self, token: str) -> Principal:
        """The principal ``token`` proves, or :class:`AuthenticationError`."""
        header = _header(token)
        alg = self._check_algorithm(header.get("alg"))
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationError(AuthErrorCode.MALFORMED_TOKEN, "the token's 'kid' header must be a string")
        usable = [k for k in self._keys.candidates(kid) if _fits(k, alg)]
        if not usable:
            raise AuthenticationError(
                AuthErrorCode.ALGORITHM_NOT_ALLOWED,
                f"the token says it is signed with {alg}, but the issuer's key"
                f"{'' if kid is None else ' ' + _show(kid)} is not a {alg} key; get a genuine token from the "
                f"identity provider",
            )
        claims = self._decode(token, alg, usable)
        return self._principal(claims)

    # -- steps --

    def _check_algorithm(self, alg: Any) -> str:
        allowed = ", ".join(self._identity.algorithms)
        if not isinstance(alg, str) or not alg:
            raise AuthenticationError(AuthErrorCode.MALFORMED_TOKEN, "the token header has no 'alg'; send a signed JWT")
        if alg.lower() == "none":
            raise AuthenticationError(
                AuthErrorCode.ALGORITHM_NOT_ALLOWED,
                f"unsigned tokens (alg 'none') are never accepted; send a token signed by the identity "
                f"provider with one of: {allowed}",
            )
        if alg.upper().startswith("HS"):
            raise AuthenticationError(
                AuthErrorCode.ALGORITHM_NOT_ALLOWED,
                f"HMAC-signed tokens ({_show(alg)}) are never accepted: only the identity provider's "
                f"asymmetric signatures are trusted; send a token signed with one of: {allowed}",
            )
        if alg not in self._identity.algorithms:
            raise AuthenticationError(
                AuthErrorCode.ALGORITHM_NOT_ALLOWED,
                f"tokens signed with {_show(alg)} are not accepted here; send a token signed with one of: {allowed}",
            )
        return alg

    def _decode(self, token: str, alg: str, keys: list[_Key]) -> dict[str, Any]:
        require = ["exp", "iss", "aud"]
        if self._identity.subject_claim == "sub":
            require.append("sub")
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=self._audience,
                    issuer=self._identity.issuer,
                    leeway=self._leeway_s,
                    options={"require": require},
                )
            except jwt.InvalidSignatureError:
                continue  # without a kid several keys may be candidates; try the next one
            except jwt.PyJWTError as exc:
                raise self._refusal(exc) from None
        raise AuthenticationError(
            AuthErrorCode.BAD_SIGNATURE,
            f"the token's signature does not verify with the keys of {self._identity.issuer}: it was altered "
            f"or not issued there; get a fresh token from the identity provider",
        )

    def _refusal(self, exc: jwt.PyJWTError) -> AuthenticationError:
        issuer = self._identity.issuer
        if isinstance(exc, jwt.ExpiredSignatureError):
            return AuthenticationError(AuthErrorCode.TOKEN_EXPIRED,
                                       f"the token has expired; get a fresh one from {issuer} and retry")
        if isinstance(exc, jwt.ImmatureSignatureError):
            return AuthenticationError(
                AuthErrorCode.TOKEN_NOT_YET_VALID,
                "the token is not valid yet (its nbf or iat lies in the future); retry shortly, or check the "
                "clocks of the identity provider and this gateway",
            )
        if isinstance(exc, jwt.InvalidIssuerError):
            return AuthenticationError(AuthErrorCode.WRONG_ISSUER,
                                       f"the token was issued by someone else; this gateway accepts tokens from {issuer}")
        if isinstance(exc, jwt.InvalidAudienceError):
            return AuthenticationError(
                AuthErrorCode.WRONG_AUDIENCE,
                f"the token is meant for another service; request a token for audience "
                f"{' or '.join(self._audience)}",
            )
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return AuthenticationError(AuthErrorCode.MISSING_CLAIM,
                                       f"the token lacks the required claim {exc.claim!r}; ask the identity "
                                       f"provider for a complete access token")
        if isinstance(exc, jwt.InvalidAlgorithmError):
            return AuthenticationError(AuthErrorCode.ALGORITHM_NOT_ALLOWED,
                                       "the token's algorithm is not accepted here")
        if isinstance(exc, jwt.InvalidSignatureError):
            return AuthenticationError(AuthErrorCode.BAD_SIGNATURE, "the token's signature does not verify")
        if isinstance(exc, jwt.DecodeError):
            return AuthenticationError(AuthErrorCode.MALFORMED_TOKEN,
                                       "the token's payload is not valid JSON; send the token exactly as issued")
        # InvalidIssuedAtError, InvalidSubjectError and kin: a claim of the wrong shape.
        return AuthenticationError(AuthErrorCode.INVALID_CLAIM,
                                   f"the token has an invalid claim ({type(exc).__name__}); get a fresh token")

    def _principal(self, claims: dict[str, Any]) -> Principal:
        sub_name = self._identity.subject_claim
        subject = _claim(claims, sub_name)
        if subject is _MISSING or subject is None:
            raise AuthenticationError(AuthErrorCode.MISSING_CLAIM,
                                      f"the token has no {sub_name!r} claim naming who it was issued to")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError(AuthErrorCode.INVALID_CLAIM, f"the token's {sub_name!r} claim must be a non-empty string")

        groups_name = self._identity.groups_claim
        raw = _claim(claims, groups_name)
        if raw is _MISSING or raw is None:
            groups: frozenset[str] = frozenset()
        elif isinstance(raw, str):
            groups = frozenset([raw]) if raw else frozenset()
        elif isinstance(raw, list) and all(isinstance(g, str) for g in raw):
            groups = frozenset(g for g in raw if g)
        else:
            # Fail closed and loudly: guessing at an odd shape could grant or hide a group.
            raise AuthenticationError(
                AuthErrorCode.INVALID_CLAIM,
                f"the token's {groups_name!r} claim must be a string or a list of strings; the operator "
                f"may need to point identity.groups_claim at the right claim",
            )
        return Principal(subject=subject, groups=groups, claims=MappingProxyType(claims), auth_method=AuthMethod.JWT)


def _resolve(path: str, base_dir: Path | str | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


def _header(token: object) -> dict[str, Any]:
    """The token's JOSE header, after cheap shape checks that keep junk away from the decoders."""
    malformed = AuthenticationError(
        AuthErrorCode.MALFORMED_TOKEN,
        "the bearer token is not a JWT (three base64url parts separated by dots); send the access token "
        "exactly as the identity provider issued it, without quotes or a 'Bearer ' prefix",
    )
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise malformed
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1] or not all(_SEGMENT.match(p) for p in parts):
        raise malformed
    try:
        header = jwt.get_unverified_header(token)
    except Exception:  # any decoder failure on untrusted input is the same answer
        raise malformed from None
    if not isinstance(header, dict):
        raise malformed
    return header


__all__ = [
    "MAX_TOKEN_CHARS", "AuthErrorCode", "AuthenticationError", "KeySourceError", "Principal", "TokenVerifier",
]
