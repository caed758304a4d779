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
_XML_TABLE = Denial("whole_table_serialiser",
                    "serialises a table or schema named by a string, bypassing table policy and masking; "
                    "SELECT the columns you need instead")

# Ordered: the first matching pattern gives the reason.
FUNCTION_DENIALS: tuple[tuple[str, Denial], ...] = (
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
)

_FUNC_RE = [(re.compile(fnmatch.translate(p)), d) for p, d in FUNCTION_DENIALS]


def function_denial(name: str) -> Denial | None:
    name = name.lower()
    for regex, denial in _FUNC_RE:
        if regex.match(name):
            return denial
    return None


# System relations that hold credentials, server configuration files or raw data.
CREDENTIAL_CATALOGS = frozenset({
    "pg_authid", "pg_shadow", "pg_user_mapping", "pg_largeobject", "pg_file_settings", "pg_hba_file_rules",
    "pg_ident_file_mappings",
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
    ("pg_catalog", "pg_prepared_statements", "statement"), ("pg_catalog", "pg_cursors", "statement"),
    ("public", "pg_stat_statements", "query"),
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
    "planner statistics hold sample values of masked columns; use COUNT, MIN/MAX of unmasked columns "
    "or EXPLAIN instead",
)

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})

# Settings any client may change: encodings and formats drivers set on connect,
# and planner knobs that cannot widen what a statement may touch.
HARMLESS_SETTINGS: tuple[str, ...] = (
    "client_encoding", "datestyle", "intervalstyle", "timezone", "extra_float_digits", "bytea_output",
    "client_min_messages", "standard_conforming_strings", "xmlbinary", "xmloption", "lc_monetary",
    "lc_numeric", "lc_time", "default_transaction_isolation", "transaction_isolation",
    "default_transaction_deferrable", "transaction_deferrable", "transaction.transaction_isolation",
    "transaction.transaction_deferrable", "transaction.transaction_read_only",
    "enable_*", "jit", "jit_*", "work_mem", "maintenance_work_mem", "random_page_cost", "seq_page_cost",
    "cpu_*_cost", "effective_cache_size", "geqo", "geqo_*", "join_collapse_limit", "from_collapse_limit",
    "plan_cache_mode", "max_parallel_workers_per_gather", "parallel_*_cost", "constraint_exclusion",
    "cursor_tuple_fraction", "default_statistics_target", "synchronous_commit", "array_nulls",
    "backslash_quote", "escape_string_warning", "quote_all_identifiers", "gin_fuzzy_search_limit",
    "temp_buffers", "hash_mem_multiplier", "force_parallel_mode", "debug_parallel_query",
    "default_text_search_config", "check_function_bodies", "idle_session_timeout",
)

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
    "temp_tablespaces": "tablespaces are chosen by the DBA",
}


SENSITIVE_TABLES = frozenset((s, t) for s, t, _ in SENSITIVE_CATALOG_COLUMNS)


def setting_allowed(name: str, extra: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in HARMLESS_SETTINGS) or any(
        fnmatch.fnmatchcase(name, p.lower()) for p in extra
    )
