"""The MCP server: pgwarden's tools on the SDK's ``MCPServer``, for stdio and streamable HTTP alike.

Every tool call finds its principal afresh (:data:`PrincipalSource`: the verified bearer token of the
HTTP request, or ``PGWARDEN_TOKEN`` verified again over stdio) and runs through :class:`Warden`.
Statements that a rule lets the session's own human approve are asked about in the client when it
declared elicitation — a tool parameter resolved by ``Resolve(...)`` returning ``Elicit(...)``, which
the SDK carries over both the 2025-11-25 push model and the 2026-07-28 multi-round-trip model —
and held as ``pending_approval`` otherwise.
"""


from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.auth.settings import AuthSettings
from mcp.server.elicitation import AcceptedElicitation, CancelledElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.server.request_state import RequestStateSecurity
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from pgwarden import __version__
from pgwarden.engine.identity import AuthenticationError
from pgwarden.engine.principal import Principal
from pgwarden.engine.runtime import Runtime
from pgwarden.errors import PgwardenError

from ._params import bind_parameters as bind
from ._results import ExplainOut, MigrationOut, QueryOut, compact, refusal
from .tools import Answer, Warden

__all__ = ["Confirm", "PrincipalSource", "build_server"]

PrincipalSource = Callable[[], "Principal | None"]

INSTRUCTIONS = """pgwarden is a governed door to a PostgreSQL database. You hold no credential: every statement
is decided by policy for you, masked columns come back masked, and some statements wait for a human.
Start with my_permissions (what you may do) and list_tables / describe_table (what you may see).
Use query for reads, execute for writes, migrate for schema changes (dry_run first), explain for plans.
A result with status "pending_approval" ran nothing yet: call wait_for_approval with its id (repeat while
pending); it returns the statement's result once a human approves. Errors carry a code, the reason and
what is allowed instead: change the statement rather than retrying it unchanged."""

_READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)
_MIGRATE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)


class Confirm(BaseModel):
    """What the human at the client answers about a held statement."""

    approve: bool = Field(default=True, title="Run it", description="run this statement now, as the agent's user")


SqlArg = Annotated[str, Field(description="PostgreSQL text; $1, $2 … are filled from params")]
ParamsArg = Annotated[list[Any] | None, Field(
    default=None, description="values for $1, $2 … (strings, numbers, booleans, null, JSON objects)")]


def _answer(outcome: Any) -> Answer:
    if isinstance(outcome, AcceptedElicitation):
        if outcome.data is None:
            return None  # nobody was asked
        return "accept" if getattr(outcome.data, "approve", False) else "decline"
    if isinstance(outcome, CancelledElicitation):
        return "cancel"
    return "decline"


def _can_elicit(ctx: Context) -> bool:
    try:
        caps = ctx.client_capabilities
    except Exception:
        return False
    elicitation = caps.elicitation if caps is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def _session_key(ctx: Context) -> str:
    try:
        return f"mcp:{id(ctx.session):x}"
    except Exception:
        return "mcp"


