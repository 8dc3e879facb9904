"""The API roles' privileges on a Supabase-shaped database: every object the migrations
create, and the important cells tried the way PostgREST tries them.

The database (tests/support/supabase.py, .ci/setup-supabase) has what a Supabase project
has before its first migration: a non-superuser `postgres` that migrates, anon,
authenticated, service_role and authenticator, the auth schema, and default privileges
that grant every table, sequence and function `postgres` creates in public to the three
API roles. Both migration sets run as `postgres`.

The audit lists EVERY function and relation the migrations created (what exists afterwards
and did not before) and checks each against the matrix below, which follows README.md's
"Access control" table. A new function, table, view or sequence fails the test until it is
added to the matrix, with the grants someone decided for it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Literal

import asyncpg
import pytest

from tests.support import supabase
from tests.support.supabase import API_ROLES, PostgREST

Grants = dict[str, frozenset[str]]

NONE: frozenset[str] = frozenset()
TABLE_ALL = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
)  # PostgreSQL 17 adds MAINTAIN (see _table_privileges)
READ = frozenset({"SELECT"})
SEQUENCE_USE = frozenset({"USAGE", "SELECT"})
EXECUTE = frozenset({"EXECUTE"})
# Never for anon or authenticated, on anything: TRUNCATE ignores row level security,
# TRIGGER would let them run code on others' writes, REFERENCES lets them block deletes.
FORBIDDEN_TO_END_USERS = frozenset({"TRUNCATE", "TRIGGER", "REFERENCES"})


def only(**grants: frozenset[str]) -> Grants:
    """The privileges of each API role; a role not named has none."""
    unknown = set(grants) - set(API_ROLES)
    assert not unknown, unknown
    return {role: grants.get(role, NONE) for role in API_ROLES}


RelationKind = Literal["table", "view", "materialized view", "sequence"]
_RELKINDS: dict[str, RelationKind] = {
    "r": "table",
    "p": "table",
    "f": "table",
    "v": "view",
    "m": "materialized view",
    "S": "sequence",
}

SERVICE_ONLY = only(service_role=TABLE_ALL)
SERVICE_SEQUENCE = only(service_role=SEQUENCE_USE)

# Every relation the migrations create (public, unless qualified): kind and grants.
RELATIONS: dict[str, tuple[RelationKind, Grants]] = {
    # core (schema/)
    # authenticated: rows only for the app's admins (RLS policy, schema/0009_app_admins.sql)
    "job_queue": ("table", only(authenticated=READ, service_role=TABLE_ALL)),
    "job_runs": ("table", only(authenticated=READ, service_role=TABLE_ALL)),  # RLS policy
    "job_schedules": ("table", SERVICE_ONLY),
    "job_queue_pauses": ("table", SERVICE_ONLY),
    "job_admin_audit": ("table", SERVICE_ONLY),
    "job_dashboard_sessions": ("table", SERVICE_ONLY),
    "job_limits": ("table", SERVICE_ONLY),
    "job_rate_starts": ("table", SERVICE_ONLY),
    "job_workers": ("table", SERVICE_ONLY),
    "job_dependencies": ("table", SERVICE_ONLY),
    "worker_migrations": ("table", only(service_role=READ)),
    "job_admin_check": ("table", only(service_role=READ)),  # written by its function only
    "job_queue_id_seq": ("sequence", SERVICE_SEQUENCE),
    "job_runs_id_seq": ("sequence", SERVICE_SEQUENCE),
    "job_admin_audit_id_seq": ("sequence", SERVICE_SEQUENCE),
    # reference (schema/reference/)
    "profiles": ("table", SERVICE_ONLY),
    "notifications": ("table", SERVICE_ONLY),
    "wearable_connections": ("table", SERVICE_ONLY),
    "wearable_samples": ("table", SERVICE_ONLY),
    "activity_logs": ("table", SERVICE_ONLY),
    "competitors": ("table", SERVICE_ONLY),
    "competitor_game_stats": ("table", SERVICE_ONLY),
    "tickers": ("table", SERVICE_ONLY),
    "price_ticks": ("table", SERVICE_ONLY),
    "price_history": ("table", SERVICE_ONLY),
    "wallets": ("table", SERVICE_ONLY),
    "holdings": ("table", SERVICE_ONLY),
    "queue": ("table", SERVICE_ONLY),  # the trading app's orders
    "issuer_stats_cache": ("table", SERVICE_ONLY),
    "challenges": ("table", SERVICE_ONLY),
    "challenge_members": ("table", SERVICE_ONLY),
    "challenge_member_stats": ("table", SERVICE_ONLY),
    "usage_events": ("table", SERVICE_ONLY),
    "daily_usage": ("table", SERVICE_ONLY),
    "monthly_usage": ("table", SERVICE_ONLY),
    # No RLS on a materialized view: only service_role reads it.
    "challenge_stats": ("materialized view", only(service_role=READ)),
    "notifications_id_seq": ("sequence", SERVICE_SEQUENCE),
    "wearable_connections_id_seq": ("sequence", SERVICE_SEQUENCE),
    "activity_logs_id_seq": ("sequence", SERVICE_SEQUENCE),
    "competitors_id_seq": ("sequence", SERVICE_SEQUENCE),
    "price_ticks_id_seq": ("sequence", SERVICE_SEQUENCE),
    "queue_id_seq": ("sequence", SERVICE_SEQUENCE),
    "challenges_id_seq": ("sequence", SERVICE_SEQUENCE),
    "usage_events_id_seq": ("sequence", SERVICE_SEQUENCE),
}

Security = Literal["definer", "invoker"]
ADMIN_RPC = ("definer", only(service_role=EXECUTE))
# Callable by signed-in users, refused from inside unless the app's admin check says yes.
APP_ADMIN_RPC = ("definer", only(authenticated=EXECUTE, service_role=EXECUTE))
OWNER_ONLY = only()
EVERYONE = only(anon=EXECUTE, authenticated=EXECUTE, service_role=EXECUTE)

# Every function the migrations create: SECURITY DEFINER or not, and who may execute it.
FUNCTIONS: dict[str, tuple[Security, Grants]] = {
    # core: the admin RPCs (service_role; the app's admins too, checked inside)
    "job_queue_enqueue": ADMIN_RPC,
    "job_queue_enqueue_group": ADMIN_RPC,
    "job_schedule_create": APP_ADMIN_RPC,
    "job_schedule_update": APP_ADMIN_RPC,
    "job_schedule_retime": APP_ADMIN_RPC,
    "job_schedule_toggle": APP_ADMIN_RPC,
    "job_schedule_delete": APP_ADMIN_RPC,
    "job_schedules_list": APP_ADMIN_RPC,
    "job_schedule_history": APP_ADMIN_RPC,
    "job_schedules_history": APP_ADMIN_RPC,
    "job_schedule_run_now": APP_ADMIN_RPC,
    "job_queue_pause": APP_ADMIN_RPC,
    "job_queue_resume": APP_ADMIN_RPC,
    "job_queue_list": APP_ADMIN_RPC,
    "job_queue_retry": APP_ADMIN_RPC,
    "job_queue_cancel": APP_ADMIN_RPC,
    "job_queue_run_now": APP_ADMIN_RPC,
    "job_queue_enqueue_manual": APP_ADMIN_RPC,
    "job_queue_is_admin": APP_ADMIN_RPC,
    "job_queue_set_admin_check": ADMIN_RPC,
    # core: the helpers those definers call (as the owner)
    "job_queue_shown": ("invoker", OWNER_ONLY),
    "job_queue_caller_sub": ("invoker", OWNER_ONLY),
    "job_queue_caller_role": ("invoker", OWNER_ONLY),
    "job_queue_caller_kind": ("invoker", OWNER_ONLY),
    "job_queue_actor": ("invoker", OWNER_ONLY),
    "job_queue_audit": ("invoker", OWNER_ONLY),
    "job_queue_admin_check_problem": ("invoker", OWNER_ONLY),
    "job_queue_admin_check_function": ("invoker", OWNER_ONLY),
    "job_queue_admin_refusal": ("invoker", OWNER_ONLY),
    "job_queue_require_admin": ("invoker", OWNER_ONLY),
    "job_queue_requester": ("invoker", OWNER_ONLY),
    # core: the worker's release of waiting children (as its caller: service_role or the
    # worker's own role, which job_queue_grant_worker grants it to)
    "job_queue_release": ("invoker", only(service_role=EXECUTE)),
    # core: the validators the schedules trigger runs as whoever writes (through PUBLIC)
    "job_schedule_cron_value": ("invoker", EVERYONE),
    "job_schedule_cron_error": ("invoker", EVERYONE),
    "job_schedule_timezone_error": ("invoker", EVERYONE),
    "job_schedule_problem": ("invoker", EVERYONE),
    # core: trigger functions and the grant helper (the owner only)
    "job_queue_notify": ("invoker", OWNER_ONLY),
    "job_schedules_guard": ("invoker", OWNER_ONLY),
    "job_queue_grant_worker": ("invoker", OWNER_ONLY),
    # reference
    "refresh_challenge_stats": ("definer", only(service_role=EXECUTE)),
    "trade_orders_enqueue_processing": ("definer", OWNER_ONLY),  # a trigger function
    "refresh_issuer_stats_cache": ("invoker", only(service_role=EXECUTE)),
}

_CHECKED_INSIDE = (
    "an admin RPC for the app's own admins: its first statement is job_queue_require_admin,"
    " which refuses (42501) every signed-in user the app's admin check does not approve"
)
DEFINERS_FOR_END_USERS: dict[str, str] = {
    **{
        name: _CHECKED_INSIDE
        for name, (_security, grants) in FUNCTIONS.items()
        if (_security, grants) == APP_ADMIN_RPC and name != "job_queue_is_admin"
    },
    "job_queue_is_admin": "answers only whether the caller is an admin (the job_queue RLS"
    " policy and an app's UI ask it); it reads the admin check, which authenticated may not",
}
"""SECURITY DEFINER functions anon or authenticated may execute, each with the reason.
Adding one here is a decision to let anyone holding the public anon key (or any signed-in
user) run it with the owner's rights."""


