"""The proxy's own upstream connection: open a socket to the target, TLS per ``sslmode``, send the pinned
StartupMessage, authenticate (trust, cleartext, MD5, SCRAM-SHA-256 with ``scramp``; SCRAM-SHA-256-PLUS bound
to the server's certificate under TLS), and collect the ParameterStatus and BackendKeyData the server sends
before its first ReadyForQuery. The DSN's ``sslmode``, ``sslrootcert``, ``channel_binding`` and
``require_auth`` mean what they mean to libpq; a value the proxy does not know is refused, never ignored.

The gateway's credential never reaches the client: authentication ends here, and the client saw only its
own exchange with the proxy. The start-up parameters come from :func:`pgwarden.engine.upstream.
startup_parameters` (what the policy pins) plus the client's allow-listed presentation settings; the server's
reported ``client_encoding`` and ``standard_conforming_strings`` are checked afterwards, as the psycopg door
checks them, and a server that reads text differently is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from dataclasses import dataclass, field

from psycopg.conninfo import conninfo_to_dict

from . import messages as m
from .codec import FrameReader, decode_backend, encode
from .errors import ProtocolViolation

__all__ = ["UpstreamConnection", "UpstreamFailed", "UpstreamTarget", "connect_upstream", "send_cancel"]


class UpstreamFailed(Exception):
    """The target could not be reached, refused the gateway's login, or reads text another way."""

    def __init__(self, message: str, sqlstate: str = "08006") -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where and as whom to connect (from a target's DSN and the rule's login)."""

    host: str
    port: int
    user: str
    database: str
    password: str | None = None
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    connect_timeout: float = 10.0
    channel_binding: str = "prefer"  # as libpq: SCRAM-SHA-256-PLUS under TLS when offered; require: nothing else
    require_auth: str | None = None  # as libpq: the authentication methods the server may ask for

    @classmethod
    def from_dsn(cls, dsn: str, *, user: str | None = None, password: str | None = None,
                 connect_timeout: float = 10.0) -> UpstreamTarget:
        info = conninfo_to_dict(dsn)
        sslmode = str(info.get("sslmode") or "prefer")
        if sslmode not in _SSLMODES:  # libpq refuses these too; read as 'prefer' they would drop TLS quietly
            raise UpstreamFailed(f"the target's sslmode={sslmode!r} is not one of {', '.join(_SSLMODES)}")
        channel_binding = str(info.get("channel_binding") or "prefer")
        if channel_binding not in ("disable", "prefer", "require"):
            raise UpstreamFailed(f"the target's channel_binding={channel_binding!r} is not disable, prefer or require")
        host = str(info.get("host") or "/var/run/postgresql").split(",")[0]
        port = int(str(info.get("port") or 5432).split(",")[0])
        return cls(host=host, port=port, user=user or str(info.get("user") or "postgres"),
                   database=str(info.get("dbname") or info.get("user") or "postgres"),
                   password=password if password is not None else info.get("password"),
                   sslmode=sslmode, sslrootcert=info.get("sslrootcert"), connect_timeout=connect_timeout,
                   channel_binding=channel_binding, require_auth=info.get("require_auth") or None)

    @property
    def unix(self) -> bool:
        return self.host.startswith("/")


@dataclass
class UpstreamConnection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    target: UpstreamTarget
    parameters: dict[str, str] = field(default_factory=dict)
    key: m.BackendKeyData | None = None
    status: bytes = b"I"
    leftover: bytes = b""  # bytes read after the first ReadyForQuery (none in practice)

    def close(self) -> None:
        """Close; abort when bytes are still queued for a server that does not read them (it waits to write
        to us: a graceful close would wait for it forever, and keep its backend)."""
        with contextlib.suppress(Exception):
            transport = self.writer.transport
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                self.writer.close()


async def _open(target: UpstreamTarget) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    limit = 1 << 20
    if target.unix:
        path = f"{target.host.rstrip('/')}/.s.PGSQL.{target.port}"
        return await asyncio.open_unix_connection(path, limit=limit)
    reader, writer = await asyncio.open_connection(target.host, target.port, limit=limit)
    _nodelay(writer)
    return reader, writer


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_AUTH_METHODS = {3: "password", 5: "md5", 10: "scram-sha-256", 0: "none"}


def _check_auth(target: UpstreamTarget, method: str) -> None:
    """libpq's ``require_auth``: a list of methods the server may use, or of ``!method`` it may not."""
    if not target.require_auth:
        return
    items = [x.strip() for x in target.require_auth.split(",") if x.strip()]
    negated = all(x.startswith("!") for x in items)
    allowed = method not in {x[1:] for x in items} if negated else method in items
    if not allowed:
        raise UpstreamFailed(f"the target asked for authentication method {method!r}, which the target's "
                             f"require_auth={target.require_auth} does not allow", "28000")


