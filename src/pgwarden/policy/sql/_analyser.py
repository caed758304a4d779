"""SQL analysis: query text → :class:`~pgwarden.policy.analysis.Analysis`.

The text is parsed by PostgreSQL's own parser (pglast / libpg_query) into its
JSON tree, split into top-level statements, and each statement is classified
and walked. Queries go through :class:`~pgwarden.policy.sql._lineage.QueryWalker`
for lineage; utility statements are classified by node type and then walked
generically so that every function call and every relation anywhere in them
(a ``DEFAULT`` expression, an ``ALTER … USING`` clause) is still seen.

Nothing here guesses in the agent's favour: an unknown statement node, a FROM
item of a kind not handled, a prepared statement or cursor the session did not
see created — each is written to ``unknown`` and the decision denies.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pglast import parser
from pglast.parser import ParseError

from ..analysis import (
    NO_DETAILS,
    Access,
    Analysis,
    ColumnId,
    SettingChange,
    StatementAnalysis,
    StatementClass,
    StatementDetails,
)
from ..builtins import LITERAL_FUNCTIONS
from ._lineage import QueryWalker
from ._scope import EMPTY, Facts, Scope, Value, to_outputs
from ._statements import UTILITY, command_tag
from ._tree import Node, _node, _strings


@dataclass(frozen=True)
class SessionFacts:
    """What the engine's session knows that the text alone does not."""

    prepared: Mapping[str, StatementAnalysis] = field(default_factory=dict)
    cursors: Mapping[str, StatementAnalysis] = field(default_factory=dict)


NO_SESSION = SessionFacts()


def analyse(sql: str, catalog, session: SessionFacts = NO_SESSION) -> Analysis:
    """Analyse every statement of ``sql`` against ``catalog``."""
    try:
        text = parser.parse_sql_json(sql)
    except ParseError as exc:
        return Analysis(sql, (), error=str(exc))
    try:
        tree = orjson.loads(text)
        return _analyse_tree(sql, tree, catalog, session)
    except (orjson.JSONDecodeError, RecursionError):
        # Long but ordinary chains (UNION ALL of hundreds of SELECTs, arithmetic of hundreds of terms)
        # nest deeper than orjson's and the interpreter's default limits: analyse them again with
        # room for _DEEP_LIMIT levels, on a thread of its own with a stack sized for them.
        return _analyse_deep(sql, text, catalog, session)


_TOO_DEEP = "the statement nests expressions or queries deeper than the gateway checks"
_DEEP_LIMIT = 30_000  # nesting levels of the parse tree, walk included; deeper is refused as too complex
_DEEP_STACK = 512 << 20  # bytes of (virtual) stack for that thread
_DEEP_LOCK = threading.Lock()


_MAX_NESTING = 600  # levels of real nesting (a function call in a function call…); see _nesting
_CHAIN_KEYS = frozenset({"lexpr", "rexpr", "larg", "rarg"})  # a + b + c …, SELECT … UNION ALL SELECT …


def _nesting(tree: Any) -> int:
    """How deep ``tree`` nests: one level per node inside a field of another node, except the links of a
    chain (operands of an operator, branches of a set operation, arguments of AND / OR), which count none."""
    deepest = 0
    stack: list[tuple[Any, int, str]] = [(tree, 0, "")]
    while stack:
        node, depth, owner = stack.pop()  # owner: the node type whose field holds ``node``
        if depth > deepest:
            deepest = depth
        if isinstance(node, list):
            stack.extend((item, depth, owner) for item in node if isinstance(item, (dict, list)))
            continue
        for key, value in node.items():
            if not isinstance(value, (dict, list)):
                continue
            if key[:1].isupper():  # {"FuncCall": {...}}: the node's own fields, same level
                stack.append((value, depth, key))
            elif key in _CHAIN_KEYS or (owner == "BoolExpr" and key == "args"):
                stack.append((value, depth, owner))
            else:
                stack.append((value, depth + 1, owner))
    return deepest


