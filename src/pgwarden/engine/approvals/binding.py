"""The binding hash: what an approval is an approval *of*.

An approval covers exactly one (statement text, parameters, target, upstream role,
requester subject, policy version). The binding is the SHA-256 of a canonical
encoding of those six values, and :meth:`ApprovalBroker.consume` refuses an
approval whose binding differs from the statement about to run.

"Canonical" here means an encoding that is unambiguous and the same on every
machine, *not* a normalisation of the SQL: the statement is hashed as the exact
text the client sent (whitespace, case, comments and literals included), so
``DELETE FROM t WHERE id = 1`` and ``delete from t where id=1`` are different
bindings and an approval of one never releases the other. Precisely:

- a fixed header ``pgwarden-approval-binding-v1`` and a NUL byte;
- then the fields in this order: statement, target, role, requester, policy
  version, each as one *item*; then the parameter count as 8 bytes big-endian
  and each parameter as one item;
- an item is ``N`` for None (a NULL parameter, or no role) or ``S``, the length
  of its UTF-8 bytes as 8 bytes big-endian, and those bytes.

Length prefixes mean no choice of values can make two different tuples encode
the same (``("ab", "c")`` vs ``("a", "bc")``), and None is distinct from ``""``.
Lone surrogates (text decoded with ``surrogateescape``) are encoded with
``surrogatepass`` so that undecodable bytes still hash, and distinctly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["binding_hash", "canonical_binding"]

_HEADER = b"pgwarden-approval-binding-v1\x00"


def _item(value: str | None) -> bytes:
    if value is None:
        return b"N"
    data = value.encode("utf-8", "surrogatepass")
    return b"S" + len(data).to_bytes(8, "big") + data


def canonical_binding(statement: str, parameters: Sequence[str | None], target: str, role: str | None,
                      requester: str, policy_version: str) -> bytes:
    """The canonical encoding described in the module docstring."""
    parts = [_HEADER, _item(statement), _item(target), _item(role), _item(requester), _item(policy_version),
             len(parameters).to_bytes(8, "big")]
    parts.extend(_item(p) for p in parameters)
    return b"".join(parts)


def binding_hash(statement: str, parameters: Sequence[str | None], target: str, role: str | None,
                 requester: str, policy_version: str) -> str:
    """Hex SHA-256 of :func:`canonical_binding`."""
    return hashlib.sha256(canonical_binding(statement, parameters, target, role, requester,
                                            policy_version)).hexdigest()
