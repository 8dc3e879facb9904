"""import-pg-cron: turn an app's pg_cron jobs into the worker's own schedules.

`plan(conn)` reads cron.job and decides what each job becomes:
- `select job_queue_enqueue(...)` -> a schedule of that task type, payload, queue, priority
  and max_attempts (`run_at` and `dedupe_key` are dropped and the plan says so);
- `select [schema.]fn()` -> a `call_function` schedule (`{"function": "schema.fn"}`);
- `select net.http_post(url, headers, body, ...)` -> a `call_endpoint` schedule, plus the
  HANDLERS_ENDPOINTS entry (URL, secret header, timeout) for the operator to add;
- anything else, or a job the schedules cannot express (pg_cron's `30 seconds`, `$`, a job
  of another database) -> not convertible, with the reason.
The name, cron expression and timezone (`cron.timezone`, else GMT) are kept; an inactive job
becomes a paused schedule. `format_plan()` is the dry run's table. `apply()` moves each job in
one transaction (schedule created, audit row written, `cron.unschedule`), and
`endpoint_settings()` is the JSON to add to HANDLERS_ENDPOINTS.

Commands are read with PostgreSQL's own parser (pglast) and accepted only in those shapes,
built from constants, `||`, `jsonb_build_object`, `'...'::jsonb` casts, named or positional
arguments, and scalar sub-selects of `vault.decrypted_secrets` by a literal name. Nothing
of a command is executed: the accepted shapes are evaluated here, and a Vault lookup is one
parameterised query by name, so no command text ever reaches the database as SQL.

Secrets (a Vault value, a credential-looking header) go into the endpoint entry only: never
into a payload, a schedule row, the audit row or a log line. The dry-run table says where
each comes from (`vault:service_role_key`) but not what it is; `endpoint_settings()` is the
one place its value is shown.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import urllib.parse
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import asyncpg
import pydantic
import structlog
from asyncpg.pool import PoolConnectionProxy
from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, SQLValueFunctionOp, SubLinkType
from pglast.parser import ParseError

from worker import errors, queries, scheduler

log = structlog.get_logger("worker.admin.pgcron")

Q = queries.load("worker.admin", "pgcron.sql")

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

PG_CRON_TIMEZONE = "GMT"
"""pg_cron's timezone before 1.5, and the default of its cron.timezone setting since."""

# The handlers' own rules (handlers/settings.py), repeated because admin/ never imports
# handlers: a call_function name, an endpoint name, a header name.
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?")
_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_ENDPOINT_MAX_TIMEOUT_S = 600.0
_URL = pydantic.TypeAdapter(pydantic.AnyHttpUrl)

_SCHEDULE_NAME_BAD = re.compile(r"[^A-Za-z0-9_.:-]+")
_ENDPOINT_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
_SECONDS = re.compile(r"\s*\d+\s+seconds?\s*", re.IGNORECASE)
# Header names that carry credentials, and values that look like one whatever the name.
_SECRET_HEADER = re.compile(r"auth|cookie|key|token|secret|passw|signature")
_SECRET_VALUE = re.compile(r"(bearer|basic|token)\s+\S", re.IGNORECASE)
_AUTH_SCHEME = re.compile(r"(bearer|basic|token)\s+", re.IGNORECASE)

# -- what a plan holds ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CronJob:
    """One row of cron.job."""

    jobid: int
    jobname: str | None
    schedule: str
    command: str = field(repr=False)  # may hold a pasted secret
    database: str
    username: str
    active: bool

    @classmethod
    def from_row(cls, row: asyncpg.Record | Mapping[str, Any]) -> CronJob:
        return cls(
            jobid=row["jobid"],
            jobname=row["jobname"],
            schedule=row["schedule"],
            command=row["command"],
            database=row["database"],
            username=row["username"],
            active=row["active"],
        )


@dataclass(frozen=True, slots=True)
class Schedule:
    """The job_schedules row a job becomes (missed-tick policy: the default, latest)."""

    name: str
    cron: str
    timezone: str
    task_type: str
    payload: dict[str, Any]
    queue: str = "default"
    priority: int = 0
    max_attempts: int | None = None
    active: bool = True


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A HANDLERS_ENDPOINTS entry for a `net.http_post` job. The `*_shown` fields say where
    the URL and secret come from, without the values."""

    name: str
    url: str = field(repr=False)
    url_shown: str
    secret_header: str | None
    secret: str | None = field(repr=False)
    secret_shown: str | None
    timeout_s: float | None

    def setting(self) -> dict[str, Any]:
        """The entry as HANDLERS_ENDPOINTS takes it, secret included."""
        entry: dict[str, Any] = {"url": self.url}
        if self.secret is not None and self.secret_header is not None:
            entry["secret"] = self.secret
            entry["secret_header"] = self.secret_header
        if self.timeout_s is not None:
            entry["timeout_s"] = self.timeout_s
        return entry

    def same_target(self, other: Endpoint) -> bool:
        return (self.url, self.secret_header, self.secret, self.timeout_s) == (
            other.url,
            other.secret_header,
            other.secret,
            other.timeout_s,
        )


@dataclass(frozen=True, slots=True)
class Conversion:
    """A job that converts: its schedule, and what to add to settings for it."""

    job: CronJob
    schedule: Schedule
    endpoint: Endpoint | None = None
    """For call_endpoint: the HANDLERS_ENDPOINTS entry the payload names."""
    function: str | None = None
    """For call_function: the name to add to HANDLERS_CALL_FUNCTIONS."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Refusal:
    """A job that stays in pg_cron, and why."""

    job: CronJob
    name: str
    reason: str


Step: TypeAlias = Conversion | Refusal


@dataclass(frozen=True, slots=True)
class Plan:
    database: str
    timezone: str
    steps: tuple[Step, ...]

    @property
    def conversions(self) -> tuple[Conversion, ...]:
        return tuple(step for step in self.steps if isinstance(step, Conversion))

    @property
    def refusals(self) -> tuple[Refusal, ...]:
        return tuple(step for step in self.steps if isinstance(step, Refusal))


