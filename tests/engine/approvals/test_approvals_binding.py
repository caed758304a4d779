from __future__ import annotations

import pytest

from pgwarden.engine.approvals import binding_hash, canonical_binding

BASE = ("DELETE FROM t WHERE id = $1", ["1"], "prod", "app_rw", "agent", "v1")


def test_binding_is_sha256_hex_and_stable() -> None:
    h = binding_hash(*BASE)
    assert len(h) == 64 and int(h, 16) >= 0
    assert binding_hash(*BASE) == h


@pytest.mark.parametrize("index, value", [
    (0, "delete from t where id = $1"),   # exact text, not normalised: case
    (0, "DELETE FROM t WHERE id = $1 "),  # trailing space
    (1, ["2"]), (1, [None]), (1, ["1", None]), (1, []),
    (2, "staging"), (3, None), (3, "app_ro"), (4, "agent-2"), (5, "v2"),
])
def test_every_field_changes_the_binding(index: int, value: object) -> None:
    changed = list(BASE)
    changed[index] = value
    assert binding_hash(*changed) != binding_hash(*BASE)  # type: ignore[arg-type]


def test_encoding_is_unambiguous() -> None:
    # Length prefixes: moving characters between adjacent fields changes the encoding.
    assert canonical_binding("ab", [], "c", None, "s", "v") != canonical_binding("a", [], "bc", None, "s", "v")
    assert canonical_binding("x", ["a", "b"], "t", "r", "s", "v") != canonical_binding("x", ["ab"], "t", "r", "s", "v")
    # None is not the empty string.
    assert binding_hash("x", [None], "t", "r", "s", "v") != binding_hash("x", [""], "t", "r", "s", "v")
    assert binding_hash("x", [], "t", None, "s", "v") != binding_hash("x", [], "t", "", "s", "v")


def test_undecodable_bytes_hash_distinctly() -> None:
    a = b"SELECT '\xff'".decode("utf-8", "surrogateescape")
    b = b"SELECT '\xfe'".decode("utf-8", "surrogateescape")
    assert binding_hash(a, [], "t", None, "s", "v") != binding_hash(b, [], "t", None, "s", "v")
