"""pgwarden.yaml: the examples validate, every kind of mistake is reported with its key path,
and ``pgwarden config check`` / ``config schema`` behave as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pgwarden.engine.config import (
    ConfigError,
    GatewayConfig,
    Identity,
    Target,
    config_json_schema,
    load_config,
    parse_config,
)
from pgwarden.engine.secrets import SecretError, resolve_secret, resolve_secret_bytes
from pgwarden.policy.analysis import StatementClass
from pgwarden.policy.language import MaskStrategy, PolicyDocument, Rule, SecretRef

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

MINIMAL = """
version: 1
targets:
  main: {dsn: "postgresql://pgwarden@localhost:5432/app"}
identity: {issuer: "https://id.example.test", audience: pgwarden, jwks_file: jwks.json}
rules:
  - {name: ai-agents, match: {groups: [ai-agents]}, target: main}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "test.yaml")
    return [str(p) for p in info.value.problems]


def _edit(**top: object) -> str:
    data = yaml.safe_load(MINIMAL)
    data.update(top)
    return yaml.safe_dump(data, sort_keys=False)


# -- the examples -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pgwarden.yaml", "public_cases.yaml"])
def test_examples_validate(name: str) -> None:
    config = load_config(EXAMPLES / name)
    assert set(config.targets) == {"main"}
    assert config.base_dir == EXAMPLES.resolve()
    assert config.resolve_path("jwks.json") == EXAMPLES.resolve() / "jwks.json"
    assert config.targets["main"].password == SecretRef(env="PGWARDEN_MAIN_PASSWORD")


def test_public_cases_example_encodes_the_public_cases_policy() -> None:
    config = load_config(EXAMPLES / "public_cases.yaml")
    agents = next(r for r in config.rules if r.name == "ai-agents")
    assert agents.match.fits("agent", frozenset({"ai-agents"}))
    assert agents.statements.allow == [StatementClass.READ]
    assert [t.value for t in agents.approval.required_for] == ["ddl"]
    assert agents.approval.approvers == ["dba"]
    assert agents.schemas.permits("public") and not agents.schemas.permits("billing")
    assert agents.tables.denies("public.secrets") and not agents.tables.denies("public.customers")
    masks = {m.column: m for m in config.masking.columns}
    assert masks["public.customers.card_number"].strategy is MaskStrategy.KEEP_LAST
    assert masks["public.customers.card_number"].keep == 4
    assert masks["public.customers.ssn"].strategy is MaskStrategy.REDACT
    assert masks["public.customers.email"].strategy is MaskStrategy.HASH
    assert masks["public.customers.email"].key == SecretRef(env="PGWARDEN_MASK_KEY")
    dba = next(r for r in config.rules if r.name == "dba")
    assert {StatementClass.WRITE, StatementClass.DDL} <= set(dba.statements.allow)


def test_policy_is_a_policy_document_built_from_the_same_rules() -> None:
    config = load_config(EXAMPLES / "pgwarden.yaml")
    policy = config.policy
    assert isinstance(policy, PolicyDocument)
    assert policy.rules == config.rules and policy.masking == config.masking


def test_durations_and_defaults() -> None:
    config = load_config(EXAMPLES / "pgwarden.yaml")
    assert config.identity.leeway == 30_000
    assert config.identity.jwks_cache == 300_000
    assert config.targets["main"].connect_timeout == 10_000
    assert config.rules[0].approval.timeout == 900_000
    minimal = parse_config(MINIMAL)
    assert minimal.identity.algorithms == ["RS256", "ES256", "EdDSA"]
    assert minimal.identity.groups_claim == "groups" and minimal.identity.subject_claim == "sub"
    assert minimal.identity.audience == ["pgwarden"]
    assert minimal.targets["main"].search_path == ["public"]


# -- policy version ---------------------------------------------------------------------------------


def test_policy_version_is_stable_and_tracks_content() -> None:
    a = parse_config(MINIMAL)
    b = parse_config(MINIMAL.replace("version: 1", "version: 1\n# a comment changes nothing"))
    assert a.policy_version == b.policy_version
    assert len(a.policy_version) == 64 and int(a.policy_version, 16) >= 0
    reordered = parse_config(MINIMAL.replace("{issuer: \"https://id.example.test\", audience: pgwarden,",
                                             "{audience: pgwarden, issuer: \"https://id.example.test\","))
    assert reordered.policy_version == a.policy_version
    changed = parse_config(MINIMAL.replace("[ai-agents]", "[ai-agent]"))
    assert changed.policy_version != a.policy_version


