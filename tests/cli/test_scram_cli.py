"""``pgwarden scram-verifier``: a verifier the wire proxy accepts, from a password on stdin only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import subprocess
import sys
from pathlib import Path

EXE = str(Path(sys.executable).with_name("pgwarden"))


def test_the_verifier_is_pg_authid_shaped_and_proves_the_password() -> None:
    out = subprocess.run([EXE, "scram-verifier"], input="s3cret-service\n", capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    verifier = out.stdout.strip()
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier)
    assert m and int(m.group(1)) == 4096
    salt, stored = base64.b64decode(m.group(2)), base64.b64decode(m.group(3))
    salted = hashlib.pbkdf2_hmac("sha256", b"s3cret-service", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert hashlib.sha256(client_key).digest() == stored  # RFC 5802: StoredKey = H(ClientKey)
    assert "s3cret-service" not in out.stdout + out.stderr


def test_an_empty_password_is_refused() -> None:
    out = subprocess.run([EXE, "scram-verifier"], input="\n", capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "empty password" in out.stderr