def build_server(runtime: Runtime, principal_source: PrincipalSource, *, target: str | None = None,
                 auth: AuthSettings | None = None, token_verifier: Any = None,
                 request_state_key: bytes | None = None) -> tuple[MCPServer, Warden]:
    """The MCP server over ``runtime``; ``principal_source`` names the caller of each tool call."""
    warden = Warden(runtime, target)
    security = (RequestStateSecurity(keys=[request_state_key]) if request_state_key
                else RequestStateSecurity.ephemeral())
    server = MCPServer("pgwarden", title="pgwarden — governed PostgreSQL", version=__version__,
                       instructions=INSTRUCTIONS, auth=auth, token_verifier=token_verifier,
                       request_state_security=security)

    def who() -> Principal:
        try:
            principal = principal_source()
        except AuthenticationError as exc:
            raise refusal(str(exc.code), f"{exc.message}; restart the server with a valid PGWARDEN_TOKEN",
                          sqlstate="28000") from None
        if principal is None:
            raise refusal("unauthenticated", "no verified token on this request", sqlstate="28000")
        return principal

    async def guarded(fn, *args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except ToolError:
            raise
        except PgwardenError as exc:
            raise refusal(exc.code, exc.message, sqlstate=exc.sqlstate) from None

    async def ask(ctx: Context, sql: str) -> Elicit[Confirm] | None:
        if not _can_elicit(ctx):
            return None
        try:
            question = await warden.ask_self(who(), sql)
        except (PgwardenError, ToolError):
            return None  # the tool body reports the problem
        return Elicit(question, Confirm) if question else None

    async def ask_query(sql: str, params: list[Any] | None, ctx: Context) -> Elicit[Confirm] | None:
        try:
            return await ask(ctx, bind(sql, params))
        except PgwardenError:
            return None

    async def ask_execute(sql: str, params: list[Any] | None, ctx: Context) -> Elicit[Confirm] | None:
        try:
            return await ask(ctx, bind(sql, params))
        except PgwardenError:
            return None

    async def ask_migrate(name: str, sql: str, dry_run: bool, ctx: Context) -> Elicit[Confirm] | None:
        if dry_run or not _can_elicit(ctx):
            return None
        try:
            question = await warden.migrate(who(), _session_key(ctx), name, sql, dry_run=False, question_only=True)
        except (PgwardenError, ToolError):
            return None
        return Elicit(question, Confirm) if question else None

    @server.tool(title="Query (read-only)", annotations=_READ, description=(
        "Run a read-only SQL statement (SELECT, WITH … SELECT, SHOW, VALUES) and get a compact result: "
        "columns [{name, type, masked}], rows as arrays, row_count, truncated (true when the row limit cut it). "
        "Masked columns come back masked (that is policy, not an error). Pass values as params with $1, $2 "
        "placeholders instead of quoting them yourself. max_rows caps the rows returned (the rule's own limit "
        "still applies). Writes are refused here: use execute."))
    async def query(sql: SqlArg, ctx: Context, params: ParamsArg = None,
                    max_rows: Annotated[int | None, Field(default=None, ge=1, le=10000,
                                                          description="return at most this many rows")] = None,
                    approval: Annotated[ElicitationResult[Confirm], Resolve(ask_query)] = None,
                    ) -> Annotated[CallToolResult, QueryOut]:
        principal = who()
        text = await guarded(_bound, sql, params)
        return compact(await guarded(warden.run_sql, principal, _session_key(ctx), text, tool="query",
                                     max_rows=max_rows, answer=_answer(approval)))

    @server.tool(title="Execute (write)", annotations=_WRITE, description=(
        "Run a writing statement (INSERT, UPDATE, DELETE, or what your rule allows) as policy permits. "
        "UPDATE and DELETE usually need a WHERE clause. Use $1, $2 placeholders with params. If a human must "
        "approve, you get status 'pending_approval' with an approval id at once and nothing has run: call "
        "wait_for_approval(id) to wait for the decision and receive the result. Schema changes go through migrate."))
    async def execute(sql: SqlArg, ctx: Context, params: ParamsArg = None,
                      approval: Annotated[ElicitationResult[Confirm], Resolve(ask_execute)] = None,
                      ) -> Annotated[CallToolResult, QueryOut]:
        principal = who()
        text = await guarded(_bound, sql, params)
        return compact(await guarded(warden.run_sql, principal, _session_key(ctx), text, tool="execute",
                                     answer=_answer(approval)))

    @server.tool(title="Migrate (schema change)", annotations=_MIGRATE, description=(
        "Analyse and apply a schema migration script (several statements). dry_run=true (do this first) lints it "
        "for locking hazards, shows each statement's policy decision, and runs it in a transaction that is rolled "
        "back to report the locks it takes on which tables; nothing changes. dry_run=false asks for approval "
        "(status 'pending_approval' → wait_for_approval) and then applies it in one transaction with a "
        "lock_timeout. Migrations are recorded by name: re-applying the same name and script is a no-op; the "
        "same name with a different script is refused."))
    async def migrate(name: Annotated[str, Field(description="stable migration name, e.g. '2026_12_01_add_status'")],
                      sql: Annotated[str, Field(description="the migration script (one or more statements)")],
                      ctx: Context,
                      dry_run: Annotated[bool, Field(default=True, description="analyse only; change nothing")] = True,
                      approval: Annotated[ElicitationResult[Confirm], Resolve(ask_migrate)] = None,
                      ) -> Annotated[CallToolResult, MigrationOut]:
        principal = who()
        return compact(await guarded(warden.migrate, principal, _session_key(ctx), name, sql, dry_run=dry_run,
                                     answer=_answer(approval)))

    @server.tool(title="List tables", annotations=_READ, description=(
        "List the tables and views you may read (others are not shown), with their column count and which "
        "columns are masked for you. Use describe_table for columns, keys and indexes."))
    async def list_tables() -> dict[str, Any]:
        return await guarded(warden.list_tables, who())

    @server.tool(title="Describe table", annotations=_READ, description=(
        "Columns (name, type, masked), primary/foreign keys, constraints, indexes and the planner's row estimate "
        "of one table or view you may read. name is 'table' or 'schema.table'."))
    async def describe_table(name: Annotated[str, Field(description="'table' or 'schema.table'")],
                             ctx: Context) -> dict[str, Any]:
        return await guarded(warden.describe_table, who(), _session_key(ctx), name)

    @server.tool(title="Explain plan", annotations=_READ, description=(
        "Show PostgreSQL's plan for a statement (EXPLAIN, text format). analyze=true runs it to get real timings "
        "and row counts, and is allowed only for read-only statements."))
    async def explain(sql: SqlArg, ctx: Context, params: ParamsArg = None,
                      analyze: Annotated[bool, Field(default=False, description="run it (read-only only)")] = False,
                      ) -> Annotated[CallToolResult, ExplainOut]:
        principal = who()
        text = await guarded(_bound, sql, params)
        return compact(await guarded(warden.explain, principal, _session_key(ctx), text, analyze))

    @server.tool(title="My permissions", annotations=_READ, description=(
        "What you may do on this database: your rule, statement classes run without approval, what needs "
        "approval and by whom, schemas and tables, row limit, timeouts and masked columns. Read it before "
        "planning instead of probing with statements."))
    async def my_permissions() -> dict[str, Any]:
        return warden.permissions(who())

    @server.tool(title="Approval status", annotations=_READ, description=(
        "The state of one of your approval requests (pending, approved, denied, expired, used) without waiting."))
    async def approval_status(id: Annotated[str, Field(description="approval request id")]) -> dict[str, Any]:
        return await guarded(warden.approval_status, who(), id)

    @server.tool(title="Wait for approval", annotations=_WRITE, description=(
        "Wait up to `seconds` (at most 50) for a decision on one of your approval requests. When approved, the "
        "held statement runs now and its result is returned (status 'ok'); while still pending you get "
        "status 'pending_approval' again — call it again. Denied or expired requests come back as errors."))
    async def wait_for_approval(id: Annotated[str, Field(description="approval request id")],
                                ctx: Context,
                                seconds: Annotated[float, Field(default=50, ge=0, le=50,
                                                                description="longest wait, seconds")] = 50,
                                ) -> Annotated[CallToolResult, QueryOut]:
        out = await guarded(warden.wait_for_approval, who(), _session_key(ctx), id, seconds)
        if "checksum" in out:  # a migration released through its approval
            out = {"status": "ok", "command": "MIGRATE", "row_count": len(out.get("statements", [])),
                   "migration": out}
        return compact(out)

    return server, warden


async def _bound(sql: str, params: list[Any] | None) -> str:
    return bind(sql, params)
