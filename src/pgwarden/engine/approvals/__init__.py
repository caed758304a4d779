"""The approval broker and its stores: statements held for a human, decided, and released once.

Public API (everything else in this package is private to it):

- :class:`ApprovalBroker` (``broker``): ``request``, ``wait``, ``approve``, ``deny``,
  ``approve_as_self``, ``deny_as_self``, ``withdraw``, ``expire_due``, ``consume``,
  ``find_grant``, ``list``, ``get``; ``start``/``close`` or ``async with``.
- Values (``models``): :class:`ApprovalRequest`, :class:`ApprovalStatus`, :class:`Grant`,
  :class:`Window`, :class:`ApprovalReason`, :class:`ApprovalEvent`, ``SELF``.
- :func:`binding_hash` (``binding``): what an approval binds to.
- Stores (``store``, ``sqlite_store``, ``postgres_store``): the :class:`Store` protocol,
  :class:`SqliteStore` (default, one gateway), :class:`PostgresStore` (several gateways).
- Webhooks (``webhooks``): :class:`WebhookNotifier`, :class:`WebhookEndpoint`.
- Configuration (``config``): :class:`ApprovalsConfig` and :func:`build_broker`.
- Errors (``errors``): :class:`ApprovalError` and one subclass per rule, each with a stable code.

See ``broker``'s docstring for how the engine drives a held statement.
"""

from .binding import binding_hash, canonical_binding
from .broker import USE_GRACE_MS, ApprovalBroker, Notifier
from .config import ApprovalsConfig, build_broker, build_store
from .errors import (
    ApprovalAlreadyDecided,
    ApprovalError,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalRefused,
    ApprovalStoreUnavailable,
    ApproverNotAllowed,
    DecisionReplayed,
    SelfApprovalForbidden,
    WindowNotAllowed,
    WindowTooLong,
)
from .models import (
    SELF,
    ApprovalEvent,
    ApprovalReason,
    ApprovalRequest,
    ApprovalStatus,
    Channel,
    Grant,
    Window,
)
from .postgres_store import PostgresStore
from .sqlite_store import SqliteStore
from .store import OutboxMessage, Store
from .webhooks import WebhookEndpoint, WebhookNotifier

__all__ = [
    "SELF",
    "USE_GRACE_MS",
    "ApprovalAlreadyDecided",
    "ApprovalBroker",
    "ApprovalError",
    "ApprovalEvent",
    "ApprovalExpired",
    "ApprovalNotFound",
    "ApprovalReason",
    "ApprovalRefused",
    "ApprovalRequest",
    "ApprovalStatus",
    "ApprovalStoreUnavailable",
    "ApprovalsConfig",
    "ApproverNotAllowed",
    "Channel",
    "DecisionReplayed",
    "Grant",
    "Notifier",
    "OutboxMessage",
    "PostgresStore",
    "SelfApprovalForbidden",
    "SqliteStore",
    "Store",
    "WebhookEndpoint",
    "WebhookNotifier",
    "Window",
    "WindowNotAllowed",
    "WindowTooLong",
    "binding_hash",
    "build_broker",
    "build_store",
    "canonical_binding",
]
