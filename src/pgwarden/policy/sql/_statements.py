"""Statement classification: parse node → statement class, access kind, command tag.

One table for every utility statement the gateway understands. A node type
missing here is reported as unknown by the analyser, and so denied: adding a
PostgreSQL statement to the gateway means adding it here, deliberately.
"""

from __future__ import annotations

from typing import Any

from ..analysis import Access, StatementClass

R, W, D, A, T, S, L = (StatementClass.READ, StatementClass.WRITE, StatementClass.DDL, StatementClass.ADMIN,
                       StatementClass.TRANSACTION, StatementClass.SESSION, StatementClass.LOCK)

# node → (class, access recorded for the relations it names)
UTILITY: dict[str, tuple[StatementClass, Access]] = {
    # schema changes
    "CreateStmt": (D, Access.DDL), "AlterTableStmt": (D, Access.DDL), "DropStmt": (D, Access.DDL),
    "IndexStmt": (D, Access.DDL), "ViewStmt": (D, Access.DDL), "RenameStmt": (D, Access.DDL),
    "CommentStmt": (D, Access.DDL), "CreateSeqStmt": (D, Access.DDL), "AlterSeqStmt": (D, Access.DDL),
    "CreateEnumStmt": (D, Access.DDL), "AlterEnumStmt": (D, Access.DDL), "CompositeTypeStmt": (D, Access.DDL),
    "CreateDomainStmt": (D, Access.DDL), "AlterDomainStmt": (D, Access.DDL), "CreateSchemaStmt": (D, Access.DDL),
    "CreateFunctionStmt": (D, Access.DDL), "AlterFunctionStmt": (D, Access.DDL),
    "CreateTrigStmt": (D, Access.DDL), "RuleStmt": (D, Access.DDL), "DefineStmt": (D, Access.DDL),
    "AlterObjectSchemaStmt": (D, Access.DDL), "CreateStatsStmt": (D, Access.DDL),
    "AlterStatsStmt": (D, Access.DDL), "CreateCastStmt": (D, Access.DDL), "CreateRangeStmt": (D, Access.DDL),
    "AlterTypeStmt": (D, Access.DDL), "CreatePolicyStmt": (A, Access.DDL), "AlterPolicyStmt": (A, Access.DDL),
    "RefreshMatViewStmt": (W, Access.UPDATE), "CreateConversionStmt": (D, Access.DDL),
    "CreateOpClassStmt": (A, Access.DDL), "CreateOpFamilyStmt": (A, Access.DDL),
    "AlterOpFamilyStmt": (A, Access.DDL), "CreateTransformStmt": (A, Access.DDL),
    "AlterCollationStmt": (A, Access.DDL), "CreatePLangStmt": (A, Access.DDL),
    # data changes outside DML
    "TruncateStmt": (W, Access.TRUNCATE), "CallStmt": (W, Access.READ), "DoStmt": (W, Access.READ),
    # administration
    "VacuumStmt": (A, Access.READ), "ClusterStmt": (A, Access.DDL), "ReindexStmt": (A, Access.DDL),
    "GrantStmt": (A, Access.DDL), "GrantRoleStmt": (A, Access.DDL), "CreateRoleStmt": (A, Access.DDL),
    "AlterRoleStmt": (A, Access.DDL), "AlterRoleSetStmt": (A, Access.DDL), "DropRoleStmt": (A, Access.DDL),
    "AlterOwnerStmt": (A, Access.DDL), "AlterDefaultPrivilegesStmt": (A, Access.DDL),
    "ReassignOwnedStmt": (A, Access.DDL), "DropOwnedStmt": (A, Access.DDL), "CheckPointStmt": (A, Access.READ),
    "LoadStmt": (A, Access.READ), "CreatedbStmt": (A, Access.DDL), "DropdbStmt": (A, Access.DDL),
    "AlterDatabaseStmt": (A, Access.DDL), "AlterDatabaseSetStmt": (A, Access.DDL),
    "AlterDatabaseRefreshCollStmt": (A, Access.DDL),
    "CreateExtensionStmt": (A, Access.DDL), "AlterExtensionStmt": (A, Access.DDL),
    "AlterExtensionContentsStmt": (A, Access.DDL), "CreateTableSpaceStmt": (A, Access.DDL),
    "DropTableSpaceStmt": (A, Access.DDL), "AlterTableSpaceOptionsStmt": (A, Access.DDL),
    "AlterTableMoveAllStmt": (A, Access.DDL), "SecLabelStmt": (A, Access.DDL), "CreateFdwStmt": (A, Access.DDL),
    "AlterFdwStmt": (A, Access.DDL), "CreateForeignServerStmt": (A, Access.DDL),
    "AlterForeignServerStmt": (A, Access.DDL), "CreateForeignTableStmt": (A, Access.DDL),
    "CreateUserMappingStmt": (A, Access.DDL), "AlterUserMappingStmt": (A, Access.DDL),
    "DropUserMappingStmt": (A, Access.DDL), "ImportForeignSchemaStmt": (A, Access.DDL),
    "CreateEventTrigStmt": (A, Access.DDL), "AlterEventTrigStmt": (A, Access.DDL),
    "CreatePublicationStmt": (A, Access.DDL), "AlterPublicationStmt": (A, Access.DDL),
    "CreateSubscriptionStmt": (A, Access.DDL), "AlterSubscriptionStmt": (A, Access.DDL),
    "DropSubscriptionStmt": (A, Access.DDL), "CreateAmStmt": (A, Access.DDL),
    "AlterSystemStmt": (A, Access.DDL),
    # session and transaction
    "VariableShowStmt": (R, Access.READ), "DiscardStmt": (S, Access.READ), "DeallocateStmt": (S, Access.READ),
    "ClosePortalStmt": (S, Access.READ), "ListenStmt": (S, Access.READ), "UnlistenStmt": (S, Access.READ),
    "NotifyStmt": (S, Access.READ), "ConstraintsSetStmt": (T, Access.READ), "LockStmt": (L, Access.LOCK),
}