def _analyse_deep(sql: str, text: str, catalog, session: SessionFacts) -> Analysis:
    result: list[Analysis] = []

    def work() -> None:
        try:
            tree = json.loads(text)
            if _nesting(tree) > _MAX_NESTING:
                result.append(Analysis(sql, (), error=_TOO_DEEP, error_code="too_complex"))
                return
            result.append(_analyse_tree(sql, tree, catalog, session))
        except RecursionError:
            result.append(Analysis(sql, (), error=_TOO_DEEP, error_code="too_complex"))

    with _DEEP_LOCK:  # the recursion limit and thread stack size are process-wide settings
        old_limit, old_stack = sys.getrecursionlimit(), threading.stack_size()
        try:
            threading.stack_size(_DEEP_STACK)
            sys.setrecursionlimit(max(old_limit, _DEEP_LIMIT))
            worker = threading.Thread(target=work, name="pgwarden-deep-analysis")
            worker.start()
            worker.join()
        finally:
            sys.setrecursionlimit(old_limit)
            threading.stack_size(old_stack)
    return result[0] if result else Analysis(sql, (), error=_TOO_DEEP, error_code="too_complex")


def _analyse_tree(sql: str, tree: dict, catalog, session: SessionFacts) -> Analysis:
    encoded = None
    ascii_only = sql.isascii()
    statements = []
    for raw in tree.get("stmts") or ():
        start = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0)
        if start or length:
            # libpg_query locations are byte offsets into the UTF-8 text (in ASCII text,
            # character offsets too: no need to encode and decode it).
            end = start + length if length else None
            if ascii_only:
                text = sql[start:end].strip()
            else:
                if encoded is None:
                    encoded = sql.encode()
                text = encoded[start:end].decode(errors="replace").strip()
        else:
            text = sql.strip()
        st = _statement(text, raw.get("stmt") or {}, catalog, session)
        statements.append(st)
        # A cursor or prepared statement made earlier in the same text is known to the later ones
        # (BEGIN; DECLARE c …; FETCH … FROM c; COMMIT).
        if st.node == "DeclareCursorStmt" and st.cursor_name and not st.unknown:
            session = SessionFacts(session.prepared, {**session.cursors, st.cursor_name: st})
        elif st.prepared_name and not st.unknown:
            session = SessionFacts({**session.prepared, st.prepared_name: st}, session.cursors)
    return Analysis(sql, tuple(statements))


