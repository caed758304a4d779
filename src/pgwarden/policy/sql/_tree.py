"""Small readers of libpg_query's JSON parse tree: names, node unwrapping, output names, constants."""

from __future__ import annotations

from typing import Any

Node = dict[str, Any]
WILDCARD = "*"


def _strings(items: list[Node] | None) -> list[str]:
    out = []
    for item in items or ():
        s = item.get("String")
        if s is not None:
            out.append(s.get("sval", ""))
        elif "A_Star" in item:
            out.append(WILDCARD)
    return out


def _node(wrapper: Node) -> tuple[str, Node]:
    """``{"SelectStmt": {...}}`` → ("SelectStmt", {...})."""
    for key, value in wrapper.items():
        return key, value
    return "", {}


# FigureColname-like output names for the common node kinds
def output_name(target: Node) -> str:
    name = target.get("name")
    if name:
        return name
    val = target.get("val") or {}
    return _figure_name(val) or "?column?"


def _figure_name(val: Node) -> str | None:
    kind, node = _node(val)
    if kind == "ColumnRef":
        fields = _strings(node.get("fields"))
        return fields[-1] if fields else None
    if kind == "FuncCall":
        names = _strings(node.get("funcname"))
        return names[-1] if names else None
    if kind == "TypeCast":
        inner = _figure_name(node.get("arg") or {})
        if inner:
            return inner
        names = _strings((node.get("typeName") or {}).get("names"))
        return names[-1] if names else None
    if kind == "A_Indirection":
        ind = _strings(node.get("indirection"))
        return ind[-1] if ind else _figure_name(node.get("arg") or {})
    if kind == "CaseExpr":
        return "case"
    if kind == "CoalesceExpr":
        return "coalesce"
    if kind == "MinMaxExpr":
        return "greatest" if node.get("op") == "IS_GREATEST" else "least"
    if kind == "SubLink" and node.get("subLinkType") == "EXPR_SUBLINK":
        _inner_kind, inner = _node(node.get("subselect") or {})
        targets = inner.get("targetList") or []
        if targets:
            return output_name(targets[0]["ResTarget"])
    if kind == "SubLink" and node.get("subLinkType") == "ARRAY_SUBLINK":
        return "array"
    if kind == "A_ArrayExpr":
        return "array"
    if kind == "RowExpr":
        return "row"
    return None


# Set-returning functions that always return exactly one column, whatever their arguments.
# (unnest is not one: unnest of a composite array, or with several arrays, returns several.)
_SINGLE_COLUMN_FUNCTIONS = frozenset({
    "generate_series", "generate_subscripts", "regexp_split_to_table", "string_to_table",
    "json_array_elements", "json_array_elements_text", "jsonb_array_elements", "jsonb_array_elements_text",
    "json_object_keys", "jsonb_object_keys", "jsonb_path_query", "regexp_matches",
})


def _known_width(call: Node) -> int | None:
    func = call.get("FuncCall") if isinstance(call, dict) else None
    if func is None:
        return None
    names = _strings(func.get("funcname"))
    if names and names[-1] in _SINGLE_COLUMN_FUNCTIONS and (len(names) == 1 or names[0] == "pg_catalog"):
        return 1
    if names and names[-1] in ("json_each", "jsonb_each", "json_each_text", "jsonb_each_text"):
        return 2
    return None


def _integer_constant(node: Any) -> int | None:
    const = node.get("A_Const") if isinstance(node, dict) else None
    if const is None or "ival" not in const:
        return None
    return int(const["ival"].get("ival", 0))


def _is_column_ref(node: Any) -> bool:
    return isinstance(node, dict) and "ColumnRef" in node


def _is_constant(node: Any) -> bool:
    """True when a WHERE clause refers to no column at all.

    ``WHERE true``, ``WHERE 1 = 1``, ``WHERE $1 = $2`` or ``WHERE random() < 0.5``
    do not name rows: they touch all of them, none, or a random share.
    """
    if isinstance(node, dict):
        if "ColumnRef" in node:
            return False
    elif not isinstance(node, list):
        return True
    # Only containers go on the stack, each dict checked as it is met: half the work
    # of stacking every value.
    stack = [node]
    push = stack.append
    while stack:
        item = stack.pop()
        for value in item.values() if isinstance(item, dict) else item:
            if isinstance(value, dict):
                if "ColumnRef" in value:
                    return False
                push(value)
            elif isinstance(value, list):
                push(value)
    return True
