"""The asyncio server of the wire door: accept, start-up and authentication, then move bytes.

Per client: peek the first byte (0x16 → direct TLS with ALPN ``postgresql``), read start-up packets
(SSLRequest → ``S`` and TLS when a certificate is configured, else ``N``; GSSENCRequest → ``N``;
CancelRequest → looked up in the cancel registry and sent to the right upstream backend with the upstream's
own key), negotiate the protocol version, authenticate (the JWT as a cleartext password, refused off
loopback without TLS; or a configured SCRAM-SHA-256 service user, SCRAM-SHA-256-PLUS first under TLS), check
limits (connections starting up are capped too), open the pinned upstream
connection and relay ParameterStatus, the proxy's own BackendKeyData (only if upstream sent one) and
ReadyForQuery. Then :class:`~pgwarden.wire_proxy._relay.Relay` moves bytes through
:class:`~pgwarden.wire_proxy.connection.ProxyConnection` from transport callbacks; a side whose transport
stops taking bytes pauses the other side's reading (backpressure both ways, flat memory). Protocol
violations end that one session with FATAL 08P01.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pgwarden.audit.digest import ResultDigest
from pgwarden.audit.journal import JournalUnavailable
from pgwarden.engine.config import ProxySettings
from pgwarden.engine.errors import GatewayError, StatementRefused
from pgwarden.engine.identity import AuthenticationError
from pgwarden.engine.principal import AuthMethod, Channel, Principal
from pgwarden.engine.runtime import Runtime
from pgwarden.engine.session import Session
from pgwarden.engine.upstream import pinned_gucs, startup_parameters
from pgwarden.policy.results import ColumnInfo, ResultScreen, screen_error_fields
from pgwarden.policy.verdict import PinnedSettings, StatementPlan, Verdict

from . import messages as m
from ._relay import Relay
from ._startup import filter_startup_params, negotiate_startup, new_backend_key
from .codec import FrameReader, StartupReader, encode
from .connection import Hold, ProxyConnection
from .errors import ProtocolViolation
from .upstream_conn import UpstreamFailed, UpstreamTarget, connect_upstream, send_cancel

__all__ = ["ProxyServer", "serve"]

log = logging.getLogger("pgwarden.wire_proxy")

_READ = 1 << 18


class _Refused(Exception):
    def __init__(self, sqlstate: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.error = m.error("FATAL", sqlstate, message, hint=hint)


# --------------------------------------------------------------------------------------------------
# engine hooks


class _Record:
    # result / error / parameters are the statement record's own bound methods (one call, not two)
    __slots__ = ("_end", "error", "parameters", "result", "st")

    def __init__(self, recorder, audit, sql: str, verdict: Verdict) -> None:
        self.st = st = recorder.open_statement(audit, sql)
        st.decided_verdict(verdict)
        self.result = st.result
        self.error = st.error
        self.parameters = st.parameters
        self._end = recorder.end_statement

    def close(self) -> str | None:
        try:
            self._end(self.st)
        except JournalUnavailable as exc:
            return exc.message
        return None


class _NoRecord:
    __slots__ = ()

    def result(self, *args: Any) -> None:
        pass

    def error(self, *args: Any) -> None:
        pass

    def parameters(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        return None


_NO_RECORD = _NoRecord()


class EngineHooks:
    """The policy hooks of :class:`ProxyConnection` over the engine's Session (same verdicts, masks and
    audit as the psycopg door)."""

    def __init__(self, runtime: Runtime, session: Session, audit, *, digest: bool = True) -> None:
        self.runtime = runtime
        self.session = session
        self.gateway = session.gateway
        self.audit = audit
        self.recorder = runtime.recorder if audit is not None else None
        self.detector = self.gateway.detector
        self.sample_rows = runtime.recorder.settings.sample_rows if runtime.recorder is not None else 0
        self.digest = digest and self.recorder is not None
        self.wrap_reads = session.rule is not None and not session.rule.read_only()
        self._raw_masked = self.gateway.raw_masked(session.principal, session.target)
        self.screen_generation = 0  # ProxyConnection re-confirms cached screens when this changes

    def decide(self, sql: str) -> Verdict:
        return self.session.authorise(sql)

    def refusal(self, verdict: Verdict) -> m.ErrorResponse:
        exc = StatementRefused(verdict)
        rule = self.session.rule
        hint = None
        if rule is not None:
            allowed = ", ".join(sorted(str(getattr(s, "value", s)) for s in rule.statements.allow))
            hint = f"rule {rule.name!r} allows {allowed or 'no'} statements on target {self.session.target!r}"
        return m.error("ERROR", exc.sqlstate or "42501", f"pgwarden: {exc.message}", hint=hint)

    def screen(self, plan: StatementPlan | None, columns: Sequence[ColumnInfo]) -> ResultScreen:
        return ResultScreen.build(plan, columns, detector=self.detector, masker_for=self.gateway.masker,
                                  raw_masked=self._raw_masked)

    def screen_fields(self, fields: Mapping[str, str], *, scrub: bool, what: str) -> dict[str, str]:
        return screen_error_fields(fields, scrub=scrub, detector=self.detector, what=what)

    def apply_effects(self, verdict: Verdict, completed: int) -> None:
        effects = verdict.effects
        if not effects:
            return
        self.session.state.apply(effects, completed)
        if any(e.schema_changed and e.index < completed for e in effects):
            task = asyncio.get_running_loop().create_task(self._refresh())
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)

    async def _refresh(self) -> None:
        with contextlib.suppress(Exception):
            await self.gateway.refresh_catalog(self.session.target)
            self._raw_masked = self.gateway.raw_masked(self.session.principal, self.session.target)
        self.screen_generation += 1

    def open_record(self, sql: str, verdict: Verdict):
        if self.recorder is None:
            return _NO_RECORD
        return _Record(self.recorder, self.audit, sql, verdict)

    def new_digest(self, columns: Sequence[str]) -> ResultDigest:
        return ResultDigest(columns)


_TASKS: set[asyncio.Task] = set()


# --------------------------------------------------------------------------------------------------
# SCRAM service users


def _parse_verifier(text: str) -> tuple[bytes, bytes, bytes, int]:
    # SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>
    mech, rest = text.strip().split("$", 1)
    if mech != "SCRAM-SHA-256":
        raise ValueError("not a SCRAM-SHA-256 verifier")
    params, keys = rest.split("$", 1)
    iterations, salt = params.split(":", 1)
    stored, server = keys.split(":", 1)
    raw = [base64.b64decode(x, validate=True) for x in (salt, stored, server)]
    count = int(iterations)
    if not raw[0] or len(raw[1]) != 32 or len(raw[2]) != 32 or count < 1:
        raise ValueError("a SCRAM-SHA-256 verifier has a salt, 32-byte keys and a positive iteration count")
    return raw[0], raw[1], raw[2], count


def make_verifier(password: str, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier in pg_authid's form (for tests and ``service_users``)."""
    from scramp import ScramMechanism

    salt, stored, server, iters = ScramMechanism("SCRAM-SHA-256").make_auth_info(password, iteration_count=iterations)
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iters}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


