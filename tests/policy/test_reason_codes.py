"""Every reason code the policy emits is a ReasonCode with a SQLSTATE, and docs/policy.md lists each one."""

from __future__ import annotations

import re
from pathlib import Path

from pgwarden.policy.reasons import ReasonCode, sqlstate_for

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "src" / "pgwarden" / "policy"


def _emitted() -> set[str]:
    codes: set[str] = set()
    for path in POLICY.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        codes |= set(re.findall(r'(?:deny|Reason|Denial|_denial|denial)\(\s*"([a-z_]+)"', text))
    return codes


def test_every_emitted_code_is_a_reason_code() -> None:
    known = {m.value for m in ReasonCode}
    assert _emitted() - known == set()
    assert len(_emitted()) > 40  # the scan sees the codes at all


def test_every_reason_code_is_documented_and_has_a_sqlstate() -> None:
    doc = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    for member in ReasonCode:
        assert f"`{member.value}`" in doc, member.value
        assert re.fullmatch(r"[0-9A-Z]{5}", member.sqlstate), member
        assert sqlstate_for(member.value) == member.sqlstate
