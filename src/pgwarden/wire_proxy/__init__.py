"""The PostgreSQL v3 wire protocol door: a sans-IO protocol layer (this package's face) under the asyncio
server that relays client ↔ upstream through the engine.

Nothing named here does I/O. The server built on it reads bytes from a socket and hands them over:

* start-up phase — :class:`StartupReader` yields :class:`StartupMessage`, :class:`SSLRequest`,
  :class:`GSSENCRequest`, :class:`CancelRequest` or :class:`DirectTLS`; :func:`classify_first_packet`
  peeks without consuming; :func:`negotiate_startup` decides the protocol version (3.0 or 3.2) and the
  NegotiateProtocolVersion to send; :func:`filter_startup_params` says which parameters may reach the
  upstream server (:data:`ALLOWED_STARTUP_SETTINGS`); :func:`new_backend_key` makes the proxy's own cancel
  key and :func:`cancel_matches` checks one;
* normal phase — :class:`FrameReader` frames messages for decoding with :func:`decode_frontend` /
  :func:`decode_backend`; on the relay path :func:`scan` finds message boundaries in a buffer without
  copying, so rows are forwarded untouched and only the messages the proxy must read are decoded;
  :func:`encode` turns any message into bytes;
* bookkeeping — :class:`ReplyQueue` pairs upstream replies with the frontend messages they answer, drops
  replies to what the proxy injected, and turns a policy refusal inside a pipeline into exactly what
  PostgreSQL would have answered (error, skip till Sync, ReadyForQuery with the right status).

Every malformed input raises :class:`ProtocolViolation` (SQLSTATE 08P01) or a subclass
(:class:`MessageTooLarge`, :class:`UnsupportedProtocol`, :class:`StartupRefused`, :class:`UnexpectedReply`);
:func:`error_from` turns one into the ErrorResponse to send before closing.
"""

from ._queue import PROBE_SQL, PROBE_STATEMENT, BackendStep, ClientStep, Origin, ReplyQueue
from ._startup import (
    ALLOWED_STARTUP_SETTINGS,
    NEWEST_MINOR,
    Negotiation,
    PacketKind,
    RefusedParameter,
    StartupParams,
    cancel_key_length,
    cancel_matches,
    classify_first_packet,
    filter_startup_params,
    negotiate_startup,
    new_backend_key,
    split_options,
)
from .codec import (
    BACKEND_TYPES,
    DEFAULT_MAX_MESSAGE_SIZE,
    FRONTEND_TYPES,
    MAX_STARTUP_PACKET_SIZE,
    Frame,
    FrameReader,
    StartupReader,
    decode_backend,
    decode_frontend,
    decode_startup,
    encode,
    scan,
)
from .errors import MessageTooLarge, ProtocolViolation, StartupRefused, UnexpectedReply, UnsupportedProtocol
from .messages import *  # noqa: F403 - every message class is part of the face
from .messages import __all__ as _message_names

__all__ = [
    "ALLOWED_STARTUP_SETTINGS",
    "BACKEND_TYPES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FRONTEND_TYPES",
    "MAX_STARTUP_PACKET_SIZE",
    "NEWEST_MINOR",
    "PROBE_SQL",
    "PROBE_STATEMENT",
    "BackendStep",
    "ClientStep",
    "Frame",
    "FrameReader",
    "MessageTooLarge",
    "Negotiation",
    "Origin",
    "PacketKind",
    "ProtocolViolation",
    "RefusedParameter",
    "ReplyQueue",
    "StartupParams",
    "StartupReader",
    "StartupRefused",
    "UnexpectedReply",
    "UnsupportedProtocol",
    "cancel_key_length",
    "cancel_matches",
    "classify_first_packet",
    "decode_backend",
    "decode_frontend",
    "decode_startup",
    "encode",
    "filter_startup_params",
    "negotiate_startup",
    "new_backend_key",
    "scan",
    "split_options",
    *_message_names,
]