@dataclass(frozen=True, slots=True)
class ApplyReport:
    plan: Plan
    converted: tuple[Conversion, ...]
    """Now schedules; their pg_cron jobs are gone."""
    failed: tuple[tuple[Conversion, str], ...]
    """Convertible, but refused when applied (the job changed, the name was taken...):
    still in pg_cron, nothing of them written."""

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        unique: dict[str, Endpoint] = {}
        for conversion in self.converted:
            if conversion.endpoint is not None:
                unique.setdefault(conversion.endpoint.name, conversion.endpoint)
        return tuple(unique.values())

    @property
    def functions(self) -> tuple[str, ...]:
        names = (c.function for c in self.converted if c.function is not None)
        return tuple(dict.fromkeys(names))


# -- reading a command ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Vault:
    """`(select decrypted_secret from vault.decrypted_secrets where name = '<name>')`"""

    name: str


@dataclass(frozen=True, slots=True)
class Text:
    """A text value: constants and Vault secrets, concatenated."""

    parts: tuple[str | Vault, ...]

    def vaults(self) -> tuple[str, ...]:
        return tuple(part.name for part in self.parts if isinstance(part, Vault))

    def value(self, secrets: Mapping[str, str]) -> str:
        return "".join(secrets[p.name] if isinstance(p, Vault) else p for p in self.parts)

    def constant(self) -> str | None:
        """The value when no Vault secret is in it."""
        return None if self.vaults() else self.value({})


@dataclass(frozen=True, slots=True)
class Const:
    """A constant JSON value: null, a boolean, a number or a parsed JSON literal."""

    value: Any


@dataclass(frozen=True, slots=True)
class Obj:
    """jsonb_build_object(k1, v1, ...)"""

    items: tuple[tuple[str, Expr], ...]


Expr: TypeAlias = Text | Const | Obj
_Want = Literal["text", "jsonb", "int", "any"]


@dataclass(frozen=True, slots=True)
class Enqueue:
    """`select job_queue_enqueue(...)`, evaluated: all of it constant."""

    task_type: str
    payload: dict[str, Any]
    queue: str
    priority: int
    max_attempts: int | None
    dropped: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CallFunction:
    """`select [schema.]fn()`"""

    name: str


@dataclass(frozen=True, slots=True)
class HttpPost:
    """`select net.http_post(...)`; the URL and header values may hold Vault secrets."""

    url: Text = field(repr=False)  # a query string may hold a token
    headers: tuple[tuple[str, Text], ...] = field(repr=False)  # and a header the secret
    body: dict[str, Any]
    params: tuple[tuple[str, str], ...]
    timeout_ms: int | None

    def vaults(self) -> tuple[str, ...]:
        found = list(self.url.vaults())
        for _, value in self.headers:
            found.extend(value.vaults())
        return tuple(dict.fromkeys(found))


Command: TypeAlias = Enqueue | CallFunction | HttpPost

_ENQUEUE_PARAMS = (
    "task_type",
    "payload",
    "run_at",
    "queue",
    "priority",
    "max_attempts",
    "dedupe_key",
)
# pg_net's net.http_post(url, body, params, headers, timeout_milliseconds).
_HTTP_POST_PARAMS = ("url", "body", "params", "headers", "timeout_milliseconds")
_NOW_FUNCTIONS = {"now", "transaction_timestamp", "statement_timestamp", "clock_timestamp"}
_STATEMENTS = {
    "DeleteStmt": "a DELETE",
    "UpdateStmt": "an UPDATE",
    "InsertStmt": "an INSERT",
    "MergeStmt": "a MERGE",
    "TruncateStmt": "a TRUNCATE",
    "VacuumStmt": "a VACUUM",
    "CallStmt": "a CALL (a procedure)",
    "DoStmt": "a DO block",
    "RefreshMatViewStmt": "a REFRESH MATERIALIZED VIEW (the refresh_metrics task refreshes "
    "allow-listed views: schedule it by hand)",
}
_EXPRESSIONS = {
    "ColumnRef": "a column reference",
    "ParamRef": "a parameter",
    "FuncCall": "a function call",
    "SubLink": "a sub-select",
    "A_Expr": "an operator",
    "BoolExpr": "AND/OR/NOT",
    "CaseExpr": "a CASE expression",
    "CoalesceExpr": "COALESCE",
    "SQLValueFunction": "a current_* value",
    "A_ArrayExpr": "an array",
    "RowExpr": "a row",
    "TypeCast": "a cast",
    "SelectStmt": "a select",
    "A_Const": "a constant",
}
_CLAUSES = {
    "distinctClause": "DISTINCT",
    "intoClause": "INTO",
    "fromClause": "FROM",
    "whereClause": "WHERE",
    "groupClause": "GROUP BY",
    "havingClause": "HAVING",
    "windowClause": "WINDOW",
    "valuesLists": "VALUES",
    "sortClause": "ORDER BY",
    "limitCount": "LIMIT",
    "limitOffset": "OFFSET",
    "lockingClause": "FOR UPDATE",
    "withClause": "WITH",
    "op": "UNION/INTERSECT/EXCEPT",
    "agg_star": "(*)",
    "agg_order": "ORDER BY",
    "agg_filter": "FILTER",
    "over": "OVER",
    "func_variadic": "VARIADIC",
    "agg_distinct": "DISTINCT",
    "indirection": "a subscript",
    "typmods": "a type modifier",
    "arrayBounds": "an array type",
}
# Attributes that never change what a node means (source positions, defaults).
_IGNORED_ATTRS = {
    "location",
    "rexpr_list_start",
    "rexpr_list_end",
    "argnumber",
    "subLinkId",
    "inh",
    "relpersistence",
    "typemod",
}