@pytest.fixture
async def database() -> AsyncIterator[supabase.Database]:
    async with supabase.fresh_database() as db:
        yield db


@pytest.fixture
async def migrated(database: supabase.Database) -> supabase.Database:
    await supabase.migrate(database)
    return database


# -- the cluster is shaped like Supabase ----------------------------------------------------

_ROLE_ATTRIBUTES = (
    "rolsuper",
    "rolinherit",
    "rolcreaterole",
    "rolcreatedb",
    "rolcanlogin",
    "rolreplication",
    "rolbypassrls",
)
# (super, inherit, createrole, createdb, login, replication, bypassrls), as Supabase has them
EXPECTED_ROLES = {
    "supabase_admin": (True, True, True, True, True, True, True),
    "postgres": (False, True, True, True, True, True, True),
    "anon": (False, True, False, False, False, False, False),
    "authenticated": (False, True, False, False, False, False, False),
    "service_role": (False, True, False, False, False, False, True),
    "authenticator": (False, False, False, False, True, False, False),
}


async def test_the_cluster_is_shaped_like_supabase(database: supabase.Database) -> None:
    """What the audit relies on: the roles, their memberships, the default privileges and
    the vault are as on a Supabase project (if this fails, the audit proves nothing)."""
    conn = await asyncpg.connect(database.postgres_dsn)
    try:
        columns = ", ".join(_ROLE_ATTRIBUTES)
        rows = await conn.fetch(
            f"SELECT rolname, {columns} FROM pg_roles WHERE rolname = ANY($1)",
            list(EXPECTED_ROLES),
        )
        assert {r["rolname"]: tuple(r[c] for c in _ROLE_ATTRIBUTES) for r in rows} == (
            EXPECTED_ROLES
        )
        memberships = await conn.fetch(
            "SELECT r.rolname AS role, m.rolname AS member FROM pg_auth_members a"
            " JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member"
            " WHERE m.rolname IN ('postgres', 'authenticator')"
        )
        assert {(r["member"], r["role"]) for r in memberships} >= {
            (member, role) for member in ("postgres", "authenticator") for role in API_ROLES
        }
        # Tables, sequences and functions postgres creates in public go to all three.
        defaults = await conn.fetch(
            "SELECT d.defaclobjtype::text AS kind, a.grantee::regrole::text AS grantee"
            " FROM pg_default_acl d, aclexplode(d.defaclacl) a"
            " WHERE d.defaclrole = 'postgres'::regrole"
            "   AND d.defaclnamespace = 'public'::regnamespace"
        )
        assert {(r["kind"], r["grantee"]) for r in defaults} >= {
            (kind, role) for kind in "rSf" for role in API_ROLES
        }
        # The vault stand-in: postgres stores and reads secrets, as on Supabase.
        await conn.execute("SELECT vault.create_secret('s3cret', 'probe')")
        secret = await conn.fetchval(
            "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = 'probe'"
        )
        assert secret == "s3cret"
    finally:
        await conn.close()
    async with PostgREST.connect(database) as api:
        assert await api.refused("anon", "SELECT decrypted_secret FROM vault.decrypted_secrets")
        assert await api.refused("authenticated", "SELECT vault.create_secret('x')")