def test_with_target_dsn_returns_a_validated_copy() -> None:
    config = load_config(EXAMPLES / "public_cases.yaml")
    moved = config.with_target_dsn("main", "host=/tmp/pg port=5433 dbname=cases user=postgres")
    assert moved.targets["main"].dsn == "host=/tmp/pg port=5433 dbname=cases user=postgres"
    assert moved.targets["main"].password is None
    assert config.targets["main"].dsn.startswith("postgresql://")  # original untouched
    assert moved.rules == config.rules and moved.base_dir == config.base_dir
    # policy_version hashes the policy (rules, masking) only: moving a target voids no approval or cache
    assert moved.policy_version == config.policy_version
    with_password = config.with_target_dsn("main", "postgresql://x@h/db", SecretRef(env="SOME_VAR"))
    assert with_password.targets["main"].password == SecretRef(env="SOME_VAR")
    with pytest.raises(ConfigError) as info:
        config.with_target_dsn("main", "postgresql://x:hunter2@h/db")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError):
        config.with_target_dsn("nope", "postgresql://x@h/db")


def test_direct_construction_runs_the_cross_field_checks() -> None:
    identity = Identity(issuer="i", audience="a", public_key_file="k.pem")
    ok = GatewayConfig(version=1, targets={"main": Target(dsn="host=x")}, identity=identity,
                       rules=[Rule(name="r", target="main")])
    assert ok.policy.rules[0].name == "r"
    with pytest.raises(ValueError, match="expected the name of a target"):
        GatewayConfig(version=1, targets={"main": Target(dsn="host=x")}, identity=identity,
                      rules=[Rule(name="r", target="elsewhere")])


# -- each kind of mistake ---------------------------------------------------------------------------


def test_unknown_key_names_the_path_and_suggests_the_right_key() -> None:
    problems = _problems(MINIMAL.replace("target: main}", "target: main, statment: {allow: [read]}}"))
    assert len(problems) == 1
    assert problems[0].startswith("rules[0].statment: unknown key; did you mean 'statements'?")
    assert "expected one of name, match, target" in problems[0]


def test_unknown_top_level_key() -> None:
    (problem,) = _problems(MINIMAL + "auditt: {}\n")
    assert problem.startswith("auditt: unknown key; did you mean 'audit'? expected one of version, targets, "
                              "identity, rules, masking, approvals, audit, proxy, serve")


def test_wrong_enum_value_lists_the_choices() -> None:
    (problem,) = _problems(MINIMAL.replace("target: main}", "target: main, statements: {allow: [read, select]}}"))
    assert problem == ("rules[0].statements.allow[1]: expected one of read, write, ddl, admin, transaction, "
                       "session, lock (got 'select')")


def test_bad_duration_in_own_and_in_policy_models() -> None:
    problems = _problems(MINIMAL.replace("jwks_file: jwks.json}", "jwks_file: jwks.json, leeway: soon}")
                         .replace("target: main}", "target: main, statement_timeout: 5 parsecs}"))
    assert any(p.startswith("identity.leeway: expected a duration") and p.endswith("(got 'soon')") for p in problems)
    assert any(p.startswith("rules[0].statement_timeout: expected a duration") and p.endswith("(got '5 parsecs')")
               for p in problems)


def test_duration_of_the_wrong_type_is_a_problem_not_a_crash() -> None:
    (problem,) = _problems(MINIMAL.replace("target: main}", "target: main, lock_timeout: [5]}"))
    assert problem.startswith("rules[0].lock_timeout: expected a duration") and problem.endswith("(got [5])")


@pytest.mark.parametrize("dsn", [
    "postgresql://pgwarden:hunter2@localhost:5432/app",
    "postgresql://pgwarden@localhost:5432/app?password=hunter2",
    "host=localhost user=pgwarden password=hunter2 dbname=app",
    "host=localhost user=pgwarden password='hunter2' dbname=app",
])
def test_inline_password_in_dsn_is_refused_without_echoing_it(dsn: str) -> None:
    (problem,) = _problems(_edit(targets={"main": {"dsn": dsn}}))
    assert problem.startswith("targets.main.dsn: expected a DSN without a password")
    assert "password: {env: VARIABLE}" in problem
    assert "hunter2" not in problem


