"""The ``pgwarden`` command line: thin commands wiring the packages together.

The CLI sits above everything (it may import both doors); each command lives in a module of
its own and registers itself through ``register(subparsers)``, listed in :data:`main.COMMANDS`.
Exit codes are one table for every command (:mod:`pgwarden.cli.exits`).
"""

from .main import main

__all__ = ["main"]
