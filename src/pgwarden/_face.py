"""Lazy package faces: a package names its public API without importing it all at import time.

``face(__name__, {"Name": ".module", ...})`` returns the ``__getattr__`` and ``__dir__`` a
package's ``__init__`` installs (PEP 562): ``from pgwarden.engine import Session`` imports
``pgwarden.engine.session`` on first use. The faces cost nothing at import and cannot create
import cycles between a package and its own modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def face(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    def __getattr__(name: str) -> object:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        return value

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
