"""The gateway's human side over HTTP: the JSON approvals API and the server-rendered console.

* :func:`console_routes` — the routes, for the gateway's one Starlette app (``pgwarden serve`` mounts them
  beside MCP): ``/api/approvals…`` (bearer JWT, JSON errors with stable codes) and ``/console…`` (HTML,
  token in an HttpOnly SameSite=Strict cookie, CSRF token on every form, no JavaScript).
* :func:`build_app` — a Starlette app with only these routes (standalone use and tests).

Both need a started :class:`~pgwarden.engine.runtime.Runtime` with ``identity`` configured; approvals
use its broker, the audit pages read ``audit.journal_dir`` (relative to the configuration's folder).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ._core import ConsoleError, approver_groups, can_view, format_ms, parse_window
from .api import api_routes
from .highlight import highlight_sql
from .web import web_routes

if TYPE_CHECKING:
    from pgwarden.engine.runtime import Runtime

__all__ = ["ConsoleError", "approver_groups", "build_app", "can_view", "console_routes", "format_ms",
           "highlight_sql", "parse_window"]


def console_routes(runtime: Runtime) -> list[BaseRoute]:
    """The approvals API and the console pages over ``runtime`` (started by the caller)."""
    return [*api_routes(runtime), *web_routes(runtime)]


def build_app(runtime: Runtime) -> Starlette:
    """A Starlette app serving :func:`console_routes` only; the caller starts and closes ``runtime``."""
    return Starlette(routes=console_routes(runtime))