async def test_auth_functions_read_the_request_claims(database: supabase.Database) -> None:
    user, other = uuid.uuid4(), uuid.uuid4()
    async with PostgREST.connect(database) as api:
        [row] = await api.fetch(
            "authenticated",
            "SELECT current_user AS who, auth.uid() AS uid, auth.role() AS role,"
            " auth.jwt() ->> 'aud' AS aud",
            jwt=supabase.claims("authenticated", sub=user),
        )
        assert dict(row) == {
            "who": "authenticated",
            "uid": user,
            "role": "authenticated",
            "aud": "authenticated",
        }
        [row] = await api.fetch("anon", "SELECT auth.uid() AS uid, auth.role() AS role")
        assert dict(row) == {"uid": None, "role": "anon"}
        # Older PostgREST versions set one setting per claim; that one wins, as in Supabase's.
        async with api.request("authenticated", supabase.claims("authenticated", sub=user)) as conn:
            await conn.execute("SELECT set_config('request.jwt.claim.sub', $1, true)", str(other))
            assert await conn.fetchval("SELECT auth.uid()") == other


# -- the audit: every object the migrations create ------------------------------------------

_RELATIONS_SQL = """
SELECT c.oid, CASE WHEN n.nspname = 'public' THEN c.relname
                   ELSE n.nspname || '.' || c.relname END AS name,
       c.relkind::text AS relkind, c.relrowsecurity AS rls,
       pg_get_userbyid(c.relowner) AS owner
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')
 ORDER BY 2
"""
_FUNCTIONS_SQL = """
SELECT p.oid, CASE WHEN n.nspname = 'public' THEN p.proname
                   ELSE n.nspname || '.' || p.proname END AS name,
       p.oid::regprocedure::text AS signature, p.prosecdef AS definer,
       pg_get_userbyid(p.proowner) AS owner
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 ORDER BY 3
"""