def read_command(command: str) -> Command:
    """What a pg_cron command does, when it is one of the shapes that convert; otherwise
    ScheduleError saying why not (never quoting the command: it may hold a secret)."""
    try:
        statements = parse_sql(command)
    except ParseError as exc:
        raise _refuse(f"not valid SQL (syntax error at character {exc.args[-1]})") from None
    if len(statements) != 1:
        raise _refuse(
            "an empty command" if not statements else f"{len(statements)} statements, not one"
        )
    statement = statements[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        kind = type(statement).__name__
        described = _STATEMENTS.get(kind, f"a {kind.removesuffix('Stmt').upper()} statement")
        raise _refuse(f"{described}, not a select of one function")
    _only(statement, "targetList")
    targets = statement.targetList or ()
    if len(targets) != 1:
        raise _refuse(f"a select of {len(targets)} values, not of one function")
    target = targets[0]
    _only(target, "val", "name")
    if not isinstance(target.val, ast.FuncCall):
        raise _refuse(f"a select of {_describe(target.val)}, not of a function")
    return _call(target.val)


def _call(call: ast.FuncCall) -> Command:
    _only(call, "funcname", "args", "funcformat")
    schema, name = _function_name(call)
    shown = f"{schema}.{name}" if schema else name
    if name == "job_queue_enqueue" and schema in (None, "public"):
        return _enqueue(call)
    if schema == "net":
        if name == "http_post":
            return _http_post(call)
        raise _refuse(f"net.{name}(): only net.http_post converts (to call_endpoint)")
    if schema == "cron":
        raise _refuse(f"cron.{name}(): a pg_cron function")
    if call.args:
        raise _refuse(f"{shown}() with arguments: call_function calls functions without arguments")
    if shown != shown.lower() or not _FUNCTION_NAME.fullmatch(shown):
        raise _refuse(f'quoted function name "{shown}": call_function takes plain names')
    return CallFunction(shown)


def _function_name(call: ast.FuncCall) -> tuple[str | None, str]:
    parts = [part.sval for part in call.funcname or () if isinstance(part, ast.String)]
    if len(parts) == 1:
        return None, str(parts[0])
    if len(parts) == 2:
        return str(parts[0]), str(parts[1])
    raise _refuse("a function name with a database part")


def _enqueue(call: ast.FuncCall) -> Enqueue:
    args = _bind("job_queue_enqueue", call, _ENQUEUE_PARAMS)
    if "task_type" not in args:
        raise _refuse("job_queue_enqueue() without a task type")
    exprs = {
        key: _no_vault(_expr(node, _enqueue_want(key)), key)
        for key, node in args.items()
        if key != "run_at"
    }
    dropped: list[str] = []
    if "run_at" in args and _run_at_is_now(args["run_at"]):
        dropped.append("run_at now() dropped: a schedule's job is due at its tick")
    dedupe = _text_or_none(exprs.get("dedupe_key"), "dedupe_key")
    if dedupe is not None:
        dropped.append(
            f"dedupe_key '{dedupe}' dropped: a schedule deduplicates each tick "
            "(schedule:<name>:<tick>), not across ticks"
        )
    task_type = _text_or_none(exprs["task_type"], "task_type")
    if task_type is None:
        raise _refuse("job_queue_enqueue() with a null task type")
    payload = _json(exprs.get("payload"))
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise _refuse("job_queue_enqueue() payload is not a JSON object")
    return Enqueue(
        task_type=task_type,
        payload=payload,
        queue=_text_or_none(exprs.get("queue"), "queue") or "default",
        priority=_int_or_none(exprs.get("priority"), "priority") or 0,
        max_attempts=_int_or_none(exprs.get("max_attempts"), "max_attempts"),
        dropped=tuple(dropped),
    )


def _enqueue_want(key: str) -> _Want:
    wants: dict[str, _Want] = {"payload": "jsonb", "priority": "int", "max_attempts": "int"}
    return wants.get(key, "text")


def _run_at_is_now(node: ast.Node) -> bool:
    """False: run_at is null (as if left out); True: the current time (dropped: the same as
    leaving it out). Any other value, a delay, has no place in a schedule."""
    if isinstance(node, ast.A_Const) and node.isnull:
        return False
    if isinstance(node, ast.SQLValueFunction):
        if node.op == SQLValueFunctionOp.SVFOP_CURRENT_TIMESTAMP:
            return True
    elif isinstance(node, ast.FuncCall):
        _only(node, "funcname", "funcformat")
        schema, name = _function_name(node)
        if schema in (None, "pg_catalog") and name in _NOW_FUNCTIONS:
            return True
    raise _refuse("run_at other than now(): a schedule's job is due at its tick")


def _http_post(call: ast.FuncCall) -> HttpPost:
    args = _bind("net.http_post", call, _HTTP_POST_PARAMS)
    if "url" not in args:
        raise _refuse("net.http_post() without a url")
    url = _expr(args["url"], "text")
    if not isinstance(url, Text):
        raise _refuse("net.http_post() with a null url")
    body: Any = {}
    if "body" in args:
        body = _json(_no_vault(_expr(args["body"], "jsonb"), "body"))
        if not isinstance(body, dict):
            raise _refuse("net.http_post() body is not a JSON object (call_endpoint posts one)")
    params: Any = {}
    if "params" in args:
        params = _json(_no_vault(_expr(args["params"], "jsonb"), "params"))
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            raise _refuse("net.http_post() params are not a JSON object of strings")
    timeout_ms = None
    if "timeout_milliseconds" in args:
        timeout_ms = _int_or_none(_expr(args["timeout_milliseconds"], "int"), "timeout")
    headers = _headers(args["headers"]) if "headers" in args else ()
    return HttpPost(url, headers, body, tuple(params.items()), timeout_ms)


def _headers(node: ast.Node) -> tuple[tuple[str, Text], ...]:
    expr = _expr(node, "jsonb")
    if isinstance(expr, Const) and isinstance(expr.value, dict):
        items: Iterable[tuple[str, Expr]] = (
            (key, Text((value,)) if isinstance(value, str) else Const(value))
            for key, value in expr.value.items()
        )
    elif isinstance(expr, Obj):
        items = expr.items
    else:
        raise _refuse("net.http_post() headers are not a JSON object")
    headers: list[tuple[str, Text]] = []
    for key, value in items:
        if not isinstance(value, Text):
            raise _refuse(f"net.http_post() header {key!r} is not text")
        headers.append((key, value))
    return tuple(headers)


def _bind(function: str, call: ast.FuncCall, params: tuple[str, ...]) -> dict[str, ast.Node]:
    """Arguments by parameter name, given positionally or as `name => v` / `name := v`."""
    bound: dict[str, ast.Node] = {}
    named = False
    for index, arg in enumerate(call.args or ()):
        if isinstance(arg, ast.NamedArgExpr):
            _only(arg, "arg", "name")
            named, key, value = True, str(arg.name), arg.arg
            if key not in params:
                raise _refuse(f"{function}() has no parameter {key!r}")
        elif named:
            raise _refuse(f"{function}(): a positional argument after a named one")
        elif index >= len(params):
            raise _refuse(f"{function}() takes at most {len(params)} arguments")
        else:
            key, value = params[index], arg
        if key in bound:
            raise _refuse(f"{function}(): {key} given twice")
        assert value is not None
        bound[key] = value
    return bound


def _expr(node: ast.Node, want: _Want) -> Expr:
    """An argument of one of the accepted shapes, as a value; `want` is the type the
    parameter gives an untyped literal (as PostgreSQL would resolve it)."""
    if isinstance(node, ast.A_Const):
        return _const(node, want)
    if isinstance(node, ast.TypeCast):
        return _cast(node, want)
    if isinstance(node, ast.A_Expr) and want in ("text", "any"):
        return _concat(node)
    if isinstance(node, ast.SubLink) and want in ("text", "any"):
        return Text((Vault(_vault_name(node)),))
    if isinstance(node, ast.FuncCall) and want in ("jsonb", "any"):
        return _build_object(node)
    raise _refuse(
        f"{_describe(node)} where only constants, ||, jsonb_build_object, ::jsonb "
        "casts and Vault lookups convert"
    )


def _const(node: ast.A_Const, want: _Want) -> Expr:
    if node.isnull:
        return Const(None)
    value = node.val
    if isinstance(value, ast.String):
        text = str(value.sval)
        return Const(_parse_json(text)) if want == "jsonb" else _typed(Text((text,)), want)
    if isinstance(value, ast.Integer) and want in ("int", "any"):
        return Const(int(value.ival or 0))
    if isinstance(value, ast.Float) and want == "any":
        digits = str(value.fval)  # an integer too large for int4/int8 is a Float too
        if re.fullmatch(r"-?[0-9]+", digits):
            return Const(int(digits))
        number = float(digits)
        if not math.isfinite(number):
            raise _refuse("a number JSON cannot hold")
        return Const(number)
    if isinstance(value, ast.Boolean) and want == "any":
        return Const(bool(value.boolval))
    raise _refuse(f"a constant of the wrong type for a {want} parameter")


def _typed(expr: Expr, want: _Want) -> Expr:
    if want == "int":
        raise _refuse("text where a number is expected")
    return expr


def _cast(node: ast.TypeCast, want: _Want) -> Expr:
    _only(node, "arg", "typeName")
    type_name = node.typeName
    assert type_name is not None
    _only(type_name, "names")
    names = [part.sval for part in type_name.names or () if isinstance(part, ast.String)]
    target = names[-1] if names and names[:-1] in ([], ["pg_catalog"]) else None
    arg = node.arg
    if not isinstance(arg, ast.A_Const) or not isinstance(arg.val, ast.String | None):
        raise _refuse("a cast of something other than a quoted constant")
    if target in ("jsonb", "json") and want in ("jsonb", "any"):
        literal = arg.val
        return Const(None) if literal is None else Const(_parse_json(str(literal.sval)))
    if target == "text" and want in ("text", "any"):
        return _const(arg, "text")
    raise _refuse(f"a cast to {'.'.join(str(n) for n in names)} where {want} is expected")


def _concat(node: ast.A_Expr) -> Text:
    _only(node, "kind", "name", "lexpr", "rexpr")
    operator = [part.sval for part in node.name or () if isinstance(part, ast.String)]
    if node.kind != A_Expr_Kind.AEXPR_OP or operator != ["||"]:
        raise _refuse(f"the operator {' '.join(str(o) for o in operator)}: only || converts")
    if not isinstance(node.lexpr, ast.Node) or not isinstance(node.rexpr, ast.Node):
        raise _refuse("|| with one operand")
    left, right = _expr(node.lexpr, "text"), _expr(node.rexpr, "text")
    if not isinstance(left, Text) or not isinstance(right, Text):
        raise _refuse("|| with a null (the result is null)")
    return Text(left.parts + right.parts)


def _build_object(call: ast.FuncCall) -> Obj:
    _only(call, "funcname", "args", "funcformat")
    schema, name = _function_name(call)
    if schema not in (None, "pg_catalog") or name != "jsonb_build_object":
        raise _refuse(f"the function {name}() in an argument: only jsonb_build_object converts")
    args = call.args or ()
    if len(args) % 2 or any(isinstance(arg, ast.NamedArgExpr) for arg in args):
        raise _refuse("jsonb_build_object() needs key, value pairs")
    items: list[tuple[str, Expr]] = []
    for key_node, value_node in zip(args[::2], args[1::2], strict=True):
        key = _expr(key_node, "text")
        if not isinstance(key, Text) or key.constant() is None:
            raise _refuse("a jsonb_build_object() key that is not a constant text")
        items.append((str(key.constant()), _expr(value_node, "any")))
    return Obj(tuple(items))


def _vault_name(link: ast.SubLink) -> str:
    """The secret's name in `(select decrypted_secret from vault.decrypted_secrets
    where name = '<literal>')`, the one sub-select that converts."""
    _only(link, "subLinkType", "subselect")
    select = link.subselect
    if link.subLinkType != SubLinkType.EXPR_SUBLINK or not isinstance(select, ast.SelectStmt):
        raise _refuse("a sub-select other than a Vault lookup")
    _only(select, "targetList", "fromClause", "whereClause")
    tables = select.fromClause or ()
    table = tables[0] if len(tables) == 1 else None
    if not isinstance(table, ast.RangeVar):
        raise _refuse("a sub-select of something other than vault.decrypted_secrets")
    _only(table, "schemaname", "relname", "alias")
    if (table.schemaname, table.relname) != ("vault", "decrypted_secrets"):
        raise _refuse("a sub-select of something other than vault.decrypted_secrets")
    qualifiers = {None, "decrypted_secrets"}
    if table.alias is not None:
        _only(table.alias, "aliasname")
        qualifiers.add(table.alias.aliasname)
    targets = select.targetList or ()
    if len(targets) != 1 or _column(targets[0].val, qualifiers) != "decrypted_secret":
        raise _refuse("a Vault lookup of something other than decrypted_secret")
    _only(targets[0], "val", "name")
    where = select.whereClause
    if not isinstance(where, ast.A_Expr):
        raise _refuse("a Vault lookup not by name = '<literal>'")
    _only(where, "kind", "name", "lexpr", "rexpr")
    operator = [part.sval for part in where.name or () if isinstance(part, ast.String)]
    literal = where.rexpr
    if (
        where.kind != A_Expr_Kind.AEXPR_OP
        or operator != ["="]
        or _column(where.lexpr, qualifiers) != "name"
        or not isinstance(literal, ast.A_Const)
        or not isinstance(literal.val, ast.String)
    ):
        raise _refuse("a Vault lookup not by name = '<literal>'")
    return str(literal.val.sval)


def _column(node: ast.Node | None, qualifiers: set[str | None]) -> str | None:
    """The column a ColumnRef names, when it is unqualified or qualified by the table."""
    if not isinstance(node, ast.ColumnRef):
        return None
    _only(node, "fields")
    names = [part.sval for part in node.fields or () if isinstance(part, ast.String)]
    if len(names) != len(node.fields or ()) or len(names) not in (1, 2):
        return None
    if len(names) == 2 and names[0] not in qualifiers:
        return None
    return str(names[-1])


def _only(node: ast.Node, *allowed: str) -> None:
    """Refuse a node with anything set beyond the attributes named: the shapes are checked
    by what they may contain, so a clause this code never heard of is refused too."""
    for attribute in node:
        if attribute in allowed or attribute in _IGNORED_ATTRS:
            continue
        value = getattr(node, attribute)
        unset = value is None or value is False or value == ()
        if not unset and not (isinstance(value, enum.Enum) and value.value == 0):
            raise _refuse(f"{_describe(node)} with {_CLAUSES.get(attribute, attribute)}")


def _describe(node: ast.Node | None) -> str:
    if isinstance(node, ast.FuncCall):
        schema, name = _function_name(node)
        return f"the function {schema + '.' if schema else ''}{name}()"
    kind = type(node).__name__
    return _EXPRESSIONS.get(kind, f"a {kind}")


def _parse_json(text: str) -> Any:
    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=refuse_constant)
    except ValueError:
        # Never quote it: a headers literal holds the secret.
        raise _refuse("a JSON literal that does not parse") from None


