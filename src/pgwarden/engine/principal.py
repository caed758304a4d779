"""The principal: who is behind a request, as the doors, the broker and the audit trail see it.

A contract shared by both doors, the approval broker and the audit recorder, so it
lives apart from the JWT machinery that builds it (:mod:`pgwarden.engine.identity`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

__all__ = ["AuthMethod", "Channel", "Principal"]


class AuthMethod(StrEnum):
    JWT = "jwt"  # a verified bearer token
    SCRAM = "scram"  # a service user of the wire proxy, by its SCRAM-SHA-256 verifier
    CLI = "cli"  # asserted by whoever runs the ``pgwarden`` CLI on this machine


class Channel(StrEnum):
    """Which door a session came through."""

    MCP = "mcp"
    WIRE = "wire"
    CLI = "cli"


@dataclass(frozen=True, slots=True)
class Principal:
    """The party behind a request, as established by a verified token (or the local CLI)."""

    subject: str
    groups: frozenset[str]
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)
    auth_method: AuthMethod = AuthMethod.JWT

    @classmethod
    def local(cls, subject: str, groups: frozenset[str] | set[str] | list[str] = frozenset()) -> Principal:
        """A principal asserted by whoever runs the ``pgwarden`` CLI on this machine (no token)."""
        return cls(subject=subject, groups=frozenset(groups), auth_method=AuthMethod.CLI)
