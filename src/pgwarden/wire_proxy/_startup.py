"""Start-up negotiation as pure functions: what the first packet is, which protocol version the proxy
speaks, which start-up parameters may reach the upstream server, and the proxy's own cancel keys.

The order a server follows with these pieces::

    kind = classify_first_packet(first_bytes)        # DIRECT_TLS, SSL_REQUEST, … (or None: need more)
    msg = StartupReader.next_message()               # decode the packet itself
    n = negotiate_startup(msg)                       # FATAL UnsupportedProtocol / StartupRefused, or:
    if n.reply: send(encode(n.reply))                # NegotiateProtocolVersion, before authentication
    p = filter_startup_params(n.params, pinned)      # what goes upstream, what is refused and why
    key = new_backend_key(n.version)                 # the proxy's BackendKeyData for this client

Version negotiation follows PostgreSQL's ``ProcessStartupPacket``: a major other than 3 is FATAL; a
NegotiateProtocolVersion (newest minor 2, the unrecognised ``_pq_.`` names) is sent only when the client
asked for a minor above 2 (libpq of PostgreSQL 19 betas asks 3.9999) or sent ``_pq_.`` options the proxy
does not know; otherwise nothing is sent and the client's version stands.

Parameters: anything that is not a harmless presentation setting is a way to change the session under the
policy's feet (``options=-c default_transaction_read_only=off``, ``role``, ``search_path`` …;
PgBouncer's CVE-2025-12819 came from start-up parameters), so :data:`ALLOWED_STARTUP_SETTINGS` is an allow
list and everything else, including settings hidden in ``options``, is refused and never forwarded.
"""

from __future__ import annotations

import enum
import hmac
import secrets
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pgwarden.policy.builtins import BOUNDED_SETTINGS

from . import messages as m
from .codec import CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE, TLS_HANDSHAKE_BYTE
from .errors import StartupRefused, UnsupportedProtocol

__all__ = [
    "ALLOWED_STARTUP_SETTINGS",
    "NEWEST_MINOR",
    "Negotiation",
    "PacketKind",
    "RefusedParameter",
    "StartupParams",
    "cancel_key_length",
    "cancel_matches",
    "classify_first_packet",
    "filter_startup_params",
    "negotiate_startup",
    "new_backend_key",
    "split_options",
]

NEWEST_MINOR = 2
"""The proxy speaks protocol 3.0 and 3.2 (3.1 was never used; a client asking for it gets 3.0 behaviour,
as PostgreSQL 18 gives it)."""


class PacketKind(enum.Enum):
    DIRECT_TLS = "direct_tls"  # first byte 0x16: a TLS ClientHello (sslnegotiation=direct)
    SSL_REQUEST = "ssl_request"  # 80877103
    GSSENC_REQUEST = "gssenc_request"  # 80877104
    CANCEL_REQUEST = "cancel_request"  # 80877102
    STARTUP = "startup"  # 3.x: 196608 is 3.0, 196610 is 3.2
    UNSUPPORTED = "unsupported"  # any other code: answer FATAL and close


def classify_first_packet(data: bytes | bytearray | memoryview) -> PacketKind | None:
    """What the bytes buffered so far at the start of a connection (or after a refused SSL/GSS request)
    are; None when fewer than the 8 bytes needed have arrived. Looks only, consumes nothing."""
    if len(data) >= 1 and data[0] == TLS_HANDSHAKE_BYTE:
        return PacketKind.DIRECT_TLS
    if len(data) < 8:
        return None
    (code,) = struct.unpack_from("!I", data, 4)
    if code == SSL_REQUEST_CODE:
        return PacketKind.SSL_REQUEST
    if code == GSSENC_REQUEST_CODE:
        return PacketKind.GSSENC_REQUEST
    if code == CANCEL_REQUEST_CODE:
        return PacketKind.CANCEL_REQUEST
    if code >> 16 == 3:
        return PacketKind.STARTUP
    return PacketKind.UNSUPPORTED


# --------------------------------------------------------------------------------------------------
# protocol version


@dataclass(frozen=True, slots=True)
class Negotiation:
    """The outcome of a StartupMessage's version and protocol options."""

    requested: tuple[int, int]
    version: tuple[int, int]  # (3, 0) or (3, 2): cancel key length and any 3.2 behaviour follow it
    reply: m.NegotiateProtocolVersion | None  # send it before the first authentication request
    protocol_options: dict[str, str] = field(default_factory=dict)  # recognised ``_pq_.`` options
    params: dict[str, str] = field(default_factory=dict)  # every other parameter, for filtering