def _no_vault(expr: Expr, what: str) -> Expr:
    if _vaults_in(expr):
        raise _refuse(f"a Vault secret in {what}: it would be stored in every job's row")
    return expr


def _vaults_in(expr: Expr) -> bool:
    if isinstance(expr, Text):
        return bool(expr.vaults())
    if isinstance(expr, Obj):
        return any(_vaults_in(value) for _, value in expr.items)
    return False


def _json(expr: Expr | None) -> Any:
    """The JSON value of a Vault-free expression."""
    if expr is None:
        return None
    if isinstance(expr, Text):
        return expr.value({})
    if isinstance(expr, Obj):
        return {key: _json(value) for key, value in expr.items}
    return expr.value


def _text_or_none(expr: Expr | None, what: str) -> str | None:
    if expr is None or (isinstance(expr, Const) and expr.value is None):
        return None
    if not isinstance(expr, Text):
        raise _refuse(f"{what} is not text")
    return expr.value({})


def _int_or_none(expr: Expr | None, what: str) -> int | None:
    if expr is None or (isinstance(expr, Const) and expr.value is None):
        return None
    if not isinstance(expr, Const) or not isinstance(expr.value, int):
        raise _refuse(f"{what} is not an integer")
    return int(expr.value)


def _refuse(reason: str) -> errors.ScheduleError:
    return errors.ScheduleError(reason)


