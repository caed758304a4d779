"""The engine both doors share: configuration, identity, catalogs, upstream, sessions, approvals.

What the doors and the CLI may use (everything else is private to the package):

* :class:`Runtime` and :class:`HeldStatements` (``runtime``) — the running engine built from a
  configuration, and the approval flow;
* :class:`Gateway` (``gateway``), :class:`Session`, :class:`RunResult`, :class:`StatementResult`
  (``session``), :class:`SessionState` (``state``);
* :class:`Principal`, :class:`Channel`, :class:`AuthMethod` (``principal``), :class:`TokenVerifier`,
  :class:`AuthenticationError` (``identity``);
* :class:`GatewayConfig`, :func:`load_config`, :func:`parse_config`, :class:`ConfigError` (``config``);
* the upstream boundary (``upstream``): :func:`startup_parameters`, :func:`conninfo`, :class:`Upstream`;
* errors (``errors``): :class:`GatewayError`, :class:`StatementRefused`, :class:`UpstreamError`;
* ``approvals`` — the broker and its stores, a package with a face of its own.
"""

from pgwarden._face import face

__all__ = [
    "AuthMethod", "AuthenticationError", "Channel", "ConfigError", "Gateway", "GatewayConfig", "GatewayError",
    "HeldStatements", "Principal", "RunResult", "Runtime", "Session", "SessionState", "StatementRefused",
    "StatementResult", "TokenVerifier", "Upstream", "UpstreamError", "conninfo", "load_config", "parse_config",
    "startup_parameters",
]

__getattr__, __dir__ = face(__name__, {
    "Runtime": ".runtime", "HeldStatements": ".runtime", "Gateway": ".gateway", "Session": ".session",
    "RunResult": ".session", "StatementResult": ".session", "SessionState": ".state",
    "Principal": ".principal", "Channel": ".principal", "AuthMethod": ".principal",
    "TokenVerifier": ".identity", "AuthenticationError": ".identity", "GatewayConfig": ".config",
    "load_config": ".config", "parse_config": ".config", "ConfigError": ".config",
    "startup_parameters": ".upstream", "conninfo": ".upstream", "Upstream": ".upstream",
    "GatewayError": ".errors", "StatementRefused": ".errors", "UpstreamError": ".errors",
})