def test_unparseable_dsn() -> None:
    (problem,) = _problems(_edit(targets={"main": {"dsn": "host=x pass word"}}))
    assert problem.startswith("targets.main.dsn: expected a libpq connection string")


def test_empty_password_in_dsn_is_not_a_secret() -> None:
    # Embedded servers hand out URIs such as postgresql://postgres:@/postgres?host=/tmp/...
    config = parse_config(_edit(targets={"main": {"dsn": "postgresql://postgres:@/postgres?host=/tmp/x"}}))
    assert config.targets["main"].dsn.endswith("host=/tmp/x")


def test_missing_key_source() -> None:
    (problem,) = _problems(_edit(identity={"issuer": "i", "audience": "a"}))
    assert problem == ("identity: expected exactly one key source among jwks_url, jwks_file, public_key_file "
                       "(got none)")


def test_two_key_sources() -> None:
    (problem,) = _problems(_edit(identity={"issuer": "i", "audience": "a", "jwks_file": "a.json",
                                           "public_key_file": "k.pem"}))
    assert problem.endswith("(got jwks_file and public_key_file)")


def test_key_source_problem_is_reported_together_with_field_problems() -> None:
    problems = _problems(_edit(identity={"issuer": "i", "audience": "a", "algorithms": ["XX"]}))
    assert any(p.startswith("identity.algorithms[0]: expected one of RS256") for p in problems)
    assert any(p.startswith("identity: expected exactly one key source") for p in problems)


@pytest.mark.parametrize("alg", ["HS256", "HS512", "hs384"])
def test_hmac_algorithms_are_refused_with_the_reason(alg: str) -> None:
    (problem,) = _problems(_edit(identity={"issuer": "i", "audience": "a", "jwks_file": "j",
                                           "algorithms": ["RS256", alg]}))
    assert problem.startswith("identity.algorithms[1]: expected an asymmetric algorithm")
    assert "key-confusion" in problem and problem.endswith(f"(got {alg!r})")


def test_alg_none_is_refused() -> None:
    (problem,) = _problems(_edit(identity={"issuer": "i", "audience": "a", "jwks_file": "j", "algorithms": ["none"]}))
    assert problem.startswith("identity.algorithms[0]: expected a signature algorithm") and "forge" in problem


def test_plain_http_jwks_url_is_refused_except_on_localhost() -> None:
    (problem,) = _problems(_edit(identity={"issuer": "i", "audience": "a", "jwks_url": "http://id.example.com/k"}))
    assert problem.startswith("identity.jwks_url: expected an https:// URL")
    for url in ("http://127.0.0.1:8080/jwks", "http://localhost/jwks", "https://id.example.com/jwks"):
        assert parse_config(_edit(identity={"issuer": "i", "audience": "a", "jwks_url": url})).identity.jwks_url == url


def test_rule_target_must_exist() -> None:
    (problem,) = _problems(MINIMAL.replace("target: main}", "target: mian}"))
    assert problem == "rules[0].target: expected the name of a target under 'targets' (main) (got 'mian')"


def test_duplicate_rule_names() -> None:
    (problem,) = _problems(MINIMAL + "  - {name: ai-agents, target: main}\n")
    assert problem.startswith("rules[1].name: expected a name no other rule uses")
    assert "rules[0] is already called that (got 'ai-agents')" in problem


def test_hash_mask_without_key() -> None:
    (problem,) = _problems(MINIMAL + "masking: {columns: [{column: public.customers.email, strategy: hash}]}\n")
    assert problem.startswith("masking.columns[0]: strategy 'hash' needs a 'key'")


def test_hash_key_is_not_read_at_validation_time() -> None:
    os.environ.pop("PGWARDEN_TEST_NEVER_SET", None)
    config = parse_config(MINIMAL + "masking: {columns: [{column: public.customers.email, strategy: hash, "
                                    "key: {env: PGWARDEN_TEST_NEVER_SET}}]}\n")
    assert config.masking.columns[0].key == SecretRef(env="PGWARDEN_TEST_NEVER_SET")