def _statement(text: str, wrapper: Node, catalog, session: SessionFacts) -> StatementAnalysis:
    kind, node = _node(wrapper)
    facts = Facts()
    walker = QueryWalker(catalog, facts)
    extra: dict[str, Any] = {}
    outputs: list = []

    if kind in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
        if kind == "SelectStmt":
            facts.classes.add(StatementClass.READ)
        outputs = walker.query(kind, node, None, nested_label="top")
    elif kind == "ExplainStmt":
        extra = _explain(node, walker, facts)
    elif kind == "CopyStmt":
        extra, outputs = _copy(node, walker, facts)
    elif kind == "PrepareStmt":
        extra["prepared_name"] = node.get("name")
        ikind, inner = _node(node.get("query") or {})
        inner_outputs = walker.query(ikind, inner, None, nested_label="prepare")
        if ikind == "SelectStmt":
            facts.classes.add(StatementClass.READ)
        facts.nested.append("prepare")
        outputs = inner_outputs  # what EXECUTE will return; the engine keeps this analysis by name
    elif kind == "ExecuteStmt":
        extra["execute_name"] = node.get("name")
        for param in node.get("params") or ():
            facts.written_sources |= walker.expression(param, Scope()).sources
        outputs = _from_session(node.get("name"), session.prepared, "prepared statement", facts, extra)
    elif kind == "DeclareCursorStmt":
        extra["cursor_name"] = node.get("portalname")
        ikind, inner = _node(node.get("query") or {})
        inner_outputs = walker.query(ikind, inner, None, nested_label="cursor")
        facts.classes.add(StatementClass.READ)
        facts.nested.append("cursor")
        outputs = inner_outputs  # what FETCH will return; the engine keeps this analysis by name
    elif kind == "FetchStmt":
        extra["cursor_name"] = node.get("portalname")
        if node.get("ismove"):
            facts.classes.add(StatementClass.READ)
        else:
            outputs = _from_session(node.get("portalname"), session.cursors, "cursor", facts, extra)
    elif kind == "CreateTableAsStmt":
        _create_table_as(node, walker, facts, extra)
    elif kind == "VariableSetStmt":
        extra["settings"] = _set_statement(node, facts, extra)
    elif kind == "TransactionStmt":
        facts.classes.add(StatementClass.TRANSACTION)
        if node.get("kind") in ("TRANS_STMT_PREPARE", "TRANS_STMT_COMMIT_PREPARED",
                                "TRANS_STMT_ROLLBACK_PREPARED"):
            facts.classes.add(StatementClass.ADMIN)  # two-phase commit outlives the session
        if _read_write_requested(node.get("options")):
            extra["read_write_transaction"] = True
    elif kind == "AlterSystemStmt":
        facts.classes.add(StatementClass.ADMIN)
        inner = node.get("setstmt") or {}
        extra["settings"] = (SettingChange((inner.get("name") or "all").lower(), _set_value(inner)),)
        extra["alter_system"] = True
    elif kind in UTILITY:
        klass, access = UTILITY[kind]
        facts.classes.add(klass)
        _utility(kind, node, walker, facts, access, extra)
    else:
        facts.unknown.append(f"statement type {kind or 'empty'} is not understood by the gateway")

    functions = facts.functions
    if functions and any(f.name in _WRITING_FUNCTIONS and f.schema in (None, "pg_catalog")
                         for f in functions):
        facts.classes.add(StatementClass.WRITE)  # they change a sequence: PostgreSQL refuses them read-only
    if not facts.classes and not facts.unknown:
        facts.unknown.append(f"statement type {kind} has no class")
    # Built positionally, and only converting what is non-empty: with two dozen
    # fields, keyword passing and empty conversions are a measurable share of a verdict.
    predicate_sources, written_sources = facts.predicate_sources, facts.written_sources
    referenced = facts.referenced
    if predicate_sources or written_sources:
        referenced = referenced | predicate_sources | written_sources
    # Facts carried in ``extra`` become fields; the rest become the typed ``details``.
    settings = extra.pop("settings", ()) if extra else ()
    explain_analyze = extra.pop("explain_analyze", False) if extra else False
    copy_target = extra.pop("copy_target", None) if extra else None
    read_write_transaction = extra.pop("read_write_transaction", False) if extra else False
    prepared_name = extra.pop("prepared_name", None) if extra else None
    execute_name = extra.pop("execute_name", None) if extra else None
    cursor_name = extra.pop("cursor_name", None) if extra else None
    creates_temp = extra.pop("creates_temp", False) if extra else False
    if walker.pins:
        extra["catalog_pins"] = walker.pins
    return StatementAnalysis(  # every field, in declaration order
        text,
        kind,  # node
        command_tag(kind, node),
        frozenset(facts.classes),
        # relations, functions: without repeats, in first-seen order (no dict needed for one)
        tuple(facts.relations) if len(facts.relations) < 2 else tuple(dict.fromkeys(facts.relations)),
        tuple(functions) if len(functions) < 2 else tuple(dict.fromkeys(functions)),
        outputs if isinstance(outputs, tuple) else to_outputs(outputs),
        frozenset(predicate_sources) if predicate_sources else _NOTHING,
        frozenset(written_sources) if written_sources else _NOTHING,
        frozenset(facts.whole_row_refs) if facts.whole_row_refs else _NOTHING,
        frozenset(referenced) if referenced else _NOTHING,
        facts.missing_where,
        settings,
        tuple(dict.fromkeys(facts.nested)) if facts.nested else (),  # nested
        explain_analyze,
        copy_target,
        read_write_transaction,
        prepared_name,
        execute_name,
        cursor_name,
        creates_temp,
        tuple(dict.fromkeys(facts.unknown)) if facts.unknown else (),  # unknown
        (kind not in _QUERIES or facts.missing_where or bool(walker.pins)
         # a cast of a literal is judged by the literal's type (see _checks._cast): noted only where the
         # catalog has user casts
         or (bool(functions) and any(f.name in LITERAL_FUNCTIONS or (f.kind == "cast" and f.first_arg is not None)
                                     for f in functions))),  # literal_dependent
        StatementDetails(**extra) if extra else NO_DETAILS,  # details
        tuple(facts.relation_refs) if facts.relation_refs else (),  # relation_refs
        tuple(facts.written_columns) if facts.written_columns else (),  # written
    )


_NOTHING: frozenset = frozenset()


# -- statement kinds ---------------------------------------------------------------------


