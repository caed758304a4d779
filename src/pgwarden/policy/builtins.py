"""Built-in denials that no rule needs to mention and no rule can lift.

Each entry names a class of danger with a stable reason code and the sentence
an agent gets back. Function names are matched as globs against the lower-case
name of a function resolved to ``pg_catalog`` (or written unqualified); user
functions in other schemas are governed by the rule's allow list instead.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Denial:
    code: str
    message: str


_FILE = Denial("server_file_access",
               "reads or writes files on the database server; query tables through SELECT instead")
_PROGRAM = Denial("server_program", "runs programs or loads code on the database server")
_DYNAMIC = Denial("dynamic_sql",
                  "runs SQL given as a string, which the gateway cannot check; send that SQL as a statement of its own")
_CONFIG = Denial("configuration_change",
                 "changes server or session configuration the gateway pins; ask a DBA if a setting must change")
_SIGNAL = Denial("backend_signal", "signals or stops other database sessions; ask a DBA")
_LOB = Denial("large_object", "large objects bypass table policy; store and read data in tables")
_NETWORK = Denial("network_access", "opens connections from the database server to elsewhere")
_REPLICATION = Denial("replication_control",
                      "controls replication, WAL or backups, or reads changes of every table; ask a DBA")
_RAW = Denial("raw_storage_access", "reads raw pages or internal storage, bypassing column masking")
_STATE = Denial("state_changing_function",
                "changes server state (index summaries, pending lists, collations, catalog pins, WAL) even in a "
                "read-only transaction; ask a DBA to run maintenance")
NOTIFY_DENIAL = Denial("notification",
                 "sends a notification that other sessions receive, a side effect a read-only rule "
                       "does not permit")
_SESSION_LOCK = Denial("session_lock",
                       "takes a session-level advisory lock, held after the statement on a connection the gateway "
                       "owns; use pg_advisory_xact_lock() / pg_try_advisory_xact_lock(), released at transaction end")
_SERVER_STATE = Denial("server_secret",
                       "shows server configuration files, control data or other sessions' statement texts; "
                       "SHOW a setting or query pg_settings instead")
_OWN_TEXT = Denial("server_secret",
                   "returns the statement text as the gateway sent it upstream (which may hold masking detail); "
                   "your own statement is the text you sent")
_XML_TABLE = Denial("whole_table_serialiser",
                    "serialises a table or schema named by a string, bypassing table policy and masking; "
                    "SELECT the columns you need instead")

# Ordered: the first matching pattern gives the reason.
FUNCTION_DENIALS: tuple[tuple[str, Denial | None], ...] = (
    ("pg_read_file", _FILE), ("pg_read_binary_file", _FILE), ("pg_ls_*", _FILE), ("pg_stat_file", _FILE),
    ("pg_file_*", _FILE), ("pg_logdir_ls", _FILE), ("pg_current_logfile", _FILE),
    ("lo_*", _LOB), ("loread", _LOB), ("lowrite", _LOB),
    ("query_to_xml*", _DYNAMIC), ("query_to_xmlschema", _DYNAMIC), ("cursor_to_xml*", _DYNAMIC),
    ("ts_stat", _DYNAMIC), ("ts_rewrite", _DYNAMIC), ("dblink*", _NETWORK),
    ("table_to_xml*", _XML_TABLE), ("schema_to_xml*", _XML_TABLE), ("database_to_xml*", _XML_TABLE),
    ("set_config", _CONFIG), ("pg_reload_conf", _CONFIG), ("pg_rotate_logfile*", _CONFIG),
    ("pg_stat_reset*", _CONFIG), ("pg_stat_statements_reset", _CONFIG), ("pg_stat_clear_snapshot", _CONFIG),
    ("pg_import_system_collations", _CONFIG), ("pg_log_backend_memory_contexts", _CONFIG),
    ("pg_terminate_backend", _SIGNAL), ("pg_cancel_backend", _SIGNAL), ("pg_signal_backend", _SIGNAL),
    ("pg_promote", _REPLICATION), ("pg_switch_wal", _REPLICATION), ("pg_create_restore_point", _REPLICATION),
    ("pg_backup_*", _REPLICATION), ("pg_start_backup", _REPLICATION), ("pg_stop_backup", _REPLICATION),
    ("pg_*replication_slot*", _REPLICATION), ("pg_logical_slot_*", _REPLICATION),
    ("pg_replication_origin_*", _REPLICATION), ("pg_logical_emit_message", _REPLICATION),
    ("pg_wal_replay_*", _REPLICATION), ("pg_export_snapshot", _REPLICATION),
    ("pg_sync_replication_slots", _REPLICATION),
    ("binary_upgrade_*", _RAW), ("get_raw_page", _RAW), ("heap_page_*", _RAW), ("bt_page_*", _RAW),
    ("page_header", _RAW), ("fsm_page_contents", _RAW), ("pg_get_wal_*", _RAW), ("pg_walinspect*", _RAW),
    ("pg_relation_filenode", _RAW), ("pg_filenode_relation", _RAW),
    ("pg_nextoid", _RAW), ("pg_catalog_*", _RAW),
    # Functions that write although the transaction is read-only. Found from PG16's pg_proc (volatile,
    # parallel-unsafe or parallel-restricted, in pg_catalog) and checked against a server in a READ ONLY
    # transaction by tests/engine/test_state_changing_builtins.py.
    ("brin_summarize_new_values", _STATE), ("brin_summarize_range", _STATE), ("brin_desummarize_range", _STATE),
    ("gin_clean_pending_list", _STATE), ("pg_extension_config_dump", _STATE),
    ("pg_stop_making_pinned_objects", _STATE), ("pg_log_standby_snapshot", _STATE),
    ("pg_stat_force_next_flush", _STATE), ("pg_collation_actual_version", None),
    ("currtid2", _RAW), ("currtid", _RAW),
    ("pg_advisory_lock", _SESSION_LOCK), ("pg_advisory_lock_shared", _SESSION_LOCK),
    ("pg_try_advisory_lock", _SESSION_LOCK), ("pg_try_advisory_lock_shared", _SESSION_LOCK),
    # Server secrets: configuration files, control data, other sessions' statement texts.
    ("pg_show_all_file_settings", _SERVER_STATE), ("pg_hba_file_rules", _SERVER_STATE),
    ("pg_ident_file_mappings", _SERVER_STATE), ("pg_control_*", _SERVER_STATE),
    ("pg_stat_get_activity", _SERVER_STATE), ("pg_stat_get_backend_activity", _SERVER_STATE),
    ("pg_stat_get_backend_*", _SERVER_STATE), ("pg_stat_statements", _SERVER_STATE),
    ("pg_stat_get_progress_info", _SERVER_STATE), ("pg_config", _SERVER_STATE),
    ("pg_show_replication_origin_status", _SERVER_STATE), ("pg_get_backend_memory_contexts", _SERVER_STATE),
    ("current_query", _OWN_TEXT),
    # the functions behind pg_prepared_statements / pg_cursors: the text a statement or portal was parsed
    # from, which for a protocol-level one is the rewrite the gateway sent (see SENSITIVE_CATALOG_COLUMNS)
    ("pg_prepared_statement", _OWN_TEXT), ("pg_cursor", _OWN_TEXT),
)

_FUNC_RE = [(re.compile(fnmatch.translate(p)), d) for p, d in FUNCTION_DENIALS if d is not None]


def function_denial(name: str) -> Denial | None:
    try:
        return _FUNC_DENIALS[name]
    except KeyError:
        pass
    found = next((denial for regex, denial in _FUNC_RE if regex.match(name.lower())), None)
    if len(_FUNC_DENIALS) < 10_000:  # a pure function of the name: remembered (the same names recur)
        _FUNC_DENIALS[name] = found
    return found


_FUNC_DENIALS: dict[str, Denial | None] = {}


# System relations that hold credentials, server configuration files or raw data.
CREDENTIAL_CATALOGS = frozenset({
    "pg_authid", "pg_shadow", "pg_user_mapping", "pg_largeobject", "pg_file_settings", "pg_hba_file_rules",
    "pg_ident_file_mappings", "pg_db_role_setting", "pg_statistic", "pg_statistic_ext_data",
    "pg_stat_statements", "pg_stat_statements_info", "user_mapping_options",
    "pg_replication_origin_status", "pg_backend_memory_contexts", "pg_config",
})
CREDENTIAL_DENIAL = Denial(
    "sensitive_catalog",
    "holds credentials or server configuration; ask a DBA for what you need",
)
# Columns of otherwise harmless catalogs that hold secrets or other sessions'
# statement text (which quotes the values those sessions sent).
SENSITIVE_CATALOG_COLUMNS = frozenset({
    ("pg_catalog", "pg_user_mappings", "umoptions"), ("pg_catalog", "pg_subscription", "subconninfo"),
    ("pg_catalog", "pg_stat_activity", "query"), ("pg_catalog", "pg_stat_statements", "query"),
    ("public", "pg_stat_statements", "query"), ("pg_catalog", "pg_roles", "rolconfig"),
    ("pg_catalog", "pg_user", "useconfig"),
    # the value a column added with a default has in rows older than the column: table data
    ("pg_catalog", "pg_attribute", "attmissingval"),
    ("information_schema", "user_mapping_options", "option_value"),
    ("pg_catalog", "pg_stat_replication", "application_name"),
    # This session's own statements and portals, but as PostgreSQL parsed them: a statement or portal made
    # by Parse holds the text as the gateway rewrote it (the masks' derived keys in it). Their names,
    # parameter types and result types stay readable.
    ("pg_catalog", "pg_prepared_statements", "statement"), ("pg_catalog", "pg_cursors", "statement"),
})
SENSITIVE_COLUMN_DENIAL = Denial(
    "sensitive_catalog",
    "holds credentials or other sessions' statements (which quote the values they sent); "
    "select the other columns",
)

STATISTICS_CATALOGS = frozenset({
    "pg_statistic", "pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic_ext_data",
})
STATISTICS_DENIAL = Denial(
    "statistics_leak",
    "planner statistics hold sample values of masked columns and denied tables",
)
# Catalog views readable only when the WHERE clause names the objects they show (with top-level AND-ed
# `col = 'literal'` or `col IN (...)`), each of which the rule permits (and, for statistics, unmasked):
# view name -> (schema column, object column, sub-object column or None). See _lineage.catalog_pins.
PINNED_CATALOGS: dict[str, tuple[str, str, str | None]] = {
    "pg_stats": ("schemaname", "tablename", "attname"),
    "pg_stats_ext": ("schemaname", "tablename", None),
    "pg_stats_ext_exprs": ("schemaname", "tablename", None),
    "pg_sequences": ("schemaname", "sequencename", None),
}
PINNED_HINT = {
    "pg_stats": "add WHERE schemaname = '…' AND tablename = '…' (AND attname IN (…)) naming permitted tables "
                "and unmasked columns",
    "pg_stats_ext": "add WHERE schemaname = '…' AND tablename = '…' naming a permitted table without masks",
    "pg_stats_ext_exprs": "add WHERE schemaname = '…' AND tablename = '…' naming a permitted table without masks",
    "pg_sequences": "add WHERE schemaname = '…' AND sequencename = '…' naming a sequence of a permitted table",
}

# Free text the catalogs attach to objects, which anyone may read: columns and functions that show it,
# with the kind of text (see catalog.Relation.texts). Allowed unless a relation the rule denies carries
# that kind of text (then the reading would show it); a function whose first argument is a literal naming
# a relation shows that relation's text only, and is allowed when the rule permits that relation.
OBJECT_TEXT_COLUMNS: dict[tuple[str, str, str], str] = {
    ("pg_catalog", "pg_attrdef", "adbin"): "default",
    ("pg_catalog", "pg_constraint", "conbin"): "check",
    ("pg_catalog", "pg_description", "description"): "comment",
    ("pg_catalog", "pg_seclabel", "label"): "comment", ("pg_catalog", "pg_seclabels", "label"): "comment",
    ("pg_catalog", "pg_views", "definition"): "view", ("pg_catalog", "pg_matviews", "definition"): "view",
    ("pg_catalog", "pg_rewrite", "ev_action"): "view", ("pg_catalog", "pg_rewrite", "ev_qual"): "rule",
    ("pg_catalog", "pg_rules", "definition"): "rule",
    ("pg_catalog", "pg_proc", "prosrc"): "function", ("pg_catalog", "pg_proc", "probin"): "function",
    ("pg_catalog", "pg_proc", "prosqlbody"): "function",
    ("pg_catalog", "pg_index", "indexprs"): "index", ("pg_catalog", "pg_index", "indpred"): "index",
    ("pg_catalog", "pg_indexes", "indexdef"): "index",
    ("pg_catalog", "pg_trigger", "tgargs"): "trigger", ("pg_catalog", "pg_trigger", "tgqual"): "trigger",
    ("pg_catalog", "pg_policy", "polqual"): "policy", ("pg_catalog", "pg_policy", "polwithcheck"): "policy",
    ("pg_catalog", "pg_policies", "qual"): "policy", ("pg_catalog", "pg_policies", "with_check"): "policy",
    ("pg_catalog", "pg_statistic_ext", "stxexprs"): "statistics",
    ("information_schema", "columns", "column_default"): "default",
    ("information_schema", "columns", "generation_expression"): "default",
    ("information_schema", "check_constraints", "check_clause"): "check",
    ("information_schema", "views", "view_definition"): "view",
    ("information_schema", "routines", "routine_definition"): "function",
    ("information_schema", "triggers", "action_statement"): "trigger",
    ("information_schema", "triggers", "action_condition"): "trigger",
    ("information_schema", "domains", "domain_default"): "default",
}
OBJECT_TEXT_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "pg_get_viewdef": ("view",), "pg_get_ruledef": ("rule", "view"),
    "pg_get_expr": ("default", "check", "index", "policy", "statistics"),
    "pg_get_constraintdef": ("check",), "pg_get_indexdef": ("index",), "pg_get_triggerdef": ("trigger",),
    "pg_get_statisticsobjdef": ("statistics",), "pg_get_statisticsobjdef_expressions": ("statistics",),
    "pg_get_statisticsobjdef_columns": ("statistics",),
    "obj_description": ("comment",), "col_description": ("comment",),
    "pg_get_functiondef": ("function",), "pg_get_function_sqlbody": ("function",),
}
# Functions whose first argument names a sequence (regclass): the owning table's deny lists hold.
# Built-ins a read may call whose effect lasts only if its transaction commits: a door that cancels a read
# once it has the rows it returns (max_rows) would undo it behind the client's back (StatementPlan.cancel_safe).
UNDONE_BY_ABORT = frozenset({"set_config", "pg_notify", "txid_current", "pg_current_xact_id",
                             "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
                             "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared"})

SEQUENCE_FUNCTIONS = frozenset({"nextval", "currval", "setval", "pg_sequence_last_value",
                                "pg_sequence_parameters"})
# Functions whose verdict depends on the literal first argument: never shared through the shape cache.
LITERAL_FUNCTIONS = frozenset({"set_config", *SEQUENCE_FUNCTIONS, *OBJECT_TEXT_FUNCTIONS})

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})
TOAST_DENIAL = Denial(
    "toast_storage",
    "TOAST tables hold the out-of-line values of every table, denied and masked ones included; "
    "read the table itself",
)

# Settings any client may change: encodings and formats drivers set on connect,
# and planner knobs that cannot widen what a statement may touch.
HARMLESS_SETTINGS: tuple[str, ...] = (
    "datestyle", "intervalstyle", "timezone", "extra_float_digits", "bytea_output",
    "xmlbinary", "xmloption", "lc_monetary",
    "lc_numeric", "lc_time", "default_transaction_isolation", "transaction_isolation",
    "default_transaction_deferrable", "transaction_deferrable", "transaction.transaction_isolation",
    "session_characteristics.transaction_isolation", "session_characteristics.transaction_deferrable",
    "transaction.transaction_deferrable", "transaction.transaction_read_only",
    "enable_*", "jit", "jit_*", "work_mem", "maintenance_work_mem", "random_page_cost", "seq_page_cost",
    "cpu_*_cost", "effective_cache_size", "geqo", "geqo_*", "join_collapse_limit", "from_collapse_limit",
    "plan_cache_mode", "max_parallel_workers_per_gather", "parallel_*_cost", "constraint_exclusion",
    "cursor_tuple_fraction", "default_statistics_target", "synchronous_commit", "array_nulls",
    "escape_string_warning", "quote_all_identifiers", "gin_fuzzy_search_limit",
    "temp_buffers", "hash_mem_multiplier", "force_parallel_mode", "debug_parallel_query",
    "default_text_search_config", "check_function_bodies", "idle_session_timeout",
)

# Settings a client may change only to some values: name -> (the values, why not the others). SET to
# one of them or RESET is harmless; set_config() of one is refused (its value need not be a literal).
BOUNDED_SETTINGS: dict[str, tuple[frozenset[str], str]] = {
    "client_min_messages": (
        frozenset({"notice", "warning", "error"}),
        "DEBUG and LOG messages would show the client the statement as rewritten upstream, with the masks' "
        "derived keys; use notice, warning or error",
    ),
}

# Settings the gateway pins; changing them would escape its governance.
PINNED_SETTINGS: dict[str, str] = {
    "role": "SET ROLE would act as another database role",
    "session_authorization": "SET SESSION AUTHORIZATION would act as another database user",
    "search_path": "the gateway pins search_path so names resolve the way policy checked them",
    "default_transaction_read_only": "the gateway pins read-only transactions for this rule",
    "transaction_read_only": "the gateway pins read-only transactions for this rule",
    "session_characteristics.transaction_read_only": "the gateway pins read-only transactions for this rule",
    "statement_timeout": "the gateway pins statement_timeout for this rule",
    "lock_timeout": "the gateway pins lock_timeout for this rule",
    "idle_in_transaction_session_timeout": "the gateway pins session timeouts",
    "application_name": "application_name names the principal in the database's own logs",
    "row_security": "row security must stay on",
    "session_replication_role": "session_replication_role disables triggers and foreign keys",
    "default_tablespace": "tablespaces are chosen by the DBA",
    # How the server reads text: the analysis read it as UTF-8 with standard conforming strings, so
    # another encoding (one where a backslash can end a character) or escape-string semantics would
    # let the server see statements inside what the gateway judged a literal. SET to the pinned value
    # and RESET (back to the start-up packet's value) are harmless.
    "client_encoding": "the gateway reads statements as UTF-8; client_encoding stays UTF8",
    "standard_conforming_strings": "the gateway reads string literals with standard_conforming_strings on",
    "backslash_quote": "the gateway pins backslash_quote off",
    "temp_tablespaces": "tablespaces are chosen by the DBA",
}


SENSITIVE_TABLES = frozenset((s, t) for s, t, _ in SENSITIVE_CATALOG_COLUMNS)


# Settings that make the server write files or logs, load code, or hide what a session does from the
# server's own logs: never harmless, whatever a pattern (jit_*) says; a rule may still name one exactly.
SERVER_WRITING_SETTINGS: tuple[str, ...] = (
    "jit_dump_bitcode", "jit_debugging_support", "jit_profiling_support", "jit_provider", "log_*", "debug_print_*",
    "debug_pretty_print", "debug_assertions", "debug_discard_caches", "debug_io_direct", "debug_logical_*",
    "trace_*", "session_preload_libraries", "local_preload_libraries", "shared_preload_libraries",
    "dynamic_library_path", "temp_file_limit", "wal_*", "zero_damaged_pages", "ignore_*", "allow_*",
    "track_*", "compute_query_id", "lo_compat_privileges", "archive_*", "event_triggers", "vacuum_*",
)


def setting_allowed(name: str, extra: list[str]) -> bool:
    if any(fnmatch.fnmatchcase(name, p) for p in SERVER_WRITING_SETTINGS):
        return name in (p.lower() for p in extra)
    return any(fnmatch.fnmatchcase(name, p) for p in HARMLESS_SETTINGS) or any(
        fnmatch.fnmatchcase(name, p.lower()) for p in extra
    )
