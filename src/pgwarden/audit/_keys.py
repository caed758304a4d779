"""The Ed25519 key that signs journal checkpoints: loaded, or generated (mode 0600) when missing."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_FILE = "journal.pub"


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, expected an Ed25519 private key")
    return key


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def export_public_key(directory: Path, public_key: Ed25519PublicKey) -> None:
    """Write ``journal.pub``; a different key already there is kept as ``journal.<key id>.pub``."""
    path = directory / PUBLIC_KEY_FILE
    pem = public_pem(public_key)
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = None
    if old == pem:
        return
    if old is not None:
        try:
            previous = load_public_key(old)
            path.replace(directory / f"journal.{key_id(previous).split(':', 1)[1]}.pub")
        except ValueError:
            pass
    tmp = path.with_suffix(".pub.tmp")
    tmp.write_bytes(pem)
    tmp.replace(path)


def load_public_key(data: bytes | str | Path | Ed25519PublicKey) -> Ed25519PublicKey:
    if isinstance(data, Ed25519PublicKey):
        return data
    if isinstance(data, Path):
        data = data.read_bytes()
    if isinstance(data, str):
        data = data.encode()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("expected an Ed25519 public key")
    return key


def public_keys_in(directory: Path) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(directory.glob("journal*.pub")):
        try:
            key = load_public_key(path)
        except (ValueError, OSError):
            continue
        keys[key_id(key)] = key
    return keys


def keys_by_id(keys: Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    return {key_id(k): k for k in keys}


def sign(private_key: Ed25519PrivateKey, payload: bytes) -> str:
    return base64.b64encode(private_key.sign(payload)).decode()


def signature_ok(public_key: Ed25519PublicKey, payload: bytes, signature: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature, validate=True), payload)
    except (InvalidSignature, ValueError):
        return False
    return True