def _explain(node: Node, walker: QueryWalker, facts: Facts) -> dict[str, Any]:
    options = {}
    for wrapper in node.get("options") or ():
        opt = wrapper.get("DefElem") or {}
        options[opt.get("defname", "")] = _def_bool(opt)
    analyze = bool(options.get("analyze"))
    ikind, inner = _node(node.get("query") or {})
    if analyze:
        facts.nested.append("explain_analyze")
        if ikind == "SelectStmt":
            facts.classes.add(StatementClass.READ)
        walker.query(ikind, inner, None, nested_label="explain") if ikind in _QUERIES else _nested_other(
            ikind, inner, walker, facts)
        return {"explain_analyze": True}
    # Planned only: the inner statement's relations are named but nothing executes.
    facts.classes.add(StatementClass.READ)
    inner_facts = Facts()
    inner_walker = QueryWalker(walker.catalog, inner_facts, walker.active_views)
    if ikind in _QUERIES:
        inner_walker.query(ikind, inner, None, nested_label="explain")
    else:
        _nested_other(ikind, inner, inner_walker, inner_facts)
    for rel in inner_facts.relations:
        facts.relations.append(type(rel)(rel.schema, rel.name, Access.PLAN, rel.resolved, rel.via_view, rel.kind))
    facts.functions.extend(inner_facts.functions)  # constant folding may call them at plan time
    # The plan's row estimates for a predicate come from the column's statistics (most
    # common values, histogram): planning a filter on a masked column is an oracle too.
    facts.predicate_sources |= inner_facts.predicate_sources
    facts.referenced |= inner_facts.referenced
    facts.unknown.extend(inner_facts.unknown)
    facts.nested.append("explain")
    return {}


_WRITING_FUNCTIONS = frozenset({"nextval", "setval"})
_QUERIES = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})


def _nested_other(kind: str, node: Node, walker: QueryWalker, facts: Facts) -> None:
    # EXPLAIN [ANALYZE] of CREATE TABLE AS / EXECUTE / DECLARE
    if kind == "CreateTableAsStmt":
        _create_table_as(node, walker, facts, {})
    elif kind == "ExecuteStmt":
        facts.unknown.append("EXPLAIN EXECUTE is not supported through the gateway; explain the query itself")
    elif kind == "DeclareCursorStmt":
        ikind, inner = _node(node.get("query") or {})
        walker.query(ikind, inner, None, nested_label="cursor")
        facts.classes.add(StatementClass.READ)
    else:
        facts.unknown.append(f"EXPLAIN of {kind or 'empty'} is not understood")


def _copy(node: Node, walker: QueryWalker, facts: Facts) -> tuple[dict[str, Any], list]:
    extra: dict[str, Any] = {}
    filename = node.get("filename")
    if node.get("is_program"):
        extra["copy_target"] = "program"
    elif filename is not None:
        extra["copy_target"] = "file"
    else:
        extra["copy_target"] = "stdin" if node.get("is_from") else "stdout"
    options = {}
    for wrapper in node.get("options") or ():
        opt = wrapper.get("DefElem") or {}
        arg = opt.get("arg")
        options[opt.get("defname", "")] = _const_text(arg) if arg else "true"
    extra["copy_options"] = options
    outputs: list = []
    rv = node.get("relation")
    attlist = _strings(node.get("attlist"))
    if rv:
        extra["copy_relation"] = True  # COPY t [(cols)]: the mask rewrite turns it into COPY (SELECT …)
        access = Access.INSERT if node.get("is_from") else Access.READ
        entry = walker.relation_entry(rv, None, access)
        cols = entry.all_columns()
        if attlist:
            cols = [(name, entry.column(name) or EMPTY) for name in attlist]
        if node.get("is_from"):
            facts.classes.add(StatementClass.WRITE)
            walker._assigns(rv, tuple(attlist) or ("*",))
            walker.predicates(node.get("whereClause"), Scope(entries=[entry]))
        else:
            facts.classes.add(StatementClass.READ)
            outputs = cols
    else:
        ikind, inner = _node(node.get("query") or {})
        outputs = walker.query(ikind, inner, None, nested_label="copy")
        if ikind == "SelectStmt":
            facts.classes.add(StatementClass.READ)
        facts.nested.append("copy_query")
    return extra, outputs