_CREATE_OBJECT = {
    "OBJECT_TABLE": "TABLE", "OBJECT_VIEW": "VIEW", "OBJECT_MATVIEW": "MATERIALIZED VIEW",
    "OBJECT_INDEX": "INDEX", "OBJECT_SEQUENCE": "SEQUENCE", "OBJECT_SCHEMA": "SCHEMA",
    "OBJECT_FUNCTION": "FUNCTION", "OBJECT_TYPE": "TYPE", "OBJECT_DOMAIN": "DOMAIN",
    "OBJECT_TRIGGER": "TRIGGER", "OBJECT_EXTENSION": "EXTENSION", "OBJECT_ROLE": "ROLE",
    "OBJECT_PROCEDURE": "PROCEDURE", "OBJECT_FOREIGN_TABLE": "FOREIGN TABLE", "OBJECT_POLICY": "POLICY",
    "OBJECT_RULE": "RULE", "OBJECT_COLUMN": "COLUMN", "OBJECT_CONSTRAINT": "CONSTRAINT",
}

_TAGS = {
    "SelectStmt": "SELECT", "InsertStmt": "INSERT", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE", "ExplainStmt": "EXPLAIN", "CopyStmt": "COPY", "PrepareStmt": "PREPARE",
    "ExecuteStmt": "EXECUTE", "DeclareCursorStmt": "DECLARE CURSOR", "FetchStmt": "FETCH",
    "CreateStmt": "CREATE TABLE", "AlterTableStmt": "ALTER TABLE", "IndexStmt": "CREATE INDEX",
    "ViewStmt": "CREATE VIEW", "CreateSeqStmt": "CREATE SEQUENCE", "AlterSeqStmt": "ALTER SEQUENCE",
    "CreateSchemaStmt": "CREATE SCHEMA", "CreateFunctionStmt": "CREATE FUNCTION", "CommentStmt": "COMMENT",
    "CreateTrigStmt": "CREATE TRIGGER", "TruncateStmt": "TRUNCATE TABLE", "CallStmt": "CALL", "DoStmt": "DO",
    "VacuumStmt": "VACUUM", "ClusterStmt": "CLUSTER", "ReindexStmt": "REINDEX", "GrantStmt": "GRANT",
    "GrantRoleStmt": "GRANT ROLE", "CreateRoleStmt": "CREATE ROLE", "AlterRoleStmt": "ALTER ROLE",
    "DropRoleStmt": "DROP ROLE", "CheckPointStmt": "CHECKPOINT", "LoadStmt": "LOAD",
    "CreatedbStmt": "CREATE DATABASE", "DropdbStmt": "DROP DATABASE", "CreateExtensionStmt": "CREATE EXTENSION",
    "AlterSystemStmt": "ALTER SYSTEM", "VariableSetStmt": "SET", "VariableShowStmt": "SHOW",
    "DiscardStmt": "DISCARD", "DeallocateStmt": "DEALLOCATE", "ClosePortalStmt": "CLOSE CURSOR",
    "ListenStmt": "LISTEN", "UnlistenStmt": "UNLISTEN", "NotifyStmt": "NOTIFY", "LockStmt": "LOCK TABLE",
    "ConstraintsSetStmt": "SET CONSTRAINTS", "RefreshMatViewStmt": "REFRESH MATERIALIZED VIEW",
    "CreateEnumStmt": "CREATE TYPE", "CompositeTypeStmt": "CREATE TYPE", "CreateDomainStmt": "CREATE DOMAIN",
    "RuleStmt": "CREATE RULE", "CreatePolicyStmt": "CREATE POLICY", "CreateStatsStmt": "CREATE STATISTICS",
}