# -- converting jobs (pure: everything read from the database is in the Context) -------------


@dataclass(frozen=True, slots=True)
class Context:
    """What the plan needs from the database, read beforehand."""

    database: str
    role: str
    timezone: str
    schedules: Mapping[str, tuple[str, Any]] = field(default_factory=dict)
    """Existing schedules: name -> (task_type, payload)."""
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Vault secrets the commands read, by name."""
    secret_problems: Mapping[str, str] = field(default_factory=dict)
    """Vault secrets that could not be read, by name: why."""
    function_problems: Mapping[str, str] = field(default_factory=dict)
    """Functions of `select fn()` commands that cannot be called as fn(), by name: why."""


def needs(jobs: Iterable[CronJob]) -> tuple[set[str], set[str]]:
    """The Vault secrets and the functions the convertible commands name."""
    secrets: set[str] = set()
    functions: set[str] = set()
    for job in jobs:
        try:
            command = read_command(job.command)
        except errors.ScheduleError:
            continue
        if isinstance(command, HttpPost):
            secrets.update(command.vaults())
        elif isinstance(command, CallFunction):
            functions.add(command.name)
    return secrets, functions


def build_plan(context: Context, jobs: Iterable[CronJob]) -> Plan:
    """Decide, job by job in id order, what each becomes."""
    taken: dict[str, int] = {}
    endpoints: dict[str, Endpoint] = {}
    steps: list[Step] = []
    for job in sorted(jobs, key=lambda j: j.jobid):
        name, renamed = schedule_name(job)
        try:
            conversion = _convert(job, name, context, endpoints)
            _check_name(name, context, taken)
        except errors.ScheduleError as exc:
            steps.append(Refusal(job, name, str(exc)))
            continue
        taken[name] = job.jobid
        if conversion.endpoint is not None:
            endpoints[conversion.endpoint.name] = conversion.endpoint
        notes = (*([renamed] if renamed else []), *conversion.notes)
        steps.append(dataclasses.replace(conversion, notes=notes))
    return Plan(context.database, context.timezone, tuple(steps))


def schedule_name(job: CronJob) -> tuple[str, str | None]:
    """The schedule's name (pg_cron's, made to fit schedule names), and a note if changed."""
    if not job.jobname:
        return f"pg_cron_{job.jobid}", "unnamed in pg_cron"
    name = _SCHEDULE_NAME_BAD.sub("_", job.jobname)[:128]
    if name == job.jobname:
        return name, None
    return name, f"renamed from {job.jobname!r} (schedule names use A-Z a-z 0-9 _ . : -)"


def _check_name(name: str, context: Context, taken: Mapping[str, int]) -> None:
    if name in context.schedules:
        raise _refuse(f"a schedule named '{name}' already exists")
    if name in taken:
        raise _refuse(f"job {taken[name]} becomes a schedule named '{name}' too")


def _convert(
    job: CronJob, name: str, context: Context, endpoints: Mapping[str, Endpoint]
) -> Conversion:
    if job.database != context.database:
        raise _refuse(
            f"runs in database '{job.database}', not '{context.database}': its schedule "
            f"belongs there (add it with `schedules add`, then cron.unschedule({job.jobid}))"
        )
    _check_cron(job.schedule)
    tz_problem = scheduler.timezone_error(context.timezone)
    if tz_problem is not None:
        raise _refuse(f"pg_cron's timezone: {tz_problem}")
    command = read_command(job.command)
    if isinstance(command, Enqueue):
        conversion = _from_enqueue(job, name, context, command)
    elif isinstance(command, CallFunction):
        conversion = _from_function(job, name, context, command)
    else:
        conversion = _from_http_post(job, name, context, command, endpoints)
    schedule = conversion.schedule
    problem = scheduler.schedule_problem(
        {
            "name": schedule.name,
            "cron": schedule.cron,
            "timezone": schedule.timezone,
            "task_type": schedule.task_type,
            "payload": schedule.payload,
            "queue": schedule.queue,
            "priority": schedule.priority,
            "max_attempts": schedule.max_attempts,
        }
    )
    if problem is not None:
        raise _refuse(problem)
    notes = (*conversion.notes, *_common_notes(job, schedule, context))
    return dataclasses.replace(conversion, notes=notes)


def _check_cron(expr: str) -> None:
    if _SECONDS.fullmatch(expr):
        raise _refuse(f"pg_cron's interval '{expr.strip()}': schedules tick at most once a minute")
    problem = scheduler.cron_error(expr.strip())
    if problem is None:
        return
    if "$" in expr:
        problem = "'$' (pg_cron's last day of the month) has no equivalent in schedules"
    raise _refuse(f"cron '{expr.strip()}': {problem}")


def _common_notes(job: CronJob, schedule: Schedule, context: Context) -> list[str]:
    notes: list[str] = []
    if not job.active:
        notes.append("inactive in pg_cron: imported paused")
    if job.username != context.role:
        notes.append(f"pg_cron ran it as '{job.username}'; the worker runs it as its own role")
    for other, (task_type, payload) in sorted(context.schedules.items()):
        if (task_type, payload) == (schedule.task_type, schedule.payload):
            notes.append(f"schedule '{other}' already runs this task: keep one of the two")
    return notes


def _schedule(job: CronJob, name: str, context: Context, **fields: Any) -> Schedule:
    return Schedule(
        name=name,
        cron=job.schedule.strip(),
        timezone=context.timezone,
        active=job.active,
        **fields,
    )


def _from_enqueue(job: CronJob, name: str, context: Context, command: Enqueue) -> Conversion:
    schedule = _schedule(
        job,
        name,
        context,
        task_type=command.task_type,
        payload=command.payload,
        queue=command.queue,
        priority=command.priority,
        max_attempts=command.max_attempts,
    )
    return Conversion(job, schedule, notes=command.dropped)


def _from_function(job: CronJob, name: str, context: Context, command: CallFunction) -> Conversion:
    problem = context.function_problems.get(command.name)
    if problem is not None:
        raise _refuse(problem)
    schedule = _schedule(
        job, name, context, task_type="call_function", payload={"function": command.name}
    )
    note = f"allow {command.name} in HANDLERS_CALL_FUNCTIONS"
    return Conversion(job, schedule, function=command.name, notes=(note,))


def _from_http_post(
    job: CronJob,
    name: str,
    context: Context,
    command: HttpPost,
    endpoints: Mapping[str, Endpoint],
) -> Conversion:
    for vault_name in command.vaults():
        if vault_name in context.secret_problems:
            raise _refuse(context.secret_problems[vault_name])
        if vault_name not in context.secrets:
            raise _refuse(f"vault secret '{vault_name}' was not read")
    url = _endpoint_url(command, context.secrets)
    secret_header, secret = _secret_header(command.headers)
    notes: list[str] = []
    timeout_s = None
    if command.timeout_ms is not None:
        if command.timeout_ms <= 0:
            raise _refuse("net.http_post() timeout_milliseconds is not positive")
        timeout_s = min(command.timeout_ms / 1000, _ENDPOINT_MAX_TIMEOUT_S)
        if timeout_s < command.timeout_ms / 1000:
            notes.append(f"timeout capped at {_ENDPOINT_MAX_TIMEOUT_S:g} s (call_endpoint's most)")
    endpoint = Endpoint(
        name="",
        url=url,
        url_shown=_url_shown(command),
        secret_header=secret_header,
        secret=secret.value(context.secrets) if secret is not None else None,
        secret_shown=_secret_shown(secret) if secret is not None else None,
        timeout_s=timeout_s,
    )
    endpoint = _named(endpoint, name, endpoints)
    if secret is not None and not secret.vaults():
        notes.append(
            f"the {secret_header} secret is written in the command: rotate it "
            "(cron.job_run_details keeps copies of the command)"
        )
    payload: dict[str, Any] = {"endpoint": endpoint.name}
    if command.body:
        payload["body"] = command.body
    schedule = _schedule(job, name, context, task_type="call_endpoint", payload=payload)
    return Conversion(job, schedule, endpoint=endpoint, notes=tuple(notes))


def _endpoint_url(command: HttpPost, secrets: Mapping[str, str]) -> str:
    url = command.url.value(secrets)
    try:
        _URL.validate_python(url)
    except pydantic.ValidationError:
        raise _refuse(
            f"net.http_post() url '{_url_shown(command)}' is not an http(s) URL"
        ) from None
    if command.params:
        query = urllib.parse.urlencode(command.params)
        url = f"{url}{'&' if '?' in url else '?'}{query}"
    return url


def _url_shown(command: HttpPost) -> str:
    """The URL with its Vault parts by name, and no user info or query values (a token)."""
    shown = "".join(
        f"{{vault:{part.name}}}" if isinstance(part, Vault) else part for part in command.url.parts
    )
    shown = re.sub(r"(?<=//)[^/@{}]*@", "…@", shown)
    shown = re.sub(r"\?.*", "?…", shown)
    if command.params and "?…" not in shown:
        shown += "?…"
    return shown


def _secret_header(headers: tuple[tuple[str, Text], ...]) -> tuple[str | None, Text | None]:
    """The one header an endpoint entry can carry (its secret); Content-Type JSON goes
    without saying (call_endpoint posts JSON); any other header does not convert."""
    secrets: list[tuple[str, Text]] = []
    for key, value in headers:
        if not _HEADER_NAME.fullmatch(key):
            raise _refuse(f"net.http_post() header name {key!r} is not valid")
        constant = value.constant()
        if key.lower() == "content-type" and constant is not None:
            if not constant.lower().startswith("application/json"):
                raise _refuse(f"Content-Type {constant!r}: call_endpoint posts JSON")
            continue
        if (
            value.vaults()
            or _SECRET_HEADER.search(key.lower())
            or _SECRET_VALUE.match(constant or "")
        ):
            secrets.append((key, value))
            continue
        raise _refuse(
            f"net.http_post() header {key!r}: an endpoint entry carries one secret header only"
        )
    if len(secrets) > 1:
        names = ", ".join(key for key, _ in secrets)
        raise _refuse(f"secret headers {names}: an endpoint entry carries one only")
    if not secrets:
        return None, None
    return secrets[0]


def _secret_shown(secret: Text) -> str:
    """Where a secret comes from: Vault names, an auth scheme word; constants elided."""
    if not secret.vaults():
        return "written in the command"
    shown = []
    for part in secret.parts:
        if isinstance(part, Vault):
            shown.append(f"vault:{part.name}")
        elif _AUTH_SCHEME.fullmatch(part):
            shown.append(f"'{part}'")
        else:
            shown.append("'…'")
    return " || ".join(shown)


def _named(endpoint: Endpoint, schedule: str, endpoints: Mapping[str, Endpoint]) -> Endpoint:
    """Named after the schedule; jobs posting to the same target share one entry."""
    for existing in endpoints.values():
        if existing.same_target(endpoint):
            return existing
    base = _ENDPOINT_NAME_BAD.sub("_", schedule)[:60] or "pg_cron"
    name, n = base, 1
    while name in endpoints:
        n += 1
        name = f"{base}_{n}"
    return dataclasses.replace(endpoint, name=name)


# -- planning against the database ------------------------------------------------------------


async def plan(conn: Connection, *, job_ids: Collection[int] | None = None) -> Plan:
    """Read cron.job (every job, or those in `job_ids`) and decide what each becomes. Reads
    only, in a read-only transaction; WorkerError when pg_cron or the worker's schema is not
    in this database. `conn` must not be inside a transaction."""
    here = await conn.fetchrow(Q["pgcron_context"])
    assert here is not None
    if not here["has_pg_cron"]:
        elsewhere = here["cron_database"]
        where = f"database '{elsewhere}'" if elsewhere else "pg_cron's database"
        raise errors.WorkerError(
            f"pg_cron is not installed in database '{here['database']}' (no cron.job): "
            f"connect to {where} (cron.database_name)"
        )
    if not here["has_schedules"]:
        raise errors.WorkerError(
            f"the worker's schema is not in database '{here['database']}': "
            "run `python -m worker migrate` first"
        )
    async with conn.transaction(readonly=True):
        ids = None if job_ids is None else sorted(job_ids)
        jobs = [CronJob.from_row(row) for row in await conn.fetch(Q["pgcron_jobs"], ids)]
        secret_names, function_names = needs(jobs)
        secrets, secret_problems = await _read_secrets(conn, secret_names, here["has_vault"])
        context = Context(
            database=here["database"],
            role=here["role"],
            timezone=here["cron_timezone"] or PG_CRON_TIMEZONE,
            schedules={
                row["name"]: (row["task_type"], json.loads(row["payload"]))
                for row in await conn.fetch(Q["pgcron_schedules"])
            },
            secrets=secrets,
            secret_problems=secret_problems,
            function_problems=await _function_problems(conn, function_names, here["database"]),
        )
    return build_plan(context, jobs)


async def _read_secrets(
    conn: Connection, names: Iterable[str], has_vault: bool
) -> tuple[dict[str, str], dict[str, str]]:
    found: dict[str, str] = {}
    problems: dict[str, str] = {}
    for name in sorted(names):
        if not has_vault:
            problems[name] = f"vault secret '{name}': there is no vault.decrypted_secrets here"
            continue
        try:
            async with conn.transaction():  # a savepoint: a refusal leaves the plan's open
                rows = await conn.fetch(Q["pgcron_vault_secret"], name)
        except asyncpg.PostgresError as exc:
            problems[name] = f"vault secret '{name}' cannot be read: {exc}"
            continue
        if len(rows) != 1 or rows[0]["decrypted_secret"] is None:
            count = "none" if not rows else "more than one" if len(rows) > 1 else "a null one"
            problems[name] = f"vault secret '{name}': the vault holds {count}"
            continue
        found[name] = rows[0]["decrypted_secret"]
    return found, problems


async def _function_problems(
    conn: Connection, names: Iterable[str], database: str
) -> dict[str, str]:
    problems: dict[str, str] = {}
    for name in sorted(names):
        try:
            async with conn.transaction():
                row = await conn.fetchrow(Q["pgcron_function"], f"{name}()")
        except asyncpg.PostgresError as exc:
            problems[name] = f"function {name}() cannot be resolved: {exc}"
            continue
        if row is None:
            problems[name] = f"there is no function {name}() in database '{database}'"
        elif row["kind"] != "f":
            problems[name] = (
                f"{row['signature']} is not a plain function (call_function selects it)"
            )
    return problems


# -- the dry run's table -------------------------------------------------------------------


def format_plan(plan: Plan) -> str:
    """The plan as a table, one row per job and its notes under it; never a secret, never
    a command (either may hold one)."""
    if not plan.steps:
        return f"pg_cron jobs in database {plan.database}: none"
    converting = len(plan.conversions)
    head = (
        f"pg_cron jobs in database {plan.database} (timezone {plan.timezone}): "
        f"{converting} to convert, {len(plan.steps) - converting} not convertible"
    )
    rows = [("job", "schedule", "cron", "becomes")]
    details: list[list[str]] = [[]]
    for step in plan.steps:
        if isinstance(step, Conversion):
            becomes = _becomes(step.schedule)
            lines = [*_endpoint_lines(step.endpoint), *step.notes]
        else:
            becomes, lines = f"not convertible: {step.reason}", []
        rows.append((str(step.job.jobid), step_name(step), step.job.schedule.strip(), becomes))
        details.append(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    out = [head, ""]
    for row, lines in zip(rows, details, strict=True):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.append("  ".join([*cells, row[3]]).rstrip())
        out.extend(f"{' ' * (widths[0] + 2)}- {line}" for line in lines)
    return "\n".join(out)


def step_name(step: Step) -> str:
    return step.schedule.name if isinstance(step, Conversion) else step.name


def _becomes(schedule: Schedule) -> str:
    payload = json.dumps(schedule.payload, ensure_ascii=False)
    if len(payload) > 100:
        payload = payload[:99] + "…"
    parts = [schedule.task_type, payload]
    if schedule.queue != "default":
        parts.append(f"queue={schedule.queue}")
    if schedule.priority:
        parts.append(f"priority={schedule.priority}")
    if schedule.max_attempts is not None:
        parts.append(f"max_attempts={schedule.max_attempts}")
    if not schedule.active:
        parts.append("(paused)")
    return " ".join(parts)


def _endpoint_lines(endpoint: Endpoint | None) -> list[str]:
    if endpoint is None:
        return []
    timeout = "" if endpoint.timeout_s is None else f", timeout {endpoint.timeout_s:g} s"
    lines = [f"endpoint {endpoint.name}: POST {endpoint.url_shown}{timeout}"]
    if endpoint.secret_header is not None:
        lines.append(f"secret header {endpoint.secret_header}: {endpoint.secret_shown}")
    lines.append(f"add endpoint {endpoint.name} to HANDLERS_ENDPOINTS (printed by --apply)")
    return lines


# -- applying --------------------------------------------------------------------------------


async def apply(conn: Connection, plan: Plan, actor: str) -> ApplyReport:
    """Move each convertible job, in one transaction per job: check it is still the job
    that was planned, create its schedule, write the audit row, `cron.unschedule` it. A job
    refused here stays in pg_cron with nothing written, and the others go on."""
    converted: list[Conversion] = []
    failed: list[tuple[Conversion, str]] = []
    for conversion in plan.conversions:
        problem = await _move(conn, conversion, actor)
        if problem is None:
            converted.append(conversion)
            log.info(
                "pg_cron_job_imported",
                jobid=conversion.job.jobid,
                schedule=conversion.schedule.name,
                task_type=conversion.schedule.task_type,
            )
        else:
            failed.append((conversion, problem))
            log.warning("pg_cron_job_not_imported", jobid=conversion.job.jobid, reason=problem)
    return ApplyReport(plan, tuple(converted), tuple(failed))


async def _move(conn: Connection, conversion: Conversion, actor: str) -> str | None:
    """None when moved; otherwise why not (and then nothing of it was written)."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        problem = await _move_in(conn, conversion, actor)
    except asyncpg.PostgresError as exc:  # refused by the schedule checks, pg_cron, rights
        await transaction.rollback()
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except BaseException:
        await transaction.rollback()
        raise
    if problem is not None:
        await transaction.rollback()
        return problem
    await transaction.commit()
    return None