def _create_table_as(node: Node, walker: QueryWalker, facts: Facts, extra: dict[str, Any]) -> None:
    into = node.get("into") or {}
    rel = into.get("rel") or {}
    facts.classes.add(StatementClass.DDL)
    walker.note_relation(rel.get("schemaname"), rel.get("relname", ""), Access.DDL, rel.get("relpersistence"))
    if rel.get("relpersistence") == "t":
        extra["creates_temp"] = True
    ikind, inner = _node(node.get("query") or {})
    if ikind == "ExecuteStmt":
        facts.unknown.append("CREATE TABLE AS EXECUTE is not supported through the gateway")
        return
    outputs = walker.query(ikind, inner, None, nested_label="create_table_as")
    facts.nested.append("create_table_as")
    for _, value in outputs:
        facts.written_sources |= value.sources
    # Predicates decide which rows are copied: they launder too.
    facts.written_sources |= facts.predicate_sources


def _from_session(name: str | None, known: Mapping[str, StatementAnalysis], what: str, facts: Facts,
                  extra: dict[str, Any]) -> tuple:
    prior = known.get(name or "")
    if prior is None:
        facts.unknown.append(f"{what} {name!r} was not created through this gateway session")
        return ()
    # The earlier statement's facts are this one's: the same rows, masks and limits apply.
    facts.classes.update(prior.classes)
    facts.relations.extend(prior.relations)
    facts.functions.extend(prior.functions)
    facts.predicate_sources |= prior.predicate_sources
    facts.written_sources |= prior.written_sources
    facts.whole_row_refs |= prior.whole_row_refs
    facts.missing_where = facts.missing_where or prior.missing_where
    facts.unknown.extend(prior.unknown)
    extra["from_session"] = prior.text
    return prior.outputs


def _set_statement(node: Node, facts: Facts, extra: dict[str, Any]) -> tuple[SettingChange, ...]:
    kind = node.get("kind", "")
    name = (node.get("name") or "").lower()
    local = bool(node.get("is_local"))
    if kind == "VAR_SET_MULTI":
        facts.classes.add(StatementClass.TRANSACTION if name == "transaction" else StatementClass.SESSION)
        if _read_write_requested(node.get("args")):
            extra["read_write_transaction"] = True
        changes = []
        for wrapper in node.get("args") or ():
            opt = wrapper.get("DefElem") or {}
            changes.append(SettingChange(
                f"{name.replace(' ', '_')}.{opt.get('defname', '')}",
                _const_text(opt.get("arg")), is_local=local))
        return tuple(changes) or (SettingChange(name.replace(" ", "_"), None, is_local=local),)
    facts.classes.add(StatementClass.SESSION)
    if kind == "VAR_RESET_ALL":
        return (SettingChange("all", None, reset=True),)
    if kind == "VAR_RESET":
        return (SettingChange(name, None, reset=True),)
    items = tuple(t for t in (_const_text(a) for a in node.get("args") or []) if t is not None)
    return (SettingChange(name, _set_value(node), is_local=local, reset=kind == "VAR_SET_DEFAULT", items=items),)


def _set_value(node: Node) -> str | None:
    args = node.get("args") or []
    parts = [_const_text(a) for a in args]
    return ", ".join(p for p in parts if p is not None) if parts else None


def _utility(kind: str, node: Node, walker: QueryWalker, facts: Facts, access: Access,
             extra: dict[str, Any]) -> None:
    """Classify a utility statement, then walk all of it for relations and functions."""
    if kind == "DropStmt":
        remove = node.get("removeType", "")
        if remove in _DROP_RELATIONS:
            for obj in node.get("objects") or ():
                names = _strings((obj.get("List") or {}).get("items"))
                if names:
                    walker.note_relation(names[-2] if len(names) >= 2 else None, names[-1], Access.DDL)
        facts.nested.append("drop")
    if kind == "DoStmt":
        facts.nested.append("do_block")
    if kind == "CreateFunctionStmt":
        facts.nested.append("create_function")
    if kind == "DiscardStmt":
        extra["discard"] = node.get("target")  # DISCARD_ALL, DISCARD_PLANS, DISCARD_SEQUENCES, DISCARD_TEMP
    if kind == "DeallocateStmt":
        extra["dropped_name"] = node.get("name")  # None: DEALLOCATE ALL
    if kind == "ClosePortalStmt":
        extra["dropped_name"] = node.get("portalname")  # None: CLOSE ALL
    if kind == "AlterTableStmt":
        extra["alter_subtypes"] = tuple(
            (cmd.get("AlterTableCmd") or {}).get("subtype", "") for cmd in node.get("cmds") or ())
    if kind == "CallStmt":
        walker.function_call(node.get("funccall") or {})
    _walk_utility(node, walker, facts, access)