def negotiate_startup(
    msg: m.StartupMessage, *, known_protocol_options: Collection[str] = frozenset()
) -> Negotiation:
    """Decide the version the proxy speaks with this client and whether to send NegotiateProtocolVersion.

    Raises :class:`UnsupportedProtocol` (FATAL 0A000) for a major other than 3 and
    :class:`StartupRefused` (FATAL 28000) when no user is named, as PostgreSQL does.
    ``known_protocol_options`` names the ``_pq_.`` options the proxy implements (none today).
    """
    if msg.major != 3:
        raise UnsupportedProtocol(msg.major, msg.minor)
    unknown: list[str] = []
    recognised: dict[str, str] = {}
    params: dict[str, str] = {}
    for name, value in msg.params.items():
        if name.startswith("_pq_."):
            if name in known_protocol_options:
                recognised[name] = value
            else:
                unknown.append(name)
        else:
            params[name] = value
    if not params.get("user"):
        raise StartupRefused("no_user", "no PostgreSQL user name specified in startup packet")
    reply = None
    if msg.minor > NEWEST_MINOR or unknown:
        reply = m.NegotiateProtocolVersion(min(msg.minor, NEWEST_MINOR), tuple(unknown))
    version = (3, 2) if msg.minor >= 2 else (3, 0)
    return Negotiation((msg.major, msg.minor), version, reply, recognised, params)


# --------------------------------------------------------------------------------------------------
# start-up parameters


ALLOWED_STARTUP_SETTINGS: Mapping[str, str] = MappingProxyType(
    {
        # lower-case name -> the spelling forwarded upstream. Each changes only how values are
        # presented to this client, never what the session may read or write, or how statements parse.
        "application_name": "application_name",  # labels the session; the proxy may pin it to the principal
        "client_encoding": "client_encoding",  # UTF8 only: policy, masks and detectors read UTF-8 text
        "datestyle": "DateStyle",
        "timezone": "TimeZone",
        "intervalstyle": "IntervalStyle",
        "extra_float_digits": "extra_float_digits",  # an integer from -15 to 3
        "client_min_messages": "client_min_messages",  # which notices this client receives
    }
)
"""Settings a client may set in its start-up packet (directly or in ``options``). Everything else is
refused, never forwarded: it could change privileges or visibility (``role``, ``session_authorization``,
``search_path``, ``default_transaction_read_only``, ``row_security``), limits the policy pins
(``statement_timeout``, ``lock_timeout``), how SQL text is read (``standard_conforming_strings``,
``backslash_quote``; a string the analyser reads one way and the server another is a bypass), or is
unknown to us. ``standard_conforming_strings=on`` is accepted and dropped, since upstream keeps it on."""

_UTF8_NAMES = frozenset({"utf8", "unicode"})  # PostgreSQL's aliases, compared as it cleans them
_ON = frozenset({"on", "true", "yes", "1", "t", "y"})
_CONNECTION_KEYS = frozenset({"user", "database"})


@dataclass(frozen=True, slots=True)
class RefusedParameter:
    """One start-up parameter (or ``options`` item) that will not reach the upstream server.

    ``code``: ``replication``, ``not_allowed``, ``pinned``, ``bad_value`` or ``bad_options``."""

    name: str
    value: str
    code: str
    reason: str
    in_options: bool = False


@dataclass(frozen=True, slots=True)
class StartupParams:
    """``forward``: settings that may go upstream (canonical names). ``user``/``database`` are what the
    client asked for; the proxy picks the upstream role and database itself and never forwards them as
    given. ``refused``: what was stopped and why (the server decides whether that is FATAL or a NOTICE).
    ``dropped``: names accepted but not forwarded because upstream already has that value."""

    user: str | None
    database: str | None
    forward: dict[str, str]
    refused: tuple[RefusedParameter, ...] = ()
    dropped: tuple[str, ...] = ()


def split_options(options: str) -> list[str]:
    """Split an ``options`` value as PostgreSQL's ``pg_split_opts`` does: on white space, where a
    backslash makes the next character literal (libpq writes ``-c search_path=a\\ b``)."""
    out: list[str] = []
    i, n = 0, len(options)
    while i < n:
        while i < n and options[i] in " \t\n\r\f\v":
            i += 1
        if i >= n:
            break
        token: list[str] = []
        escape = False
        while i < n:
            ch = options[i]
            if ch in " \t\n\r\f\v" and not escape:
                break
            if not escape and ch == "\\":
                escape = True
            else:
                escape = False
                token.append(ch)
            i += 1
        out.append("".join(token))
    return out


def _parse_options(options: str) -> tuple[list[tuple[str, str]], list[RefusedParameter]]:
    """``-c name=value``, ``-cname=value`` and ``--name=value`` items; every other switch is refused
    (``-B``, ``-F``, ``-d`` … are server switches PostgreSQL also honours from ``options``)."""
    settings: list[tuple[str, str]] = []
    refused: list[RefusedParameter] = []
    tokens = split_options(options)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok == "-c":
            if i >= len(tokens):
                refused.append(RefusedParameter("options", tok, "bad_options", "-c without a setting", True))
                break
            item = tokens[i]
            i += 1
        elif tok.startswith("-c") or (tok.startswith("--") and len(tok) > 2):
            item = tok[2:]
        else:
            refused.append(
                RefusedParameter(
                    "options", tok, "bad_options",
                    f"options item {tok!r} is not a -c name=value setting; only those are accepted", True,
                )
            )
            continue
        name, eq, value = item.partition("=")
        if not eq or not name:
            refused.append(
                RefusedParameter("options", item, "bad_options", f"setting {item!r} has no name=value form", True)
            )
            continue
        settings.append((name.replace("-", "_"), value))  # ParseLongOption turns dashes into underscores
    return settings, refused