def _end_point_hash(writer: asyncio.StreamWriter) -> bytes | None:
    """RFC 5929 tls-server-end-point: the server certificate's hash (SHA-256 unless it signs with a stronger
    one; MD5 and SHA-1 become SHA-256)."""
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    from cryptography import x509

    algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
    name = algorithm.name if algorithm is not None else "sha256"
    return hashlib.new(name if name in ("sha384", "sha512") else "sha256", der).digest()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        import socket

        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _ssl_context(target: UpstreamTarget) -> ssl.SSLContext:
    # As libpq: sslrootcert=system means the system's CAs and verify-full; with a root certificate file
    # given, require checks the chain as verify-ca does.
    system = target.sslrootcert == "system"
    if system or target.sslmode in ("verify-ca", "verify-full") or (target.sslmode == "require" and target.sslrootcert):
        ctx = ssl.create_default_context(cafile=None if system else target.sslrootcert)
        ctx.check_hostname = system or target.sslmode == "verify-full"
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _negotiate_tls(target: UpstreamTarget, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
    if target.unix or target.sslmode in ("disable", "allow"):
        return
    writer.write(encode(m.SSLRequest()))
    await writer.drain()
    answer = await reader.readexactly(1)
    if answer == b"S":
        await writer.start_tls(_ssl_context(target), server_hostname=target.host)
    elif answer == b"N":
        if target.sslmode in ("require", "verify-ca", "verify-full"):
            raise UpstreamFailed(f"the target refused TLS, which its sslmode={target.sslmode} requires")
    else:
        raise UpstreamFailed("the target answered the TLS request with something other than S or N")


async def connect_upstream(target: UpstreamTarget, params: dict[str, str]) -> UpstreamConnection:
    """Connect, authenticate and read up to the first ReadyForQuery (raises :class:`UpstreamFailed`)."""
    try:
        async with asyncio.timeout(target.connect_timeout):
            reader, writer = await _open(target)
            try:
                conn = UpstreamConnection(reader, writer, target)
                await _negotiate_tls(target, reader, writer)
                await _startup(conn, params)
            except BaseException:
                with contextlib.suppress(Exception):
                    writer.close()
                raise
    except TimeoutError:
        raise UpstreamFailed(f"no answer from {target.host}:{target.port} within {target.connect_timeout:g} s")\
            from None
    except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
        raise UpstreamFailed(f"could not connect to the target: {exc or type(exc).__name__}") from None
    except ProtocolViolation as exc:
        raise UpstreamFailed(f"the target spoke an unexpected protocol: {exc}") from None
    for name, expected in (("client_encoding", "UTF8"), ("standard_conforming_strings", "on")):
        if conn.parameters.get(name) != expected:
            conn.close()
            raise UpstreamFailed(
                f"the target reports {name}={conn.parameters.get(name)!r} where the gateway pinned {expected!r}; "
                f"it would read statements differently from the gateway's analysis (ALTER ROLE/DATABASE … RESET "
                f"{name})")
    return conn


async def _startup(conn: UpstreamConnection, params: dict[str, str]) -> None:
    target = conn.target
    startup = {"user": target.user, "database": target.database, **params}
    conn.writer.write(encode(m.StartupMessage(startup)))
    await conn.writer.drain()
    frames = FrameReader(1 << 24)
    scram = None
    authenticated = False
    while True:
        data = await conn.reader.read(65536)
        if not data:
            raise UpstreamFailed("the target closed the connection during start-up")
        frames.feed(data)
        for kind, payload in frames:
            msg = decode_backend(kind, payload)
            if isinstance(msg, m.ErrorResponse):
                raise UpstreamFailed(f"the target refused the gateway's login: {msg.message}",
                                     msg.sqlstate or "08006")
            if isinstance(msg, m.AuthenticationOk):
                if scram is None:  # trust, or a password method: no channel binding happened
                    if target.channel_binding == "require":
                        raise UpstreamFailed("the target let the gateway in without SCRAM-SHA-256-PLUS, which its "
                                             "channel_binding=require requires", "28000")
                    if not authenticated:
                        _check_auth(target, "none")
                authenticated = True
                continue
            if isinstance(msg, m.AuthenticationCleartextPassword | m.AuthenticationMD5Password):
                _check_auth(target, "password" if isinstance(msg, m.AuthenticationCleartextPassword) else "md5")
                if target.channel_binding == "require":
                    raise UpstreamFailed("the target asks for a password method, and its channel_binding=require "
                                         "needs SCRAM-SHA-256-PLUS", "28000")
                authenticated = True
            if isinstance(msg, m.AuthenticationCleartextPassword):
                conn.writer.write(encode(m.PasswordMessage(_password(target).encode() + b"\0")))
            elif isinstance(msg, m.AuthenticationMD5Password):
                password = _password(target)
                inner = hashlib.md5((password + target.user).encode()).hexdigest()
                outer = "md5" + hashlib.md5(inner.encode() + msg.salt).hexdigest()
                conn.writer.write(encode(m.PasswordMessage(outer.encode() + b"\0")))
            elif isinstance(msg, m.AuthenticationSASL):
                from scramp import ScramClient

                _check_auth(target, "scram-sha-256")
                binding = _end_point_hash(conn.writer) if target.channel_binding != "disable" else None
                if binding is not None and "SCRAM-SHA-256-PLUS" in msg.mechanisms:
                    mechanism = "SCRAM-SHA-256-PLUS"
                elif target.channel_binding == "require":
                    raise UpstreamFailed("the target offers no SCRAM-SHA-256-PLUS (over TLS), which its "
                                         "channel_binding=require requires", "28000")
                elif "SCRAM-SHA-256" in msg.mechanisms:
                    mechanism = "SCRAM-SHA-256"
                else:
                    raise UpstreamFailed(f"the target offers SASL mechanisms {msg.mechanisms} only")
                # 'y' when TLS could bind but the server offered no PLUS (a stripped offer is then detected)
                scram = ScramClient([mechanism], target.user, _password(target),
                                    channel_binding=("tls-server-end-point", binding) if binding else None)
                first = scram.get_client_first().encode()
                conn.writer.write(encode(m.SASLInitialResponse(mechanism, first)))
            elif isinstance(msg, m.AuthenticationSASLContinue):
                if scram is None:
                    raise UpstreamFailed("SASL continue without a SASL exchange")
                scram.set_server_first(msg.data.decode())
                conn.writer.write(encode(m.SASLResponse(scram.get_client_final().encode())))
            elif isinstance(msg, m.AuthenticationSASLFinal):
                if scram is None:
                    raise UpstreamFailed("SASL final without a SASL exchange")
                try:
                    scram.set_server_final(msg.data.decode())
                except Exception as exc:
                    raise UpstreamFailed(f"the target's SCRAM signature is wrong: {exc}") from None
            elif isinstance(msg, m.ParameterStatus):
                conn.parameters[msg.name] = msg.value
            elif isinstance(msg, m.BackendKeyData):
                conn.key = msg
            elif isinstance(msg, m.NegotiateProtocolVersion | m.NoticeResponse):
                continue
            elif isinstance(msg, m.ReadyForQuery):
                conn.status = msg.status
                rest = frames.next_frame()
                if rest is not None:
                    raise UpstreamFailed("the target sent messages after its first ReadyForQuery")
                return
            else:
                raise UpstreamFailed(f"the target asked for {type(msg).__name__}, which the gateway does not do")
        await conn.writer.drain()


def _password(target: UpstreamTarget) -> str:
    if target.password is None:
        raise UpstreamFailed("the target asks for a password and the gateway has none for this login "
                             "(set the target's or the rule's password)", "28P01")
    return target.password


async def send_cancel(target: UpstreamTarget, key: m.BackendKeyData, *, timeout: float = 5) -> bool:
    """Send a CancelRequest for ``key`` on a connection of its own (best effort, never raises). True when
    delivered: the server closed the cancel connection, which it does once it has signalled the backend."""
    delivered = False
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            reader, writer = await _open(target)
            try:
                writer.write(encode(m.CancelRequest(key.pid, key.key)))
                await writer.drain()
                with contextlib.suppress(ConnectionError):
                    await reader.read(1)
                delivered = True
            finally:
                writer.close()
    return delivered
