"""What a statement leaves behind in the session, as the decision saw it: the session's bookkeeping.

A door must know, after a text ran, which prepared statements and cursors exist on the
server and what each of them reads, so that a later ``EXECUTE`` or ``FETCH`` is decided
against the right analysis. The analysis already knows; :func:`effects_of` hands it over
with the verdict, so the session never analyses a text a second time. ``schema_changed``
tells the session to reload the target's catalog; ``copy`` says which way a COPY flows.
"""

from __future__ import annotations

from dataclasses import dataclass

from .analysis import Analysis, StatementAnalysis, StatementClass

__all__ = ["ALL", "StatementEffects", "effects_of"]

ALL = "*"  # DEALLOCATE ALL / CLOSE ALL


@dataclass(frozen=True, slots=True)
class StatementEffects:
    """The effects of statement ``index`` of a text."""

    index: int
    prepares: str | None = None  # PREPARE name
    deallocates: str | None = None  # DEALLOCATE name, or ALL
    declares: str | None = None  # DECLARE name CURSOR
    closes: str | None = None  # CLOSE name, or ALL
    schema_changed: bool = False
    copy: str | None = None  # "stdout" | "stdin" | "file" | "program"
    copy_header: bool = False  # COPY … TO STDOUT sends a header line first (csv HEADER): not a row
    ends_transaction: bool = False  # COMMIT / ROLLBACK / END: cursors without HOLD close
    analysis: StatementAnalysis | None = None  # what PREPARE / DECLARE will read when executed


_TXN_END = frozenset({"COMMIT", "ROLLBACK", "END", "ABORT", "COMMIT PREPARED", "ROLLBACK PREPARED",
                      "PREPARE TRANSACTION"})


def _one(index: int, st: StatementAnalysis) -> StatementEffects | None:
    node = st.node
    ddl = StatementClass.DDL in st.classes
    if st.prepared_name and node == "PrepareStmt":
        return StatementEffects(index, prepares=st.prepared_name, schema_changed=ddl, analysis=st)
    if node == "DeclareCursorStmt" and st.cursor_name:
        return StatementEffects(index, declares=st.cursor_name, schema_changed=ddl, analysis=st)
    if node == "DeallocateStmt":
        name = st.details.dropped_name
        return StatementEffects(index, deallocates=ALL if name is None else str(name))
    if node == "ClosePortalStmt":
        name = st.details.dropped_name
        return StatementEffects(index, closes=ALL if name is None else str(name))
    if node == "DiscardStmt" and st.details.discard == "DISCARD_ALL":
        return StatementEffects(index, deallocates=ALL, closes=ALL)
    ends = node == "TransactionStmt" and st.command_tag in _TXN_END
    if ddl or st.copy_target or ends:
        return StatementEffects(index, schema_changed=ddl, copy=st.copy_target, ends_transaction=ends,
                                copy_header=st.copy_target == "stdout" and _header(st.details.copy_options))
    return None


def _header(options) -> bool:
    """Whether COPY's HEADER option is on as PostgreSQL reads it (no value, true/on, 1). Anything else is
    read as off: a header line taken for a row only makes a cut result one row shorter, never longer."""
    value = (options or {}).get("header")
    return value is not None and str(value).lower() in ("true", "on", "1")


_QUIET = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})


def effects_of(analysis: Analysis) -> tuple[StatementEffects, ...]:
    """The effects of every statement of ``analysis`` that has any, in text order."""
    statements = analysis.statements
    if len(statements) == 1:
        st = statements[0]
        if st.node in _QUIET and not st.copy_target and StatementClass.DDL not in st.classes:
            return ()  # (the common case, as _one decides it: a query or DML leaves nothing; SELECT INTO is DDL)
    out = []
    for index, st in enumerate(analysis.statements):
        effect = _one(index, st)
        if effect is not None:
            out.append(effect)
    return tuple(out)