def _check_setting(name: str, value: str, pinned: frozenset[str], in_options: bool) -> str | RefusedParameter | None:
    """The canonical name to forward, a refusal, or None to drop it quietly."""
    key = name.lower()
    if key in pinned:
        return RefusedParameter(name, value, "pinned", f"{name} is set by the gateway's policy", in_options)
    if key == "standard_conforming_strings" and value.strip().lower() in _ON:
        return None
    canonical = ALLOWED_STARTUP_SETTINGS.get(key)
    if canonical is None:
        return RefusedParameter(
            name, value, "not_allowed",
            f"setting {name} cannot be given at connection time through pgwarden "
            f"(allowed: {', '.join(sorted(ALLOWED_STARTUP_SETTINGS.values()))})",
            in_options,
        )
    if key == "client_encoding":
        cleaned = "".join(ch for ch in value.lower() if ch.isalnum())
        if cleaned not in _UTF8_NAMES:
            return RefusedParameter(name, value, "bad_value", "pgwarden speaks UTF8 only; use client_encoding=UTF8",
                                    in_options)
    elif key in BOUNDED_SETTINGS:
        values, why = BOUNDED_SETTINGS[key]
        if value.strip().lower() not in values:
            return RefusedParameter(name, value, "bad_value", f"{name}={value} is refused: {why}", in_options)
    elif key == "extra_float_digits":
        try:
            digits = int(value.strip())
        except ValueError:
            digits = None
        if digits is None or not -15 <= digits <= 3:
            return RefusedParameter(name, value, "bad_value", "extra_float_digits is an integer from -15 to 3",
                                    in_options)
    return canonical


def filter_startup_params(params: Mapping[str, str], pinned: Collection[str] = ()) -> StartupParams:
    """Split a client's start-up parameters into what may be forwarded and what is refused.

    ``params`` is :attr:`Negotiation.params` (``_pq_.`` protocol options, handled by
    :func:`negotiate_startup`, are skipped if present). ``pinned`` names settings the policy sets itself
    (case-insensitive); a client value for one is refused even when the allow list has it.
    ``options`` is parsed and its allowed settings forwarded as plain parameters; ``options`` itself is
    never forwarded. As in PostgreSQL, a setting given directly wins over the same one in ``options``.
    """
    pinned_keys = frozenset(p.lower() for p in pinned)
    forward: dict[str, str] = {}
    refused: list[RefusedParameter] = []
    dropped: list[str] = []

    def consider(name: str, value: str, in_options: bool) -> None:
        verdict = _check_setting(name, value, pinned_keys, in_options)
        if verdict is None:
            dropped.append(name)
        elif isinstance(verdict, RefusedParameter):
            refused.append(verdict)
        else:
            forward[verdict] = "UTF8" if verdict == "client_encoding" else value

    options = params.get("options")
    if options is not None:
        settings, bad = _parse_options(options)
        refused.extend(bad)
        for name, value in settings:
            consider(name, value, True)
    for name, value in params.items():
        if name in _CONNECTION_KEYS or name == "options" or name.startswith("_pq_."):
            continue
        if name == "replication":
            refused.append(
                RefusedParameter(name, value, "replication", "replication connections are not offered by pgwarden")
            )
            continue
        consider(name, value, False)
    user = params.get("user")
    database = params.get("database") or user
    return StartupParams(user, database, forward, tuple(refused), tuple(dropped))


# --------------------------------------------------------------------------------------------------
# cancel keys


def cancel_key_length(version: tuple[int, int]) -> int:
    """4 bytes under 3.0 (and 3.1); 32 under 3.2, as PostgreSQL 18 sends."""
    return 32 if version >= (3, 2) else 4


def new_backend_key(version: tuple[int, int]) -> m.BackendKeyData:
    """A fresh, unguessable BackendKeyData for one client session. The proxy maps it to the upstream
    server's own key (or to none, when the server sent none) and never shows the client the upstream one."""
    pid = secrets.randbelow(0x7FFFFFFF) + 1  # a positive Int32, like a process id
    return m.BackendKeyData(pid, secrets.token_bytes(cancel_key_length(version)))


def cancel_matches(request: m.CancelRequest, issued: m.BackendKeyData) -> bool:
    """Whether a CancelRequest names ``issued``; compares the key in constant time."""
    return request.pid == issued.pid and hmac.compare_digest(request.key, issued.key)