def _set_client_first(server, text: str) -> None:
    """Give scramp the client-first message. libpq sends an empty user name (``n=,``: PostgreSQL takes the
    user from the start-up packet, RFC 5802 allows it), which scramp refuses; it is parsed with a placeholder
    name, and the signatures are then computed over the exact bytes the client sent, or its proof would
    never match."""
    head, sep, rest = text.partition(",")
    authzid, sep2, bare = rest.partition(",")
    if not (sep and sep2 and bare.startswith("n=,")):
        server.set_client_first(text)
        return
    server.set_client_first(f"{head},{authzid},n=pgwarden{bare[2:]}")
    server.client_first_bare = bare  # what the AuthMessage of RFC 5802 is built from (scramp's own attribute)


# --------------------------------------------------------------------------------------------------
# the server


@dataclasses.dataclass(eq=False)
class _Client:
    key: m.BackendKeyData
    upstream: UpstreamTarget | None = None
    upstream_key: m.BackendKeyData | None = None
    waiting: asyncio.Event | None = None  # set: withdraw the approval being waited for
    # set with ``waiting`` when the session ends under a held statement: why the request is withdrawn
    gone: str | None = None


class ProxyServer:
    def __init__(self, runtime: Runtime, settings: ProxySettings | None = None, *, host: str | None = None,
                 port: int | None = None, digest: bool = True) -> None:
        self.runtime = runtime
        self.settings = settings or runtime.config.proxy
        lhost, _, lport = self.settings.listen.rpartition(":")
        self.host = host or lhost.removeprefix("[").removesuffix("]")  # "[::]:6432" names an IPv6 host
        self.port = int(lport) if port is None else port
        self.digest = digest
        self._sock: socket.socket | None = None
        self._accept_task: asyncio.Task | None = None
        self._clients: set[asyncio.Task] = set()
        self._cancel: dict[int, _Client] = {}
        self._per_principal: dict[str, int] = {}
        self._count = 0
        self._starting = 0  # connections not yet admitted (in start-up or authentication)
        self._cert_pem: str | None = None  # the certificate's PEM, for SCRAM channel binding (tls-server-end-point)
        self._ssl = self._tls_context()
        for service in self.settings.service_users:
            self._service_verifier(service)  # a bad verifier stops the start, not each login

    def _tls_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not s.tls_cert:
            if s.tls_key:  # fail closed: a key alone means TLS was wanted
                raise GatewayError("proxy_tls", "proxy.tls_key is set without proxy.tls_cert; set both for TLS, "
                                   "or neither")
            return None
        base = self.runtime.config.base_dir
        cert = s.tls_cert if base is None or s.tls_cert.startswith("/") else str(base / s.tls_cert)
        key = s.tls_key and (s.tls_key if base is None or s.tls_key.startswith("/") else str(base / s.tls_key))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(cert, key)
            with open(cert, encoding="ascii") as f:
                self._cert_pem = f.read()  # the first CERTIFICATE block is the one presented (load_cert_chain)
        except (OSError, ValueError) as exc:
            raise GatewayError("proxy_tls", f"proxy.tls_cert {cert!r} / tls_key {key or cert!r} cannot be loaded "
                               f"as a PEM certificate and its private key: {exc}") from None
        ctx.set_alpn_protocols(["postgresql"])
        return ctx

    async def start(self) -> None:
        sock = socket.create_server((self.host, self.port), reuse_port=False, backlog=1024)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def serve_forever(self) -> None:
        if self._accept_task is None:
            await self.start()
        assert self._accept_task is not None
        await self._accept_task

    async def close(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(BaseException):
                await self._accept_task
        if self._sock is not None:
            self._sock.close()
        for task in list(self._clients):
            task.cancel()
        for task in list(self._clients):
            with contextlib.suppress(BaseException):
                await task

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            conn, addr = await loop.sock_accept(self._sock)
            task = loop.create_task(self._handle(conn, addr))
            self._clients.add(task)
            task.add_done_callback(self._clients.discard)

    # ---- one client ------------------------------------------------------------------------------

    async def _handle(self, sock: socket.socket, addr: Any) -> None:
        sock.setblocking(False)
        if self._starting >= self.settings.max_connections:
            # Connections still starting up are bounded too: each holds buffers until startup_timeout.
            with contextlib.suppress(OSError):
                sock.send(encode(m.error("FATAL", "53300", "pgwarden: too many connections starting up at once "
                                         "(max_connections)", hint="try again later")))
            sock.close()
            return
        self._starting += 1
        starting = [True]

        def admitted() -> None:
            if starting[0]:
                starting[0] = False
                self._starting -= 1

        try:
            await self._handle_started(sock, addr, admitted)
        finally:
            admitted()

    async def _handle_started(self, sock: socket.socket, addr: Any, admitted) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            first = await asyncio.wait_for(_peek(loop, sock), self.settings.startup_timeout / 1000)
        except TimeoutError:
            # Nothing arrived: say why in the clear (a client that sends nothing can read a plain ErrorResponse).
            with contextlib.suppress(OSError):
                sock.send(encode(m.error("FATAL", "08P01", "pgwarden: no start-up packet within the proxy's "
                                         "startup_timeout", hint="send a StartupMessage or SSLRequest after "
                                         "connecting")))
            sock.close()
            return
        except OSError:
            sock.close()
            return
        if not first:
            sock.close()
            return
        tls = first[0] == 0x16
        if tls and self._ssl is None:
            sock.close()  # a TLS handshake we cannot answer: nothing readable can be sent back
            return
        reader = asyncio.StreamReader(limit=_READ, loop=loop)
        ready: asyncio.Future = loop.create_future()

        def connected(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            if not ready.done():
                ready.set_result(w)

        protocol = asyncio.StreamReaderProtocol(reader, connected, loop=loop)
        try:
            await asyncio.wait_for(loop.connect_accepted_socket(lambda: protocol, sock,
                                                                ssl=self._ssl if tls else None),
                                   self.settings.startup_timeout / 1000)
            writer: asyncio.StreamWriter = await ready
        except Exception:
            sock.close()
            return
        if tls and (writer.get_extra_info("ssl_object").selected_alpn_protocol() != "postgresql"):
            # As PostgreSQL 17: direct TLS needs ALPN "postgresql" (no cross-protocol use of the port).
            with contextlib.suppress(Exception):
                writer.write(encode(m.error("FATAL", "08P01", "pgwarden: direct TLS connection without the ALPN "
                                            "protocol 'postgresql'", hint="use a PostgreSQL 17+ client with "
                                            "sslnegotiation=direct, or the SSLRequest (sslnegotiation=postgres)")))
                await asyncio.wait_for(writer.drain(), 1)
            writer.close()
            return
        client_address = addr[0] if isinstance(addr, tuple) else str(addr)
        try:
            await self._session(reader, writer, client_address, tls, admitted)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("wire session failed")
            with contextlib.suppress(Exception):  # fail closed, and say so without details
                writer.write(encode(m.error("FATAL", "XX000", "pgwarden: internal error; the session is closed",
                                            hint="the gateway's log has the details")))
                await asyncio.wait_for(writer.drain(), 1)
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_address: str,
                       tls: bool, admitted=lambda: None) -> None:
        settings = self.settings
        principal = None
        client: _Client | None = None
        upstream = None
        counted = False
        try:
            try:
                async with asyncio.timeout(settings.startup_timeout / 1000):
                    got = await self._startup(reader, writer, client_address, tls)
                    if got is None:
                        return
                    startup, negotiation, reader, writer, tls = got
                    principal, target_name, auth = await self._authenticate(reader, writer, startup, client_address,
                                                                            tls)
                    self._admit(principal)
                    counted = True
                    admitted()
                    session = Session(self.runtime.gateway, principal, target_name, Channel.WIRE)
                    if session.rule is None:
                        raise _Refused("28000", f"pgwarden: no rule grants {principal.subject!r} access to target "
                                       f"{target_name!r}")
                    pinned = self._pinned(session)
                    filtered = filter_startup_params(negotiation.params,
                                                     [*pinned_gucs(pinned), "application_name"])
                    # application_name is pinned to the principal: a client's own is dropped; any other pinned
                    # setting or setting outside the allow list ends the start-up.
                    bad = [r for r in filtered.refused
                           if not (r.code == "pinned" and r.name.lower() == "application_name")]
                    if bad:
                        raise _Refused("42501", f"pgwarden: {bad[0].reason}",
                                       "remove it from the connection's options; the gateway pins session settings")
                    upstream = await self._connect_upstream(session, pinned, filtered.forward)
            except TimeoutError:
                raise _Refused("08P01", "pgwarden: start-up took longer than the proxy's startup_timeout") from None
            key = new_backend_key(negotiation.version)
            client = _Client(key, upstream.target, upstream.key)
            self._cancel[key.pid] = client
            out = [encode(m.AuthenticationOk())]
            for name, value in upstream.parameters.items():
                out.append(encode(m.ParameterStatus(name, value)))
            if upstream.key is not None:
                out.append(encode(key))
            out.append(encode(m.ReadyForQuery(upstream.status)))
            writer.write(b"".join(out))
            await writer.drain()
            recorder = self.runtime.recorder
            audit = recorder.start_session(principal.subject, principal.groups, "wire", session.target,
                                           client_address, auth) if recorder is not None else None
            try:
                hooks = EngineHooks(self.runtime, session, audit, digest=self.digest)
                conn = ProxyConnection(hooks, status=upstream.status, max_message_size=settings.max_message_size)
                await self._relay(conn, hooks, client, reader, writer, upstream)
            finally:
                if audit is not None:
                    with contextlib.suppress(Exception):
                        audit.end()
        except _Refused as exc:
            with contextlib.suppress(Exception):
                writer.write(encode(exc.error))
                await writer.drain()
        except ProtocolViolation as exc:
            with contextlib.suppress(Exception):
                writer.write(encode(m.error_from(exc, "FATAL")))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if client is not None:
                self._cancel.pop(client.key.pid, None)
            if counted and principal is not None:
                self._count -= 1
                self._per_principal[principal.subject] -= 1
            if upstream is not None:
                upstream.close()

    def _admit(self, principal: Principal) -> None:
        s = self.settings
        if self._count >= s.max_connections:
            raise _Refused("53300", "pgwarden: too many connections to the proxy (max_connections)",
                           "try again later, close idle connections, or raise proxy.max_connections")
        if self._per_principal.get(principal.subject, 0) >= s.max_connections_per_principal:
            raise _Refused("53300", f"pgwarden: too many connections for {principal.subject!r}",
                           "close idle connections, or ask for a higher max_connections_per_principal")
        self._count += 1
        self._per_principal[principal.subject] = self._per_principal.get(principal.subject, 0) + 1

    async def _startup(self, reader, writer, client_address: str, tls: bool):
        startup_reader = StartupReader()
        while True:
            msg = startup_reader.next_message()
            if msg is None:
                data = await reader.read(8192)
                if not data:
                    return None
                startup_reader.feed(data)
                continue
            if isinstance(msg, m.SSLRequest | m.GSSENCRequest):
                if startup_reader.take_rest():
                    raise ProtocolViolation("bytes_before_tls", "received unencrypted data after SSL request")
                if isinstance(msg, m.SSLRequest) and self._ssl is not None and not tls:
                    writer.write(b"S")
                    await writer.drain()
                    try:
                        await writer.start_tls(self._ssl)
                    except (ssl.SSLError, OSError) as exc:
                        raise ConnectionError(f"TLS handshake failed: {exc}") from None
                    tls = True
                    startup_reader = StartupReader()
                else:
                    writer.write(b"N")
                    await writer.drain()
                continue
            if isinstance(msg, m.CancelRequest):
                await self._cancel_request(msg)
                return None
            if isinstance(msg, m.DirectTLS):
                raise ProtocolViolation("unexpected_tls", "a TLS handshake inside the start-up phase")
            if startup_reader.take_rest():
                raise ProtocolViolation("bytes_after_startup", "bytes after the start-up packet before authentication")
            negotiation = negotiate_startup(msg)
            if negotiation.reply is not None:
                writer.write(encode(negotiation.reply))
            return msg, negotiation, reader, writer, tls

    async def _cancel_request(self, msg: m.CancelRequest) -> None:
        from ._startup import cancel_matches

        client = self._cancel.get(msg.pid)
        if client is None or not cancel_matches(msg, client.key):
            return
        if client.waiting is not None:
            client.waiting.set()
            return
        if client.upstream is not None and client.upstream_key is not None:
            await send_cancel(client.upstream, client.upstream_key)

    async def _authenticate(self, reader, writer, startup: m.StartupMessage, client_address: str,
                            tls: bool) -> tuple[Principal, str, str]:
        params = startup.params
        user = params.get("user", "")
        target = params.get("database") or user
        if target not in self.runtime.config.targets:
            raise _Refused("3D000", f"pgwarden: no target named {target!r}",
                           "name a target as the database: " + ", ".join(sorted(self.runtime.config.targets)))
        frames = FrameReader(64 * 1024)
        service = next((u for u in self.settings.service_users if u.name == user), None)
        if service is not None:
            principal = await self._scram(reader, writer, frames, service, tls)
            _unread(reader, frames)
            return principal, target, AuthMethod.SCRAM.value
        if not tls and not _loopback(client_address):
            raise _Refused("28000", "pgwarden: a token is sent as a cleartext password, which needs TLS off loopback",
                           "connect with sslmode=require")
        if self.runtime.verifier is None:
            raise _Refused("28000", "pgwarden: this gateway verifies no tokens")
        writer.write(encode(m.AuthenticationCleartextPassword()))
        await writer.drain()
        msg = await _read_password(reader, frames)
        _unread(reader, frames)
        token = msg.password()
        try:
            principal = self.runtime.verifier.verify(token)
        except AuthenticationError as exc:
            raise _Refused("28P01", f"pgwarden: token refused: {exc}") from None
        if user not in (principal.subject, "jwt", "token"):
            raise _Refused("28000", f"pgwarden: user {user!r} contradicts the token's subject",
                           f"connect as user {principal.subject!r} (or 'jwt')")
        return principal, target, AuthMethod.JWT.value

    async def _scram(self, reader, writer, frames: FrameReader, service, tls: bool) -> Principal:
        """SCRAM-SHA-256 against the configured verifier; under TLS SCRAM-SHA-256-PLUS is offered first, bound
        to the proxy's certificate (``tls-server-end-point``), and a client claiming the server cannot bind
        (flag ``y``) is refused as a downgrade, as PostgreSQL does. The exchange ends here: nothing is relayed."""
        from scramp import ScramException, ScramMechanism

        try:
            verifier = self._service_verifier(service)
        except GatewayError as exc:
            log.error("%s", exc.message)
            raise _Refused("28P01", f"pgwarden: password authentication failed for user {service.name!r}") from None
        binding = ("tls-server-end-point", self._cert_pem) if tls and self._cert_pem else None
        offered = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256") if binding else ("SCRAM-SHA-256",)
        writer.write(encode(m.AuthenticationSASL(offered)))
        await writer.drain()
        try:
            first = (await _read_password(reader, frames)).sasl_initial()
            if first.mechanism not in offered or first.data is None:
                raise _Refused("28000", f"pgwarden: SASL mechanism {first.mechanism!r} is not offered "
                               f"(offered: {', '.join(offered)})")
            text = first.data.decode()
            if (first.mechanism == "SCRAM-SHA-256") == text.startswith("p="):
                raise _Refused("28000", "pgwarden: channel binding flag does not match the SASL mechanism"
                               if text.startswith("p=") else "pgwarden: SCRAM-SHA-256-PLUS needs channel binding")
            server = ScramMechanism(first.mechanism).make_server(lambda _name: verifier, channel_binding=binding)
            _set_client_first(server, text)
            writer.write(encode(m.AuthenticationSASLContinue(server.get_server_first().encode())))
            await writer.drain()
            final = (await _read_password(reader, frames)).sasl_response()
            server.set_client_final(final.data.decode())
            writer.write(encode(m.AuthenticationSASLFinal(server.get_server_final().encode())))
        except (ScramException, UnicodeDecodeError):
            raise _Refused("28P01", f"pgwarden: password authentication failed for user {service.name!r}") from None
        return Principal(service.subject, frozenset(service.groups), auth_method=AuthMethod.SCRAM)

    def _service_verifier(self, service) -> tuple[bytes, bytes, bytes, int]:
        """The service user's verifier, read now (so a rotated secret is followed); GatewayError says why not,
        without the secret."""
        from pgwarden.engine.secrets import SecretError, resolve_secret

        try:
            text = resolve_secret(service.verifier, base_dir=self.runtime.config.base_dir)
        except SecretError as exc:
            raise GatewayError("service_user_verifier", f"proxy.service_users {service.name!r}: {exc.message}") \
                from None
        try:
            return _parse_verifier(text)
        except (ValueError, TypeError):
            raise GatewayError("service_user_verifier", f"proxy.service_users {service.name!r}: the verifier is not "
                               "'SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>' (pgwarden "
                               "scram-verifier makes one)") from None

    def _pinned(self, session: Session) -> PinnedSettings:
        rule = session.rule
        assert rule is not None
        catalog = session.gateway.catalog(session.target)
        name = f"pgwarden:{session.principal.subject}".encode()[:63].decode(errors="ignore")
        return PinnedSettings(read_only=rule.read_only(), statement_timeout_ms=rule.statement_timeout,
                              lock_timeout_ms=rule.lock_timeout, search_path=tuple(catalog.search_path),
                              role=rule.upstream_role, application_name=name)

    def _upstream_target(self, session: Session, *, read_only: bool = True) -> UpstreamTarget:
        _, target = session.gateway.target(session.target)
        login = session.gateway.login(session.rule)
        return UpstreamTarget.from_dsn(target.dsn, user=login.user if login else None,
                                       password=login.password if login else None,
                                       connect_timeout=max(1.0, target.connect_timeout / 1000))

    async def _connect_upstream(self, session: Session, pinned: PinnedSettings, forward: Mapping[str, str]):
        _, target = session.gateway.target(session.target)
        params = startup_parameters(pinned, application_name=pinned.application_name)
        from psycopg.conninfo import conninfo_to_dict

        existing = conninfo_to_dict(target.dsn).get("options")
        if existing:
            params["options"] = f"{existing} {params['options']}"
        merged = {**{k: v for k, v in forward.items() if k not in params}, **params}
        try:
            upstream_target = self._upstream_target(session)
        except UpstreamFailed as exc:  # a DSN setting the proxy would have to ignore
            raise _Refused("08006", f"pgwarden: target {session.target!r} is unavailable: {exc.message}",
                           "an administrator must fix the target's dsn") from None
        except GatewayError as exc:  # the login's secret cannot be read: the operator's to fix, not the client's
            log.error("target %s: the upstream credential cannot be read: %s", session.target, exc.message)
            raise _Refused("08006", f"pgwarden: target {session.target!r} is unavailable: the gateway's credential "
                           "for it cannot be read", "an administrator must fix the target's password (see the "
                           "gateway's log)") from None
        try:
            return await connect_upstream(upstream_target, merged)
        except UpstreamFailed as exc:
            raise _Refused(exc.sqlstate if exc.sqlstate.startswith(("08", "28", "3D", "57")) else "08006",
                           f"pgwarden: target {session.target!r} is unavailable: {exc.message}",
                           "try again later; the target may be down") from None

    # ---- relay -----------------------------------------------------------------------------------

    async def _relay(self, conn: ProxyConnection, hooks: EngineHooks, client: _Client, creader, cwriter,
                     upstream) -> None:
        ureader, uwriter = upstream.reader, upstream.writer
        idle = self.settings.idle_timeout / 1000 or None

        async def cancel_upstream(timeout: float = 5) -> bool:
            """True when there was nothing to cancel with (no key) or the cancel was delivered."""
            if client.upstream_key is None:
                return True
            return await send_cancel(upstream.target, client.upstream_key, timeout=timeout)

        def withdraw(why: str) -> None:
            client.gone = why
            if client.waiting is not None:
                client.waiting.set()

        relay = Relay(conn, creader, cwriter, ureader, uwriter,
                      approve=lambda hold: self._approve(hold, hooks, client, cwriter),
                      cancel_upstream=cancel_upstream, withdraw=withdraw, idle_timeout=idle,
                      probe=encode(m.ParameterStatus("client_encoding", "UTF8")))
        reason = await relay.run()
        error = relay.error
        if reason == "idle":
            conn.to_client.append(encode(m.error("FATAL", "57P05", "pgwarden: terminating connection due to idle "
                                                 "timeout")))
            with contextlib.suppress(Exception):
                cwriter.write(b"".join(conn.to_client))
                conn.to_client.clear()
                await cwriter.drain()
        if reason == "client_gone" and conn.busy and client.upstream_key is not None:
            await send_cancel(upstream.target, client.upstream_key)
        with contextlib.suppress(Exception):
            if error is not None:
                cwriter.write(encode(m.error_from(error, "FATAL")))
            elif reason == "upstream_gone":
                cwriter.write(encode(m.error("FATAL", "08006", "pgwarden: the connection to the target was lost",
                                             hint="reconnect; the target may have restarted")))
            elif reason == "fatal" and conn.fatal is not None:
                cwriter.write(encode(conn.fatal))
            await cwriter.drain()
        if reason != "upstream_gone":
            with contextlib.suppress(Exception):
                uwriter.write(encode(m.Terminate()))

    async def _approve(self, hold: Hold, hooks: EngineHooks, client: _Client,
                       cwriter: asyncio.StreamWriter) -> list[m.BackendMessage] | None:
        """Hold, notify, wait, release: the replies of the held statement, or None if the client left."""
        held = self.runtime.held()
        session = hooks.session
        record = hooks.open_record(hold.sql, hold.verdict)
        if hold.parameters:
            record.parameters(hold.parameters)
        try:
            request = await held.hold(session, hold.sql, hold.verdict, parameters=hold.parameters or ())
        except Exception as exc:
            record.error(getattr(exc, "sqlstate", None) or "55000", str(exc))
            record.close()
            return [m.error("ERROR", getattr(exc, "sqlstate", None) or "55000",
                            f"pgwarden: this statement needs an approval, which cannot be requested now: "
                            f"{getattr(exc, 'message', exc)}")]
        if isinstance(record, _Record):
            record.st.approval_requested(request.id, list(hold.verdict.approval.approvers)
                                         if hold.verdict.approval else [])
        interval = max(self.settings.approval_notice_interval / 1000, 0.05)
        notice = m.notice("NOTICE", "01000", f"pgwarden: this statement is waiting for approval (request "
                          f"{request.id})", hint=f"an approver runs: pgwarden approvals approve {request.id}")
        withdraw = asyncio.Event()
        client.waiting = withdraw
        if client.gone is not None:
            withdraw.set()
        started = time.monotonic()
        waiter = cancel = None
        try:
            while True:
                if client.gone is not None:
                    await _withdraw(held, request.id, client.gone)
                    record.error("57014", f"withdrawn while waiting for approval: {client.gone}")
                    record.close()
                    return None
                try:
                    cwriter.write(encode(notice))
                    await cwriter.drain()
                except (ConnectionError, OSError):
                    await _withdraw(held, request.id, "the client disconnected")
                    record.error("57014", "client disconnected while waiting for approval")
                    record.close()
                    return None
                waiter = asyncio.ensure_future(held.broker.wait(request.id, interval))
                cancel = asyncio.ensure_future(withdraw.wait())
                done, _ = await asyncio.wait({waiter, cancel}, return_when=asyncio.FIRST_COMPLETED)
                if cancel in done and client.gone is not None:
                    continue  # the session ended: withdrawn above
                if cancel in done:
                    waiter.cancel()
                    await _withdraw(held, request.id, "the client cancelled the statement")
                    record.error("57014", "cancelled while waiting for approval")
                    record.close()
                    return [m.error("ERROR", "57014", "pgwarden: canceling statement due to user request; the "
                                    f"approval request {request.id} is withdrawn")]
                cancel.cancel()
                current = waiter.result()
                if not current.pending:
                    break
        finally:
            client.waiting = None
            for future in (waiter, cancel):
                if future is not None and not future.done():
                    future.cancel()
        wait_ms = (time.monotonic() - started) * 1000
        if isinstance(record, _Record):
            record.st.approval_decided(request.id, current.decided_by, current.status.value, wait_ms)
        try:
            result = await held.release(session, hold.sql, current, parameters=hold.parameters,
                                        param_types=hold.param_types)
        except Exception as exc:
            sqlstate = getattr(exc, "sqlstate", None) or "55000"
            text = getattr(exc, "message", None) or str(exc)
            record.error(sqlstate, text)
            record.close()
            return [m.error("ERROR", sqlstate, f"pgwarden: {text}")]
        replies: list[m.BackendMessage] = []
        for notice_text in result.notices:
            replies.append(m.notice("NOTICE", "00000", notice_text))
        for res in result.results:
            if res.columns:
                types = res.types or [25] * len(res.columns)
                replies.append(m.RowDescription(tuple(m.FieldDescription(c, type_oid=t)
                                                      for c, t in zip(res.columns, types, strict=False))))
                for row in res.rows:
                    replies.append(m.DataRow.from_values([None if v is None else v.encode() for v in row]))
                record.result(res.columns, res.rows, res.row_count, None)
            replies.append(m.CommandComplete(res.status))
        failure = record.close()
        if failure is not None:
            return [m.error("ERROR", "58030", f"pgwarden: the audit journal could not record this statement: "
                            f"{failure}")]
        return replies


async def _withdraw(held, request_id: str, reason: str) -> None:
    with contextlib.suppress(Exception):
        await held.broker.withdraw(request_id, reason)


def _unread(reader: asyncio.StreamReader, frames: FrameReader) -> None:
    """Bytes the client sent behind its last authentication message (a Query pipelined with the password)
    go back in front of the stream, where the relay takes them over."""
    rest = frames.take_rest()
    if rest:
        reader._buffer[:0] = rest


async def _read_password(reader: asyncio.StreamReader, frames: FrameReader) -> m.PasswordMessage:
    while True:
        frame = frames.next_frame()
        if frame is not None:
            if frame.type != ord("p"):
                raise ProtocolViolation("expected_password", f"expected a password message, got {chr(frame.type)!r}")
            return m.PasswordMessage(frame.payload)
        data = await reader.read(8192)
        if not data:
            raise ConnectionError("client closed during authentication")
        frames.feed(data)


async def _peek(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            fut = loop.create_future()
            loop.add_reader(sock.fileno(), lambda f=fut: f.done() or f.set_result(None))
            try:
                await fut
            finally:
                loop.remove_reader(sock.fileno())


def _loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address in ("", "localhost") or address.startswith("/")
    # A dual-stack (IPv6) listener reports an IPv4 client as ::ffff:a.b.c.d; judge the IPv4 address.
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


async def serve(runtime: Runtime, *, host: str | None = None, port: int | None = None,
                ready: asyncio.Event | None = None) -> None:
    server = ProxyServer(runtime, host=host, port=port)
    await server.start()
    log.info("pgwarden proxy listening on %s:%d", *server.address)
    if ready is not None:
        ready.set()
    try:
        await server.serve_forever()
    finally:
        await server.close()