async def _snapshot(conn: asyncpg.Connection) -> tuple[set[int], set[int]]:
    relations = await conn.fetch(_RELATIONS_SQL)
    functions = await conn.fetch(_FUNCTIONS_SQL)
    return {r["oid"] for r in relations}, {r["oid"] for r in functions}


async def _table_privileges(conn: asyncpg.Connection) -> list[str]:
    version = await conn.fetchval("SELECT current_setting('server_version_num')::int")
    return sorted(TABLE_ALL | ({"MAINTAIN"} if version >= 170000 else set()))


async def _relation_privileges(
    conn: asyncpg.Connection, oids: list[int]
) -> dict[tuple[int, str], frozenset[str]]:
    """(oid, role) -> the privileges the role holds (directly, through PUBLIC or a role it
    inherits from)."""
    rows = await conn.fetch(
        "SELECT c.oid, r.role, p.privilege"
        " FROM pg_class c CROSS JOIN unnest($2::text[]) AS r(role)"
        " CROSS JOIN LATERAL unnest(CASE WHEN c.relkind = 'S'"
        "   THEN ARRAY['USAGE', 'SELECT', 'UPDATE'] ELSE $3::text[] END) AS p(privilege)"
        " WHERE c.oid = ANY($1::oid[])"
        "   AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(r.role, c.oid, p.privilege)"
        "            ELSE has_table_privilege(r.role, c.oid, p.privilege) END",
        oids,
        list(API_ROLES),
        await _table_privileges(conn),
    )
    held: dict[tuple[int, str], set[str]] = {(o, r): set() for o in oids for r in API_ROLES}
    for row in rows:
        held[(row["oid"], row["role"])].add(row["privilege"])
    return {key: frozenset(value) for key, value in held.items()}


