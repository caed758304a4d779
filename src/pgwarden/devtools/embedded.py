"""An embedded PostgreSQL for the test suite and ``make demo``.

We take the PostgreSQL 16 binaries that the ``pgserver`` wheel ships and drive
``initdb``/``pg_ctl`` ourselves, rather than calling ``pgserver.get_server()``,
because pgserver always starts the postmaster with ``-h ""`` (Unix socket only,
and a command-line option beats any ``listen_addresses`` in the config files)
and it hides the port from its URI. Driving ``pg_ctl`` directly lets us listen
on TCP 127.0.0.1 when asked (for tools or drivers that cannot use sockets), keep
the socket in a directory other users can reach, and adopt a server that an
earlier ``start()`` left running in the same directory. pgserver's helpers are
still used for the one delicate part, running as root: PostgreSQL refuses to run
as root, so (like pgserver) we run it as the system user ``pgserver``, created
on demand, and open up the binary tree and our directory for it. Authentication
is ``trust`` for everything, so this server is for tests and demos only, never
for real data; durability settings are off for speed (see ``FAST_SETTINGS``).
psql and pgbench reach it with ``-h <socket_dir> -p <port>`` or ``dsn()``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

SUPERUSER = "postgres"
DEFAULT_PORT = 5432  # with sockets only, the port just names the socket file .s.PGSQL.<port>
SERVER_OS_USER = "pgserver"  # the account pgserver itself uses when it is started by root

# Test and demo data is disposable; these make CREATE DATABASE and the fixture setup several times faster.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS; keep a margin


@dataclass(frozen=True, slots=True)
class EmbeddedPostgres:
    """A running embedded server. ``tcp_host`` is None when it listens on its Unix socket only."""

    directory: Path
    pgdata: Path
    socket_dir: Path
    port: int
    tcp_host: str | None = None
    binaries: Path | None = None  # the PostgreSQL installation it runs from, when not pgserver's

    @property
    def bin_dir(self) -> Path:
        """Where psql, pgbench, pg_dump... of the same PostgreSQL version live."""
        return self.binaries or _bin_dir()

    @property
    def log_file(self) -> Path:
        return self.pgdata / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URI over the Unix socket, e.g. ``postgresql://postgres@/postgres?host=/tmp/x/socket&port=5432``."""
        return f"postgresql://{SUPERUSER}@/{quote(dbname, safe='')}?host={quote(str(self.socket_dir), safe='/')}&port={self.port}"

    def tcp_dsn(self, dbname: str = "postgres") -> str | None:
        if self.tcp_host is None:
            return None
        return f"postgresql://{SUPERUSER}@{self.tcp_host}:{self.port}/{quote(dbname, safe='')}"

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are disconnected). Safe to call twice."""
        stop_embedded(self.directory, bin_dir=self.binaries)


def start_embedded(directory: str | os.PathLike[str], *, tcp_port: int | None = None,
                   settings: Mapping[str, str] = FAST_SETTINGS, timeout: int = 60, hba: str | None = None,
                   tls: tuple[bytes, bytes] | None = None,
                   bin_dir: str | os.PathLike[str] | None = None) -> EmbeddedPostgres:
    """Initialise (first time) and start PostgreSQL under ``directory``; return the running server.

    ``directory`` must exist or its parent must; the cluster lives in ``directory/data`` and the
    socket in ``directory/socket``. ``tcp_port=None`` listens on the socket only; ``0`` also listens
    on 127.0.0.1 on a free port; any other number on that port. If a server from an earlier call is
    still running there it is adopted, provided it matches the requested TCP setting.

    ``hba``: the text of ``pg_hba.conf`` to use instead of initdb's ``trust`` for everything (written
    before each start). ``tls``: a PEM certificate and its PEM private key; the server then runs with
    ``ssl=on`` and that pair (``server.crt``/``server.key`` in the data directory); pgserver's build has no
    TLS, so pass ``bin_dir`` of a PostgreSQL built with OpenSSL (Debian's ``/usr/lib/postgresql/15/bin``).
    ``bin_dir``: run that installation's ``initdb``/``pg_ctl`` instead of pgserver's.
    """
    binaries = Path(bin_dir) if bin_dir is not None else None
    initdb, pg_ctl = _command("initdb", binaries), _command("pg_ctl", binaries)
    directory = Path(directory).resolve()
    directory.mkdir(exist_ok=True)
    pgdata = directory / "data"
    os_user = _prepare_for_os_user(directory)

    running = _running(pgdata)
    if running is not None:
        if tcp_port is not None and (running.tcp_host is None or tcp_port not in (0, running.port)):
            raise RuntimeError(f"PostgreSQL already runs in {pgdata} without the requested TCP port {tcp_port}; "
                               "stop it first")
        return running

    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(exist_ok=True)
        _give(pgdata, os_user, 0o700)
        # C locale and UTF8: identical sorting on every machine, and no dependence on installed locales.
        initdb(["--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions",
                         "-U", SUPERUSER], pgdata=pgdata, user=os_user, cwd=directory, timeout=timeout)

    if hba is not None:
        _write_owned(pgdata / "pg_hba.conf", hba.encode(), os_user)
    if tls is not None:
        _write_owned(pgdata / "server.crt", tls[0], os_user)
        _write_owned(pgdata / "server.key", tls[1], os_user)
        settings = {**settings, "ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"}

    socket_dir = directory / "socket"
    if len(str(socket_dir / ".s.PGSQL.65535.lock")) > _SOCKET_PATH_MAX:
        socket_dir = Path(tempfile.mkdtemp(prefix="pgw-"))
    socket_dir.mkdir(exist_ok=True)
    _give(socket_dir, os_user, 0o755)  # clients need only search permission; the socket itself is 0777

    tcp_host = "127.0.0.1" if tcp_port is not None else None
    port = (tcp_port or _free_port(tcp_host)) if tcp_host else DEFAULT_PORT
    options = ["-h", tcp_host or "", "-p", str(port), "-k", str(socket_dir)]
    for name, value in settings.items():
        options += ["-c", f"{name}={value}"]
    # pg_ctl hands -o to /bin/sh, hence the quoting.
    pg_ctl(["-w", "-t", str(timeout), "-l", str(pgdata / "server.log"),
                     "-o", shlex.join(options), "start"],
                    pgdata=pgdata, user=os_user, cwd=directory, timeout=timeout + 10)
    return EmbeddedPostgres(directory=directory, pgdata=pgdata, socket_dir=socket_dir, port=port, tcp_host=tcp_host,
                            binaries=binaries)


def stop_embedded(directory: str | os.PathLike[str], *, bin_dir: str | os.PathLike[str] | None = None) -> None:
    """Stop the server that ``start_embedded(directory)`` started, if it runs; keep its data.

    Raises ``subprocess.CalledProcessError`` if pg_ctl fails.
    """
    pg_ctl = _command("pg_ctl", Path(bin_dir) if bin_dir is not None else None)
    pgdata = Path(directory).resolve() / "data"
    running = _running(pgdata)
    if running is None:
        return
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_os_user(), cwd=pgdata.parent, timeout=70)
    except subprocess.CalledProcessError:
        # A Ctrl-C at a terminal reaches the server too (same process group): it may have shut down on its
        # own between the check above and pg_ctl, which then finds no server. Stopped is what was asked.
        if _alive(pgdata):
            raise
    if running.socket_dir != pgdata.parent / "socket":  # the short fallback made by start_embedded()
        shutil.rmtree(running.socket_dir, ignore_errors=True)


def _alive(pgdata: Path) -> bool:
    """A postmaster of ``pgdata`` still runs (its pid file names a live process), ready or not."""
    for _ in range(50):
        try:
            pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        time.sleep(0.1)  # shutting down: give it a moment to finish
    return True


def _running(pgdata: Path) -> EmbeddedPostgres | None:
    """The server described by ``postmaster.pid``, if that process is alive and ready."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    # postmaster.pid: pid, data dir, start time, port, first socket dir, first listen address, shm key, status
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    try:
        os.kill(int(lines[0]), 0)
    except (ProcessLookupError, ValueError):
        return None
    except PermissionError:
        pass  # alive, just someone else's
    return EmbeddedPostgres(directory=pgdata.parent, pgdata=pgdata, socket_dir=Path(lines[4].strip()),
                            port=int(lines[3]), tcp_host=lines[5].strip() or None)


def _pgserver() -> ModuleType:
    # Optional dependency: only the test suite and `make demo` need it. Importing it computes a runtime dir
    # for a lock we never take, which warns when XDG_RUNTIME_DIR is unset (as under root in CI).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def _command(name: str, bin_dir: Path | None):
    """pgserver's runner of ``name`` (``-D pgdata`` first, output to temporary files), or the same for the
    binary of that name in ``bin_dir``."""
    if bin_dir is None:
        return getattr(_pgserver(), name)
    exe = str(bin_dir / name)

    def run(args: list[str], pgdata: Path, **kwargs) -> str:
        # temporary files, not pipes: pg_ctl's server keeps inherited pipes open (as pgserver notes)
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                subprocess.run([exe, "-D", str(pgdata), *args], check=True, stdout=out, stderr=err, text=True,
                               **kwargs)
            except subprocess.CalledProcessError as exc:
                err.seek(0)
                exc.stderr = err.read()
                raise
            out.seek(0)
            return out.read()

    return run


def _bin_dir() -> Path:
    return Path(_pgserver()._commands.POSTGRES_BIN_PATH)


def _os_user() -> str | None:
    return SERVER_OS_USER if os.geteuid() == 0 else None


def _prepare_for_os_user(directory: Path) -> str | None:
    """As root, make sure the unprivileged server account exists and can reach the binaries and ``directory``."""
    user = _os_user()
    if user is None:
        return None
    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(user)
    bin_dir = _bin_dir()
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_dir.parent / "lib", readable)
    ensure_prefix_permissions(directory)
    directory.chmod(directory.stat().st_mode | 0o055)  # mkdtemp makes 0700; the server must traverse it
    return user


def _give(path: Path, os_user: str | None, mode: int) -> None:
    if os_user is not None:
        shutil.chown(path, os_user, os_user)
    path.chmod(mode)


def _write_owned(path: Path, data: bytes, os_user: str | None) -> None:
    # 0600 and owned by the server's account: PostgreSQL refuses a private key anyone else can read.
    path.write_bytes(data)
    _give(path, os_user, 0o600)


def _free_port(host: str) -> int:
    # Racy by nature (another process could take it before the postmaster binds); fine for tests and demos.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def main() -> None:  # pragma: no cover - convenience for humans: python -m pgwarden.devtools.embedded DIR [start|stop]
    import sys

    directory = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="pgwarden-pg-"))
    if len(sys.argv) > 2 and sys.argv[2] == "stop":
        stop_embedded(directory)
        return
    server = start_embedded(directory)
    print(server.dsn())


if __name__ == "__main__":  # pragma: no cover
    main()