async def _move_in(conn: Connection, conversion: Conversion, actor: str) -> str | None:
    job, schedule = conversion.job, conversion.schedule
    row = await conn.fetchrow(Q["pgcron_lock_job"], job.jobid)
    if row is None:
        return "no longer in cron.job"
    if CronJob.from_row(row) != job:
        return "changed in pg_cron since the plan was made: plan again"
    await conn.execute(Q["pgcron_audited_here"])
    created = await conn.fetchrow(
        Q["pgcron_create_schedule"],
        schedule.name,
        schedule.cron,
        schedule.task_type,
        json.dumps(schedule.payload),
        schedule.timezone,
        schedule.queue,
        schedule.priority,
        schedule.max_attempts,
        schedule.active,
    )
    assert created is not None
    detail = {
        "pg_cron": {
            "jobid": job.jobid,
            "jobname": job.jobname,
            "schedule": job.schedule,
            "database": job.database,
            "username": job.username,
            "active": job.active,
        },
        "schedule": dict(created.items()),
        "endpoint": conversion.endpoint.name if conversion.endpoint else None,
        "notes": list(conversion.notes),
    }
    await conn.execute(Q["pgcron_audit"], actor, f"schedule:{schedule.name}", json.dumps(detail))
    await conn.fetchval(Q["pgcron_unschedule"], job.jobid)
    return None


