"""The CLI tests share the console tests' helpers (dev issuer config, held requests, a real journal)."""

from __future__ import annotations

import sys
from pathlib import Path

_CONSOLE = str(Path(__file__).resolve().parent.parent / "console")
if _CONSOLE not in sys.path:
    sys.path.insert(0, _CONSOLE)
