"""Reading the secrets a configuration refers to: environment variables or files.

The configuration never holds a secret, only a :class:`~pgwarden.policy.language.SecretRef`
saying where one lives; this module is the one place that follows such a reference,
and it does so late (when a connection or a mask key is first needed), so that
``pgwarden config check`` works on a machine that has none of the secrets. Errors
name the variable or the file, never the value, and carry a stable ``code``. A
secret file readable by every user is accepted with a logged warning rather than
refused, because common secret mounts (Kubernetes' default ``0644``) look like
that and refusing them would push people towards inline secrets instead.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from pgwarden.policy.language import SecretRef

log = logging.getLogger("pgwarden.secrets")


class SecretError(Exception):
    """A secret reference could not be followed. ``code`` is stable; the message says what to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _describe(ref: SecretRef) -> str:
    return f"environment variable {ref.env}" if ref.env is not None else f"file {ref.file}"


def _strip_newline(data: bytes) -> bytes:
    # Only one trailing line ending: editors add it, but a key may legitimately end in whitespace.
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def resolve_secret_bytes(ref: SecretRef, *, base_dir: Path | str | None = None) -> bytes:
    """The secret ``ref`` points to, as bytes (for keys). Relative files are read from ``base_dir``."""
    if ref.env is not None:
        text = os.environ.get(ref.env)
        if text is None:
            raise SecretError(
                "secret_env_unset",
                f"environment variable {ref.env} is not set; export it in the gateway's environment "
                f"or point the configuration at a file with 'file:' instead",
            )
        if not text:
            raise SecretError("secret_empty", f"environment variable {ref.env} is set but empty; give it a value")
        # fsencode undoes the surrogateescape decoding, so non-UTF-8 bytes come back exactly.
        return os.fsencode(text)

    assert ref.file is not None  # SecretRef guarantees exactly one of env/file
    path = Path(ref.file).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise SecretError(
            "secret_file_missing",
            f"secret file {path} does not exist; create it or fix the path (relative paths are "
            f"read from the configuration file's folder)",
        ) from None
    except IsADirectoryError:
        raise SecretError("secret_file_unreadable", f"secret file {path} is a directory; point at a file") from None
    except OSError as exc:
        raise SecretError(
            "secret_file_unreadable",
            f"secret file {path} cannot be read ({exc.strerror}); check its permissions for the gateway's user",
        ) from None
    if st.st_mode & stat.S_IROTH:
        log.warning("secret file %s is readable by every user; consider chmod 600", path)
    data = _strip_newline(data)
    if not data:
        raise SecretError("secret_empty", f"secret file {path} is empty; write the secret into it")
    return data


def resolve_secret(ref: SecretRef, *, base_dir: Path | str | None = None) -> str:
    """The secret ``ref`` points to, as text (for passwords). See :func:`resolve_secret_bytes`."""
    data = resolve_secret_bytes(ref, base_dir=base_dir)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(
            "secret_not_text", f"the secret in {_describe(ref)} is not UTF-8 text; a password must be text"
        ) from None


__all__ = ["SecretError", "resolve_secret", "resolve_secret_bytes"]