def _expected_relation_grants(kind: RelationKind, grants: Grants, maintain: bool) -> Grants:
    if kind == "sequence" or not maintain:
        return grants
    return {r: p | {"MAINTAIN"} if p == TABLE_ALL else p for r, p in grants.items()}


async def test_every_object_the_migrations_create_has_exactly_the_documented_grants(
    database: supabase.Database,
) -> None:
    conn = await asyncpg.connect(database.postgres_dsn)
    try:
        relations_before, functions_before = await _snapshot(conn)
        await supabase.migrate(database)  # as postgres, both sets
        relations = [
            r for r in await conn.fetch(_RELATIONS_SQL) if r["oid"] not in relations_before
        ]
        functions = [
            f for f in await conn.fetch(_FUNCTIONS_SQL) if f["oid"] not in functions_before
        ]
        problems = _listing_problems(relations, functions)
        assert problems == [], "\n".join(problems)

        maintain = "MAINTAIN" in await _table_privileges(conn)
        held = await _relation_privileges(conn, [r["oid"] for r in relations])
        executable = await _executable(conn, [f["oid"] for f in functions])
        column_grants = await conn.fetch(
            "SELECT a.attrelid::regclass::text AS relation, a.attname,"
            " g.grantee::regrole::text AS grantee, g.privilege_type"
            " FROM pg_attribute a, aclexplode(a.attacl) g"
            " WHERE a.attrelid = ANY($1::oid[]) AND g.grantee::regrole::text = ANY($2::text[])",
            [r["oid"] for r in relations],
            list(API_ROLES),
        )
    finally:
        await conn.close()

    problems += _relation_problems(relations, held, maintain)
    problems += _function_problems(functions, executable)
    problems += [
        f"column {g['relation']}.{g['attname']}: {g['privilege_type']} granted to"
        f" {g['grantee']} (no column grants for the API roles)"
        for g in column_grants
    ]
    assert problems == [], "\n".join(problems)


async def _executable(conn: asyncpg.Connection, oids: list[int]) -> set[tuple[int, str]]:
    """(oid, role) for each function each API role may execute."""
    rows = await conn.fetch(
        "SELECT p.oid, r.role FROM pg_proc p CROSS JOIN unnest($2::text[]) AS r(role)"
        " WHERE p.oid = ANY($1::oid[]) AND has_function_privilege(r.role, p.oid, 'EXECUTE')",
        oids,
        list(API_ROLES),
    )
    return {(row["oid"], row["role"]) for row in rows}


def _relation_problems(
    relations: list[asyncpg.Record],
    held: dict[tuple[int, str], frozenset[str]],
    maintain: bool,
) -> list[str]:
    problems: list[str] = []
    for row in relations:
        kind, grants = RELATIONS[row["name"]]
        expected = _expected_relation_grants(kind, grants, maintain)
        for role in API_ROLES:
            actual = held[(row["oid"], role)]
            if actual != expected[role]:
                problems.append(
                    f"{kind} {row['name']}: {role} holds {_names(actual)},"
                    f" the matrix says {_names(expected[role])}"
                )
            if role != "service_role" and actual & FORBIDDEN_TO_END_USERS:
                problems.append(
                    f"{kind} {row['name']}: {role} holds"
                    f" {_names(actual & FORBIDDEN_TO_END_USERS)}, which no end user may hold"
                )
        if row["relkind"] in ("r", "p") and not row["rls"]:
            problems.append(f"table {row['name']}: row level security is off")
    return problems