_DROP_RELATIONS = frozenset({
    "OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_INDEX", "OBJECT_SEQUENCE",
    "OBJECT_FOREIGN_TABLE",
})


def _walk_utility(node: Any, walker: QueryWalker, facts: Facts, access: Access) -> None:
    """Every RangeVar, query and function anywhere in a utility statement's tree."""
    target = None
    if isinstance(node, dict) and "cmds" in node and isinstance(node.get("relation"), dict):
        rv = node["relation"]
        rel = walker.catalog.resolve_relation(rv.get("schemaname"), rv.get("relname", ""))
        target = (rel.schema, rel.name) if rel else (rv.get("schemaname") or walker.catalog.default_schema(
            rv.get("relname", "")), rv.get("relname", ""))
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if key in _QUERIES:
                walker.query(key, value, None, nested_label="utility")
            elif isinstance(value, dict) and "relname" in value:
                # RangeVar, wrapped or as a typed field (relation, view, pktable, sequence, table…)
                walker.note_relation(value.get("schemaname"), value.get("relname", ""), access)
            elif key == "FuncCall":
                walker.function_call(value)
                stack.append(value.get("args"))
            elif key == "ColumnRef":
                if target is not None:
                    # ALTER TABLE … GENERATED AS (col) / USING (col) / CHECK (col …):
                    # values of the table's columns flow into a column or an error.
                    fields = _strings(value.get("fields"))
                    if fields and fields[-1] != "*":
                        facts.written_sources.add(ColumnId(target[0], target[1], fields[-1]))
            elif key == "SubLink":
                skind, sub = _node(value.get("subselect") or {})
                walker.query(skind, sub, None, nested_label="utility")
            elif key in ("query", "subquery", "ctequery") and isinstance(value, dict):
                qkind, qnode = _node(value)
                if qkind in _QUERIES:
                    walker.query(qkind, qnode, None, nested_label="utility")
                else:
                    stack.append(value)
            elif isinstance(value, (dict, list)):
                stack.append(value)


def _def_bool(opt: Node) -> bool:
    arg = opt.get("arg")
    if arg is None:
        return True
    text = (_const_text(arg) or "").lower()
    return text not in ("false", "off", "0", "no")


def _read_write_requested(options: list[Node] | None) -> bool:
    for wrapper in options or ():
        opt = wrapper.get("DefElem") or {}
        if opt.get("defname") == "transaction_read_only" and not _int_value(opt.get("arg")):
            return True
    return False


def _int_value(arg: Node | None) -> int:
    const = (arg or {}).get("A_Const") or {}
    ival = const.get("ival")
    if ival is not None:
        return int(ival.get("ival", 0))
    return 1


def _const_text(arg: Node | None) -> str | None:
    if not arg:
        return None
    if "A_Const" in arg:
        const = arg["A_Const"]
        if const.get("isnull"):
            return None
        for key, inner in (("sval", "sval"), ("ival", "ival"), ("fval", "fval"), ("boolval", "boolval"),
                           ("bsval", "bsval")):
            if key in const:
                value = const[key].get(inner, 0 if key == "ival" else False if key == "boolval" else "")
                return str(value).lower() if key == "boolval" else str(value)
        return None
    for key in ("String", "Integer", "Float", "Boolean"):
        if key in arg:
            inner = arg[key]
            return str(next(iter(inner.values()), 0 if key == "Integer" else ""))
    if "TypeCast" in arg:
        return _const_text(arg["TypeCast"].get("arg"))
    if "List" in arg:
        return ", ".join(t for t in (_const_text(i) for i in arg["List"].get("items") or ()) if t)
    return None


__all__ = ["NO_SESSION", "SessionFacts", "Value", "analyse"]


def shape_key(sql: str) -> str | None:
    """pg_query's normalisation of ``sql`` (literals replaced by ``$n``), or None.

    None when the text does not parse or is its own normalisation (no literals, or client
    ``$n`` parameters): such a text keeps to the exact-text cache. None too for any text holding a
    ``$``: pg_query numbers its placeholders after the client's own, so ``SELECT '$1', 5`` and
    ``SELECT $1, '$2'`` would share a key while one reads a parameter where the other has a literal.
    """
    if "$" in sql:
        return None
    try:
        normalized = parser.normalize(sql)
    except ParseError:
        return None
    return None if normalized == sql else normalized
