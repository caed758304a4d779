"""Starting the engine for a long-running command, with the errors a person can act on."""

from __future__ import annotations

import sys

from . import exits


async def start_runtime(config_path: str, command: str):
    """``(runtime, None)`` once the engine is up, or ``(None, exit code)`` after saying why on stderr."""
    from pgwarden.engine.config import ConfigError, load_config
    from pgwarden.engine.errors import GatewayError
    from pgwarden.engine.runtime import Runtime

    try:
        return await Runtime.start(load_config(config_path)), None
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
    except GatewayError as exc:
        print(f"pgwarden {command}: [{exc.code}] {exc.message}", file=sys.stderr)
    return None, exits.USAGE
