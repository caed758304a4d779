"""The schema and policy the wire-door attack tests (tests/wire_proxy/test_wire_attacks.py) run against.

An ``hr`` schema of its own: employees with a salary, a national id and an e-mail, payments with card
numbers, a denied table, a table a writer may change, a denied schema. Masks of several strategies
(redact, keep_last, hash, null, and keep_last with ``unless_groups``); a read-only agent rule whose DDL
and destructive statements wait for an approver; a writer rule; an auditor rule that sees raw cards.
Every raw value the masks hide carries a sentinel (``RAW…``), so a leak is a substring search.
"""

from __future__ import annotations

from pathlib import Path

from support.wire import Keys, config_data

SETUP_SQL = r"""
CREATE SCHEMA hr;
CREATE TABLE hr.employees(id int PRIMARY KEY, name text, salary numeric, national_id text, email text,
                          badge int);
INSERT INTO hr.employees VALUES
 (1, 'Ada', 123457, 'RAWNID-111-22-3333', 'ada.rawmail@corp.example', 4711),
 (2, 'Ben', 98765, 'RAWNID-444-55-6666', 'ben.rawmail@corp.example', 4712);
CREATE TABLE hr.payments(id int PRIMARY KEY, employee_id int, card_number text, amount numeric);
INSERT INTO hr.payments VALUES (1, 1, 'RAWCARD4111111111111111', 10), (2, 2, 'RAWCARD5500005555555559', 20);
CREATE TABLE hr.secrets(id int, secret text);
INSERT INTO hr.secrets VALUES (1, 'RAWSECRET-DENIED');
CREATE TABLE hr.tasks(id int PRIMARY KEY, state text NOT NULL, note text);
INSERT INTO hr.tasks SELECT g, 'open', 'task ' || g FROM generate_series(1, 30) g;
CREATE SCHEMA vault;
CREATE TABLE vault.keys(id int, secret text);
INSERT INTO vault.keys VALUES (1, 'RAWVAULT-KEY');
CREATE TABLE hr.audit_probe(id serial, note text);
-- views over masked columns and denied tables, catalog text that carries raw values
CREATE VIEW hr.staff AS SELECT id, name, national_id, salary, email FROM hr.employees;
CREATE VIEW hr.secret_view AS SELECT * FROM hr.secrets;
CREATE VIEW hr.vault_view AS SELECT * FROM vault.keys;
CREATE VIEW vault.literal_view AS SELECT secret FROM vault.keys WHERE secret <> 'RAWVAULT-LITERAL';
ALTER TABLE hr.secrets ALTER secret SET DEFAULT 'RAWSECRET-DEFAULT';
ALTER TABLE hr.secrets ADD CONSTRAINT secret_not_x CHECK (secret <> 'RAWSECRET-CHECK');
COMMENT ON TABLE hr.secrets IS 'RAWSECRET-COMMENT';
COMMENT ON COLUMN vault.keys.secret IS 'RAWVAULT-COMMENT';
ANALYZE;
"""

# every raw value hidden by a mask or a denial: none may ever reach an agent
SENTINELS = (b"RAWNID", b"rawmail", b"RAWCARD", b"RAWSECRET", b"RAWVAULT", b"123457", b"98765",
             b"111-22-3333", b"4111111111111111")

MASKS = [
    {"column": "hr.employees.national_id", "strategy": "redact"},
    {"column": "hr.employees.salary", "strategy": "null"},
    {"column": "hr.employees.email", "strategy": "hash", "key": {"env": "PGWARDEN_MASK_KEY"}},
    {"column": "hr.payments.card_number", "strategy": "keep_last", "keep": 4, "unless_groups": ["auditors"]},
]

RULES = [
    {"name": "auditor", "match": {"groups": ["auditors"]}, "target": "main",
     "statements": {"allow": ["read"]}, "schemas": {"allow": ["hr"]},
     "tables": {"allow": ["hr.payments"]}},
    {"name": "writer", "match": {"groups": ["writers"]}, "target": "main",
     "statements": {"allow": ["read", "write", "transaction"]},
     "approval": {"required_for": ["destructive", "ddl"], "approvers": ["dba"]},
     "schemas": {"allow": ["hr"]}, "tables": {"allow": ["hr.tasks", "hr.employees"]},
     "writes": {"hr.tasks": ["insert", "update", "delete"]}},
    {"name": "agent", "match": {"groups": ["ai-agents"]}, "target": "main",
     "statements": {"allow": ["read"]},
     "approval": {"required_for": ["ddl", "destructive"], "approvers": ["dba"]},
     "schemas": {"allow": ["hr"], "deny": ["vault"]},
     "tables": {"allow": ["*"], "deny": ["hr.secrets"]}},
]


def attack_config(dsn: str, directory: Path, keys: Keys, proxy: dict | None = None) -> dict:
    """The proxy configuration of the attack tests over the database at ``dsn``."""
    data = config_data(dsn, directory, keys, proxy={"approval_notice_interval": 200, "max_message_size": 1 << 20,
                                                    **(proxy or {})})
    data["targets"]["main"]["search_path"] = ["hr"]
    data["rules"] = RULES
    data["masking"] = {"columns": MASKS}
    return data
