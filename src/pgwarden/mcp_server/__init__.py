"""The MCP door: pgwarden's governed tools for coding agents, over stdio and streamable HTTP.

- :func:`build_server` (``server``): the SDK ``MCPServer`` with the tools, for a principal source;
- :class:`Warden` (``tools``): what each tool does over the engine;
- :func:`build_http_app` (``http``): the Starlette app of ``pgwarden serve`` (``/mcp`` + extra routes);
- :func:`run_stdio` (``stdio``): ``pgwarden mcp``.
"""

from .http import build_http_app
from .server import Confirm, build_server
from .stdio import run_stdio
from .tools import Warden

__all__ = ["Confirm", "Warden", "build_http_app", "build_server", "run_stdio"]