def format_report(report: ApplyReport) -> str:
    """What --apply did, job by job (no secrets: endpoint_settings() has those)."""
    lines = [
        f"imported {len(report.converted)} of {len(report.plan.steps)} pg_cron jobs "
        f"in database {report.plan.database}"
    ]
    lines.extend(
        f"  job {c.job.jobid} -> schedule {c.schedule.name} ({c.schedule.task_type})"
        for c in report.converted
    )
    left = [(r.job, r.name, f"not convertible: {r.reason}") for r in report.plan.refusals]
    left += [(c.job, c.schedule.name, f"not imported: {why}") for c, why in report.failed]
    if left:
        lines.append(f"left in pg_cron ({len(left)}):")
        lines.extend(
            f"  job {job.jobid} {name}: {why}" for job, name, why in sorted(left, key=_by_id)
        )
    if report.functions:
        lines.append(f"allow in HANDLERS_CALL_FUNCTIONS: {call_functions_setting(report)}")
    return "\n".join(lines)


def _by_id(entry: tuple[CronJob, str, str]) -> int:
    return entry[0].jobid


def endpoint_settings(report: ApplyReport) -> str:
    """The entries to merge into HANDLERS_ENDPOINTS for the imported call_endpoint
    schedules, as JSON, secrets included: print it once, for the operator; "{}" if none."""
    entries = {endpoint.name: endpoint.setting() for endpoint in report.endpoints}
    return json.dumps(entries, indent=2, ensure_ascii=False)


def call_functions_setting(report: ApplyReport) -> str:
    """The function names to add to HANDLERS_CALL_FUNCTIONS, comma-separated."""
    return ",".join(report.functions)