def test_every_problem_is_reported_at_once() -> None:
    text = MINIMAL.replace("version: 1", "version: 2").replace("target: main}", "target: nowhere, bogus: 1}")
    problems = _problems(text.replace("audience: pgwarden,", "audience: pgwarden, jwks_url: https://x/j,"))
    paths = [p.split(":", 1)[0] for p in problems]
    assert paths == ["version", "identity", "rules[0].bogus", "rules[0].target"]


def test_bad_target_name_and_search_path() -> None:
    problems = _problems(_edit(targets={"main db": {"dsn": "host=x"}, "ok": {"dsn": "host=x",
                                                                          "search_path": ["$user", "public"]}}))
    assert any(p.startswith("targets['main db'] (key): expected a target name") for p in problems)
    assert any(p.startswith("targets.ok.search_path[0]: expected a plain schema name") for p in problems)


def test_missing_required_keys() -> None:
    problems = _problems("version: 1\n")
    assert "targets: expected a value: this key is required (got nothing)" in problems
    assert not any(p.startswith("identity") for p in problems)  # only needed to serve MCP / the wire proxy


def test_identity_is_optional_for_checking() -> None:
    config = parse_config("version: 1\ntargets: {main: {dsn: 'host=x'}}\n", "t")
    assert config.identity is None


def test_wrong_type() -> None:
    (problem,) = _problems(MINIMAL.replace("target: main}", "target: main, require_where: maybe}"))
    assert problem == "rules[0].require_where: expected true or false (got 'maybe')"


def test_yaml_syntax_error_reports_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("version: 1\ntargets:\n  main: {dsn: x\nidentity: {}\n", "broken.yaml")
    assert info.value.code == "config_syntax"
    (problem,) = info.value.problems
    assert problem.path.startswith("line ") and ", column " in problem.path
    assert str(info.value).startswith("broken.yaml: 1 problem:")


def test_yaml_syntax_error_line_number_is_right() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("version: 1\nrules:\n  - name: a\n    target: b: c\n")
    assert info.value.problems[0].path.startswith("line 4,")


def test_duplicate_yaml_keys_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "rules: []\n")
    assert info.value.code == "config_syntax"
    assert "duplicate key 'rules'" in str(info.value)


def test_yaml_is_loaded_safely() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("version: !!python/object/apply:os.system ['true']\n")
    assert info.value.code == "config_syntax"


@pytest.mark.parametrize("text", ["", "   \n# only a comment\n"])
def test_empty_file(text: str) -> None:
    (problem,) = _problems(text)
    assert problem.startswith("(top level): expected a mapping") and problem.endswith("(got an empty document)")


@pytest.mark.parametrize("text", ["- version: 1\n", "just a string\n", "42\n"])
def test_non_mapping_top_level(text: str) -> None:
    (problem,) = _problems(text)
    assert problem.startswith("(top level): expected a mapping")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    assert info.value.code == "config_unreadable"


# -- JSON Schema ------------------------------------------------------------------------------------


def test_schema_accepts_the_examples_and_refuses_mistakes() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = config_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in ("pgwarden.yaml", "public_cases.yaml"):
        data = yaml.safe_load((EXAMPLES / name).read_text())
        errors = list(validator.iter_errors(data))
        assert not errors, [e.message for e in errors]
    bad = yaml.safe_load(MINIMAL)
    bad["rules"][0]["statments"] = {}
    assert list(validator.iter_errors(bad))


# -- secrets ----------------------------------------------------------------------------------------


def test_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWARDEN_TEST_SECRET", "s3cret")
    assert resolve_secret(SecretRef(env="PGWARDEN_TEST_SECRET")) == "s3cret"
    assert resolve_secret_bytes(SecretRef(env="PGWARDEN_TEST_SECRET")) == b"s3cret"


def test_secret_env_unset_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGWARDEN_TEST_SECRET", raising=False)
    with pytest.raises(SecretError) as info:
        resolve_secret(SecretRef(env="PGWARDEN_TEST_SECRET"))
    assert info.value.code == "secret_env_unset" and "PGWARDEN_TEST_SECRET" in info.value.message
    monkeypatch.setenv("PGWARDEN_TEST_SECRET", "")
    with pytest.raises(SecretError) as info:
        resolve_secret(SecretRef(env="PGWARDEN_TEST_SECRET"))
    assert info.value.code == "secret_empty"