def _function_problems(
    functions: list[asyncpg.Record], executable: set[tuple[int, str]]
) -> list[str]:
    problems: list[str] = []
    for row in functions:
        security, grants = FUNCTIONS[row["name"]]
        if ("definer" if row["definer"] else "invoker") != security:
            problems.append(f"function {row['signature']}: expected SECURITY {security.upper()}")
        for role in API_ROLES:
            may = (row["oid"], role) in executable
            if may != bool(grants[role]):
                problems.append(
                    f"function {row['signature']}: {role} {'may' if may else 'may not'}"
                    f" execute it, the matrix says {'it may' if grants[role] else 'it may not'}"
                )
            if (
                may
                and row["definer"]
                and role != "service_role"
                and row["name"] not in DEFINERS_FOR_END_USERS
            ):
                problems.append(
                    f"function {row['signature']}: SECURITY DEFINER and executable by {role}"
                )
    return problems


def _listing_problems(
    relations: list[asyncpg.Record], functions: list[asyncpg.Record]
) -> list[str]:
    """New objects missing from the matrix, matrix entries that no longer exist, and objects
    the migrations created under another owner than the role that ran them."""
    problems: list[str] = []
    for row in relations:
        kind = _RELKINDS[row["relkind"]]
        if row["name"] not in RELATIONS:
            problems.append(
                f"{kind} {row['name']} is created by the migrations but missing from RELATIONS"
                " in this test: add it, with the privileges you decided for anon, authenticated"
                " and service_role, and make the migration grant exactly those"
            )
        elif RELATIONS[row["name"]][0] != kind:
            problems.append(f"{row['name']}: a {kind}, the matrix says {RELATIONS[row['name']][0]}")
    names = [f["name"] for f in functions]
    for row in functions:
        if row["name"] not in FUNCTIONS:
            problems.append(
                f"function {row['signature']} is created by the migrations but missing from"
                " FUNCTIONS in this test: add it, decide who may execute it (SECURITY DEFINER:"
                " never anon or authenticated without a reason) and make the migration grant"
                " exactly that"
            )
        elif names.count(row["name"]) > 1:
            problems.append(
                f"function {row['signature']}: overloaded; key FUNCTIONS by signature first"
            )
    created = {r["name"] for r in relations} | set(names)
    problems += [
        f"{name} is in the matrix but the migrations no longer create it: remove it"
        for name in sorted((set(RELATIONS) | set(FUNCTIONS)) - created)
    ]
    problems += [
        f"{row['name']}: owned by {row['owner']}, not by postgres, the role that migrated"
        for row in [*relations, *functions]
        if row["owner"] != "postgres"
    ]
    return problems


def _names(privileges: frozenset[str]) -> str:
    return "{" + ", ".join(sorted(privileges)) + "}" if privileges else "nothing"


# -- the grants do not depend on default privileges -----------------------------------------

_ACLS_SQL = """
SELECT CASE WHEN c.relkind = 'S' THEN 'sequence ' ELSE 'relation ' END || c.oid::regclass::text
         AS object,
       coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                     c.relowner)) AS acl
  FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text, coalesce(p.proacl, acldefault('f', p.proowner))
  FROM pg_proc p
 WHERE p.pronamespace = 'public'::regnamespace
"""


