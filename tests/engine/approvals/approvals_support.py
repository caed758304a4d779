"""Helpers shared by the approval tests (a module of its own: ``conftest`` names are ambiguous on sys.path)."""

from __future__ import annotations

from pgwarden.engine.principal import Principal
from pgwarden.policy.verdict import ApprovalRequirement


class FakeClock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds



AGENT = Principal.local("agent-7", {"agents"})
ALICE = ("alice", {"dba"})
BOB = ("bob", {"dba", "oncall"})
MALLORY = ("mallory", {"sales"})


def requirement(*, approvers: tuple[str, ...] = ("dba",), timeout_ms: int = 60_000,
                max_window_ms: int = 0) -> ApprovalRequirement:
    return ApprovalRequirement(approvers=approvers, timeout_ms=timeout_ms, max_window_ms=max_window_ms,
                               triggers=("destructive",))


def ask(**overrides: object) -> dict[str, object]:
    """Keyword arguments of ``ApprovalBroker.request`` for a typical held DELETE."""
    base: dict[str, object] = {
        "requester": AGENT, "target": "prod", "role": "app_rw",
        "statement": "DELETE FROM orders WHERE id = $1", "parameters": ["42"],
        "policy_version": "v1", "reasons": [("approval_required", "DELETE needs a DBA's approval")],
        "lint_findings": [{"rule": "no-where", "level": "info"}], "channel": "wire",
        "requirement": requirement(), "scope": [("public.orders", "delete")],
    }
    base.update(overrides)
    return base