def test_secret_from_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "key"
    secret.write_bytes(b"k3y-value\n")
    secret.chmod(0o600)
    assert resolve_secret(SecretRef(file="key"), base_dir=tmp_path) == "k3y-value"
    assert not caplog.records
    secret.chmod(0o644)
    assert resolve_secret_bytes(SecretRef(file=str(secret))) == b"k3y-value"
    assert any("readable by every user" in r.getMessage() for r in caplog.records)
    assert not any("k3y-value" in r.getMessage() for r in caplog.records)


def test_secret_file_problems(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as info:
        resolve_secret(SecretRef(file=str(tmp_path / "missing")))
    assert info.value.code == "secret_file_missing"
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(SecretError) as info:
        resolve_secret(SecretRef(file=str(tmp_path / "empty")))
    assert info.value.code == "secret_empty"
    with pytest.raises(SecretError) as info:
        resolve_secret(SecretRef(file=str(tmp_path)))
    assert info.value.code == "secret_file_unreadable"
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    assert resolve_secret_bytes(SecretRef(file=str(tmp_path / "binary"))) == b"\xff\xfe\x00"
    with pytest.raises(SecretError) as info:
        resolve_secret(SecretRef(file=str(tmp_path / "binary")))
    assert info.value.code == "secret_not_text" and "\\xff" not in info.value.message


# -- the command line -------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgwarden.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def test_cli_config_check_ok() -> None:
    result = _cli("config", "check", "examples/pgwarden.yaml")
    assert result.returncode == 0, result.stderr
    version = load_config(EXAMPLES / "pgwarden.yaml").policy_version[:12]
    assert result.stdout.strip() == f"examples/pgwarden.yaml: ok (2 rules, 1 target, policy version {version})"


def test_cli_config_check_lists_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("version: 1", "version: 3").replace("target: main}", "target: other}"))
    result = _cli("config", "check", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{bad}: 2 problems:" in result.stderr
    assert "  version: expected 1 (got 3)" in result.stderr
    assert "  rules[0].target: expected the name of a target" in result.stderr


def test_cli_config_check_missing_file(tmp_path: Path) -> None:
    result = _cli("config", "check", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "file not found" in result.stderr


def test_cli_config_schema_is_json_schema() -> None:
    result = _cli("config", "schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema == json.loads(json.dumps(config_json_schema()))
    assert result.stdout.startswith('{\n  "')  # indent 2
    jsonschema = pytest.importorskip("jsonschema")
    data = yaml.safe_load((EXAMPLES / "pgwarden.yaml").read_text())
    jsonschema.validate(data, schema)


def test_cli_version_and_usage() -> None:
    result = _cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("pgwarden ")
    assert _cli().returncode == 2
    assert _cli("config").returncode == 2
    assert _cli("frobnicate").returncode == 2


def test_cli_check_is_wired_and_every_command_shares_one_exit_table() -> None:
    result = _cli("check", "--help")
    assert result.returncode == 0 and "usage: pgwarden check" in result.stdout
    top = _cli("--help").stdout
    for line in ("2  bad usage", "4  held: needs a human's approval"):
        assert line in top and line in result.stdout


def test_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    from pgwarden.cli import main

    assert main(["config", "check", str(EXAMPLES / "public_cases.yaml")]) == 0
    assert ": ok (2 rules, 1 target, policy version " in capsys.readouterr().out


@pytest.mark.parametrize("where", ["target", "mask"])
def test_a_secret_typed_inline_is_refused_and_not_echoed(where: str) -> None:
    if where == "target":
        text = _edit(targets={"main": {"dsn": "host=x", "password": "hunter2"}})
        path = "targets.main.password"
    else:
        text = MINIMAL + ("masking: {columns: [{column: public.customers.email, strategy: hash, "
                          "key: hunter2}]}\n")
        path = "masking.columns[0].key"
    (problem,) = _problems(text)
    assert problem.startswith(f"{path}: expected a reference to a secret, {{env: VARIABLE}} or {{file: path}}")
    assert "hunter2" not in problem


def test_unknown_key_value_is_not_echoed() -> None:
    (problem,) = _problems(_edit(targets={"main": {"dsn": "host=x", "passwd": "hunter2"}}))
    assert problem.startswith("targets.main.passwd: unknown key; did you mean 'password'?")
    assert "hunter2" not in problem and problem.endswith("(got key 'passwd')")