async def _acls(dsn: str) -> dict[str, set[tuple[str, str, str, bool]]]:
    """object -> its ACL entries (grantor, grantee or PUBLIC, privilege, grantable)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT o.object, pg_get_userbyid(a.grantor) AS grantor,"
            " CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,"
            " a.privilege_type, a.is_grantable"
            f" FROM ({_ACLS_SQL}) o, aclexplode(o.acl) a"
        )
    finally:
        await conn.close()
    acls: dict[str, set[tuple[str, str, str, bool]]] = {}
    for r in rows:
        acls.setdefault(r["object"], set()).add(
            (r["grantor"], r["grantee"], r["privilege_type"], r["is_grantable"])
        )
    return acls


async def test_the_grants_do_not_depend_on_default_privileges(
    migrated: supabase.Database,
) -> None:
    """Migrated beside it in the same cluster (same roles), a database without Supabase's
    per-database setup ends with the very same ACL on every object: nothing the API roles
    hold comes from default privileges."""
    async with supabase.fresh_database(template=None) as plain:
        await supabase.migrate(plain)
        on_plain = await _acls(plain.postgres_dsn)
    on_supabase = await _acls(migrated.postgres_dsn)
    assert set(on_supabase) == set(on_plain)
    differ = {
        name: {
            "supabase": sorted(on_supabase[name] - on_plain[name]),
            "plain": sorted(on_plain[name] - on_supabase[name]),
        }
        for name in on_supabase
        if on_supabase[name] != on_plain[name]
    }
    assert differ == {}, json.dumps(differ, indent=1, default=str)


# -- the important cells, as PostgREST ------------------------------------------------------


async def _seed(database: supabase.Database) -> None:
    conn = await asyncpg.connect(database.postgres_dsn)
    try:
        await conn.execute(
            "INSERT INTO job_runs (job_id, job_key, queue, run_type, status, attempt, started_at,"
            " finished_at, duration_ms) VALUES (1, 'seeded', 'default', 'queue', 'succeeded', 1,"
            " now(), now(), 0)"
        )
        await conn.execute("INSERT INTO job_queue (task_type) VALUES ('seeded')")
    finally:
        await conn.close()


async def test_authenticated_reads_the_audit_trail_and_anon_does_not(
    migrated: supabase.Database,
) -> None:
    await _seed(migrated)
    async with PostgREST.connect(migrated) as api:
        rows = await api.fetch("authenticated", "SELECT job_key, status FROM job_runs ORDER BY id")
        assert [tuple(r) for r in rows] == [("seeded", "succeeded")]
        assert await api.refused("anon", "SELECT job_key FROM job_runs")
        assert await api.refused("anon", "SELECT id FROM job_queue")
        # Not an admin (the app named no admin check): the policy shows no job.
        assert await api.fetch("authenticated", "SELECT id FROM job_queue") == []
        for role in ("anon", "authenticated"):
            assert await api.refused(role, "SELECT * FROM challenge_stats"), role
            assert await api.refused(role, "SELECT id FROM queue"), role


async def test_end_users_cannot_run_the_definers(migrated: supabase.Database) -> None:
    async with PostgREST.connect(migrated) as api:
        for role in ("anon", "authenticated"):
            for call in (
                "SELECT refresh_challenge_stats()",
                "SELECT trade_orders_enqueue_processing()",
                "SELECT job_queue_enqueue('from_the_browser')",
                "SELECT job_queue_pause('default')",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await api.execute(role, call)


async def test_end_users_cannot_truncate_any_table(migrated: supabase.Database) -> None:
    tables = [name for name, (kind, _grants) in RELATIONS.items() if kind == "table"]
    async with PostgREST.connect(migrated) as api:
        still_open = [
            (role, table)
            for role in ("anon", "authenticated")
            for table in tables
            if not await api.refused(role, f"TRUNCATE {table}")
        ]
    assert still_open == []


async def test_service_role_enqueues_and_refreshes(migrated: supabase.Database) -> None:
    async with PostgREST.connect(migrated) as api:
        [row] = await api.fetch(
            "service_role",
            "SELECT job_queue_enqueue('send_report', '{\"to\": \"ops\"}'::jsonb) AS id",
            commit=True,
        )
        [stats] = await api.fetch(
            "service_role", "SELECT refresh_challenge_stats() AS n", commit=True
        )
        assert stats["n"] == 0
    conn = await asyncpg.connect(migrated.postgres_dsn)
    try:
        job = await conn.fetchrow(
            "SELECT task_type, payload::text, status FROM job_queue WHERE id = $1", row["id"]
        )
        assert job is not None
        assert tuple(job) == ("send_report", '{"to": "ops"}', "pending")
        assert await conn.fetchval(
            "SELECT ispopulated FROM pg_matviews WHERE matviewname = 'challenge_stats'"
        )
    finally:
        await conn.close()
