from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.cases import load_public_cases
from support.wire import Keys, RunningProxy, config_data


@pytest.fixture(scope="module")
def wire_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pgw-wire-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def keys(wire_dir: Path) -> Keys:
    return Keys(wire_dir)


class TlsFiles:
    """A throwaway self-signed certificate for localhost / 127.0.0.1 (and any extra address), as files."""

    def __init__(self, directory: Path, name: str = "server", addresses: tuple[str, ...] = ()) -> None:
        import datetime
        import ipaddress

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.UTC)
        alt = [x509.DNSName("localhost"), *(x509.IPAddress(ipaddress.ip_address(a))
                                           for a in ("127.0.0.1", *addresses))]
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        self.cert = directory / f"{name}.crt"
        self.key = directory / f"{name}.key"
        self.cert.write_bytes(self.cert_pem)
        self.key.write_bytes(self.key_pem)
        self.key.chmod(0o600)


@pytest.fixture(scope="module")
def make_tls(wire_dir: Path):
    """``make_tls(name)``: another throwaway certificate and key (tests import no conftest by name)."""
    return lambda name: TlsFiles(wire_dir, name)


@pytest.fixture(scope="module")
def tls_files(wire_dir: Path) -> TlsFiles:
    return TlsFiles(wire_dir, addresses=tuple(a for a in [non_loopback_address()] if a))


@pytest.fixture(scope="module")
def non_loopback() -> str | None:
    """An address of this machine off loopback, or None: a client connecting to it arrives from it."""
    return non_loopback_address()


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (connecting to it from here comes from it)."""
    import socket

    candidates: list[str] = []
    with contextlib.suppress(OSError):
        candidates += [a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
        s.connect(("10.255.255.255", 9))  # no packet is sent: this only picks the outgoing interface
        candidates.append(s.getsockname()[0])
    for address in candidates:
        if not address.startswith("127.") and address != "0.0.0.0":
            with socket.socket() as probe, contextlib.suppress(OSError):
                probe.bind((address, 0))
                return address
    return None


@pytest.fixture(scope="module")
def cases_db_module(make_db_module) -> str:
    return make_db_module(load_public_cases().fixture_sql + "\nANALYZE;")


@pytest.fixture(scope="module")
def proxy(cases_db_module: str, wire_dir: Path, keys: Keys) -> Iterator[RunningProxy]:
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    p = RunningProxy(config_data(cases_db_module, wire_dir, keys,
                                 proxy={"approval_notice_interval": 200, "max_message_size": 1 << 20}), wire_dir)
    yield p
    p.close()