_TRANSACTION_TAGS = {
    "TRANS_STMT_BEGIN": "BEGIN", "TRANS_STMT_START": "START TRANSACTION", "TRANS_STMT_COMMIT": "COMMIT",
    "TRANS_STMT_ROLLBACK": "ROLLBACK", "TRANS_STMT_SAVEPOINT": "SAVEPOINT", "TRANS_STMT_RELEASE": "RELEASE",
    "TRANS_STMT_ROLLBACK_TO": "ROLLBACK", "TRANS_STMT_PREPARE": "PREPARE TRANSACTION",
    "TRANS_STMT_COMMIT_PREPARED": "COMMIT PREPARED", "TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED",
}


# Kinds whose tag depends on more than the node type (handled one by one in command_tag).
_NODE_DEPENDENT = frozenset({"TransactionStmt", "CreateTableAsStmt", "DropStmt", "RenameStmt",
                             "VariableSetStmt", "FetchStmt", "DefineStmt"})
_FIXED_TAGS = {kind: tag for kind, tag in _TAGS.items() if kind not in _NODE_DEPENDENT}


def command_tag(kind: str, node: dict[str, Any]) -> str:
    """The command tag PostgreSQL reports for this statement (best effort for display and audit)."""
    tag = _FIXED_TAGS.get(kind)  # SELECT, INSERT, UPDATE, …: one lookup for the common statements
    if tag is not None:
        return tag
    if kind == "TransactionStmt":
        return _TRANSACTION_TAGS.get(node.get("kind", ""), "TRANSACTION")
    if kind == "CreateTableAsStmt":
        return "CREATE MATERIALIZED VIEW" if node.get("objtype") == "OBJECT_MATVIEW" else "CREATE TABLE AS"
    if kind == "DropStmt":
        return "DROP " + _CREATE_OBJECT.get(node.get("removeType", ""), "OBJECT")
    if kind == "RenameStmt":
        return "ALTER " + _CREATE_OBJECT.get(node.get("renameType", ""), "OBJECT")
    if kind == "VariableSetStmt" and node.get("kind", "").startswith("VAR_RESET"):
        return "RESET"
    if kind == "FetchStmt" and node.get("ismove"):
        return "MOVE"
    if kind == "DefineStmt":
        return "CREATE " + _CREATE_OBJECT.get(node.get("kind", ""), "OBJECT")
    tag = _TAGS.get(kind)
    return tag if tag is not None else kind.removesuffix("Stmt").upper()
