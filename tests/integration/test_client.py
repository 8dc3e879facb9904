"""worker.client against a real PostgreSQL: the job is written in the caller's transaction
on each kind of connection, checked before anything is sent, deduplicated on the live job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import psycopg
import pydantic
import pytest
import sqlalchemy
import sqlalchemy.orm
from opentelemetry import trace

from tests.support import handlers
from worker import client, dispatcher, store
from worker.registry import Handler, JobContext, JobResult, Registry, handler


async def count(db: store.Store, task_type: str = "ok") -> int:
    value = await db.pool.fetchval("SELECT count(*) FROM job_queue WHERE task_type = $1", task_type)
    return int(value)


async def drain(db: store.Store, settings: Any, registry: Registry | None = None) -> Any:
    worker = dispatcher.Dispatcher(db, registry or handlers.registry(), settings, once=True)
    return await asyncio.wait_for(worker.run(), timeout=30)


async def status(db: store.Store, job_id: int) -> str:
    return str(await db.pool.fetchval("SELECT status FROM job_queue WHERE id = $1", job_id))


@pytest.fixture
async def conn(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_dsn)
    yield connection
    await connection.close()


@pytest.fixture
def sa_engine(db_dsn: str) -> Iterator[sqlalchemy.Engine]:
    url = db_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    yield engine
    engine.dispose()


# -- the caller's transaction, on each kind of connection -----------------------------------


async def test_asyncpg_rollback_leaves_no_job_and_commit_runs_it(
    db: store.Store, conn: asyncpg.Connection, make_settings: Any
) -> None:
    tx = conn.transaction()
    await tx.start()
    await client.enqueue(conn, "ok", {})
    await tx.rollback()
    assert await count(db) == 0

    async with conn.transaction():
        done = await client.enqueue(conn, "ok", {})
        assert await count(db) == 0  # not visible before the caller commits
    assert (done.status, done.duplicate) == ("pending", False)
    summary = await drain(db, make_settings())
    assert (summary.processed, summary.succeeded) == (1, 1)
    assert await status(db, done.job_id) == "succeeded"


async def test_asyncpg_pool_and_pooled_connection(db: store.Store, db_dsn: str) -> None:
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    try:
        first = await client.enqueue(pool, "ok", {})  # a transaction of its own
        assert await status(db, first.job_id) == "pending"
        async with pool.acquire() as pooled:
            tx = pooled.transaction()
            await tx.start()
            await client.enqueue(pooled, "ok", {})
            await tx.rollback()
        ids = await client.enqueue_many(pool, [client.Job("ok"), client.Job("ok")])
    finally:
        await pool.close()
    assert await count(db) == 3
    assert len(set(ids)) == 2 and first.job_id not in ids


async def test_psycopg_async_rollback_and_commit(db: store.Store, db_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_dsn) as aconn:
        await client.enqueue(aconn, "ok", {"n": 1})
        await client.enqueue_many(aconn, [client.Job("ok"), client.Job("ok")])
        await aconn.rollback()
        assert await count(db) == 0
        done = await client.enqueue(aconn, "ok", {"n": 2})
        assert await count(db) == 0
        await aconn.commit()
    row = await db.pool.fetchrow("SELECT status, payload FROM job_queue WHERE id = $1", done.job_id)
    assert (row["status"], row["payload"]) == ("pending", {"n": 2})


async def test_psycopg_sync_rollback_and_commit(db: store.Store, db_dsn: str) -> None:
    def produce() -> list[int]:
        with psycopg.connect(db_dsn) as sconn:
            client.enqueue_sync(sconn, "ok", {})
            sconn.rollback()
            one = client.enqueue_sync(sconn, "ok", {}).job_id
            many = client.enqueue_many_sync(sconn, [client.Job("ok", {"i": i}) for i in range(3)])
            sconn.commit()
        return [one, *many]

    ids = await asyncio.to_thread(produce)
    assert await count(db) == 4
    rows = await db.pool.fetch("SELECT id FROM job_queue ORDER BY id")
    assert [row["id"] for row in rows] == ids


async def test_sqlalchemy_connection_without_a_transaction_gets_one(
    db: store.Store, sa_engine: sqlalchemy.Engine
) -> None:
    def produce() -> None:
        with sa_engine.connect() as sa_conn:
            assert not sa_conn.in_transaction()
            client.enqueue_sync(sa_conn, "ok", {"kept": False})
            assert sa_conn.in_transaction()
            sa_conn.rollback()
            client.enqueue_sync(sa_conn, "ok", {"kept": True})
            sa_conn.commit()  # commits the job: the transaction was SQLAlchemy's own
            client.enqueue_sync(sa_conn, "ok", {"kept": False})
        # closing without commit rolls back

    await asyncio.to_thread(produce)
    rows = await db.pool.fetch("SELECT payload FROM job_queue")
    assert [row["payload"] for row in rows] == [{"kept": True}]


async def test_sqlalchemy_session_joins_its_transaction(
    db: store.Store, sa_engine: sqlalchemy.Engine
) -> None:
    def produce() -> int:
        with sqlalchemy.orm.Session(sa_engine) as session:
            session.execute(sqlalchemy.text("CREATE TABLE signups (name text)"))
            session.execute(sqlalchemy.text("INSERT INTO signups VALUES ('ada')"))
            client.enqueue_sync(session, "ok", {"who": "ada"})
            session.rollback()
        with sqlalchemy.orm.Session(sa_engine) as session:
            done = client.enqueue_sync(session, "ok", {"who": "grace"})
            client.enqueue_many_sync(session, [client.Job("ok", {"who": "lin"})])
            session.commit()
        return done.job_id

    job_id = await asyncio.to_thread(produce)
    rows = await db.pool.fetch("SELECT id, payload FROM job_queue ORDER BY id")
    assert rows[0]["id"] == job_id
    assert [row["payload"]["who"] for row in rows] == ["grace", "lin"]
    assert await db.pool.fetchval("SELECT to_regclass('signups')") is None


async def test_sqlalchemy_on_another_driver_is_refused(db_dsn: str) -> None:
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as sa_conn, pytest.raises(TypeError, match="psycopg"):
        client.enqueue_sync(sa_conn, "ok", {})
    with pytest.raises(TypeError, match="asyncpg Connection or Pool"):
        await client.enqueue(object(), "ok", {})  # type: ignore[arg-type]


# -- what is written --------------------------------------------------------------------


async def test_columns_are_written_as_given(db: store.Store, conn: asyncpg.Connection) -> None:
    run_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    user = UUID("6f1c3a4e-8a57-4b8e-9d3e-1f2a3b4c5d6e")
    done = await client.enqueue(
        conn,
        "ok",
        {"a": [1, "two", None]},
        run_at=run_at,
        queue="mail",
        priority=-7,
        max_attempts=9,
        user_id=str(user),
        concurrency_key="coach:3",
    )
    row = await db.pool.fetchrow("SELECT * FROM job_queue WHERE id = $1", done.job_id)
    assert row["payload"] == {"a": [1, "two", None]}
    assert (row["run_at"], row["queue"], row["priority"], row["max_attempts"]) == (
        run_at,
        "mail",
        -7,
        9,
    )
    assert (row["requested_by"], row["concurrency_key"], row["run_type"]) == (
        user,
        "coach:3",
        "queue",
    )
    assert row["trace_context"] is None


async def test_commit_notifies_idle_workers(db_dsn: str, conn: asyncpg.Connection) -> None:
    listener = await asyncpg.connect(db_dsn)
    woken = asyncio.Event()
    await listener.add_listener("job_queue", lambda *_: woken.set())
    try:
        async with conn.transaction():
            await client.enqueue(conn, "ok", {})
            await asyncio.sleep(0)  # nothing is sent before the commit
            assert not woken.is_set()
        await asyncio.wait_for(woken.wait(), timeout=10)
    finally:
        await listener.close()


async def test_trace_context_of_the_current_span_is_stored(
    db: store.Store, conn: asyncpg.Connection
) -> None:
    context = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    with trace.use_span(trace.NonRecordingSpan(context)):
        one = await client.enqueue(conn, "ok", {})
        [many] = await client.enqueue_many(conn, [client.Job("ok")])
    outside = await client.enqueue(conn, "ok", {})
    rows = await db.pool.fetch("SELECT id, trace_context FROM job_queue ORDER BY id")
    stored = {row["id"]: row["trace_context"] for row in rows}
    expected = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    assert stored == {one.job_id: expected, many: expected, outside.job_id: None}


# -- dedupe -----------------------------------------------------------------------------


async def test_dedupe_key_returns_the_live_job(
    db: store.Store, conn: asyncpg.Connection, make_settings: Any
) -> None:
    first = await client.enqueue(conn, "ok", {"n": 1}, dedupe_key="user:1")
    again = await client.enqueue(conn, "ok", {"n": 2}, dedupe_key="user:1")
    assert again == client.Enqueued(first.job_id, "pending", duplicate=True)
    assert await count(db) == 1
    await drain(db, make_settings())
    fresh = await client.enqueue(conn, "ok", {"n": 3}, dedupe_key="user:1")
    assert (fresh.duplicate, fresh.job_id != first.job_id) == (False, True)


async def test_enqueue_many_maps_dedupe_keys_to_their_jobs(
    db: store.Store, conn: asyncpg.Connection
) -> None:
    held = await client.enqueue(conn, "ok", {}, dedupe_key="a")
    jobs = [
        client.Job("ok", {"i": 0}),
        client.Job("ok", {"i": 1}, dedupe_key="a"),
        client.Job("ok", {"i": 2}, dedupe_key="b"),
        client.Job("ok", {"i": 3}),
        client.Job("ok", {"i": 4}, dedupe_key="b"),
    ]
    ids = await client.enqueue_many(conn, jobs)
    assert ids[1] == held.job_id and ids[2] == ids[4]
    assert len({ids[0], ids[2], ids[3], held.job_id}) == 4
    rows = await db.pool.fetch("SELECT id, payload FROM job_queue WHERE id <> $1", held.job_id)
    assert {row["id"]: row["payload"]["i"] for row in rows} == {ids[0]: 0, ids[2]: 2, ids[3]: 3}
    assert await client.enqueue_many(conn, []) == []


async def test_enqueue_many_of_100k_jobs(db: store.Store, conn: asyncpg.Connection) -> None:
    jobs = [client.Job("ok", {"i": i}) for i in range(100_000)]
    ids = await client.enqueue_many(conn, jobs)
    assert len(ids) == len(set(ids)) == 100_000
    rows = await db.pool.fetch("SELECT id, (payload->>'i')::int AS i FROM job_queue")
    assert len(rows) == 100_000
    assert {row["id"]: row["i"] for row in rows} == {job_id: i for i, job_id in enumerate(ids)}


# -- refused at the call site ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"task_type": "no spaces"}, "task_type"),
        ({"task_type": "x" * 129}, "task_type"),
        ({"queue": "default\n"}, "queue"),
        ({"priority": 1001}, "priority"),
        ({"priority": True}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"run_at": datetime(2030, 1, 1)}, "run_at"),
        ({"dedupe_key": "k" * 513}, "dedupe_key"),
        ({"dedupe_key": ""}, "dedupe_key"),
        ({"concurrency_key": "a\x00b"}, "concurrency_key"),
        ({"user_id": "not-a-uuid"}, "user_id"),
        ({"payload": {"x": float("nan")}}, "payload"),
        ({"payload": {"x": "a\x00b"}}, "payload"),
        ({"payload": {1: "int key"}}, "payload"),
        ({"payload": ["a", "list"]}, "payload"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_written(
    db: store.Store, conn: asyncpg.Connection, options: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"task_type": "ok", "payload": {}, **options}
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        await client.enqueue(conn, args.pop("task_type"), args.pop("payload"), **args)
    good = client.Job("ok")
    bad = client.Job(**{"task_type": "ok", **options})
    with pytest.raises(ValueError, match=rf"^jobs\[1\]: {field}\b"):
        await client.enqueue_many(conn, [good, bad])
    assert await db.pool.fetchval("SELECT count(*) FROM job_queue") == 0


# -- typed enqueue from the handler, and follow-ups from a running job ----------------------


class Welcome(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    user_id: int
    when: datetime | None = None


def welcome_registry() -> tuple[Registry, Any]:
    reg = Registry()

    @handler("welcome", payload=Welcome, max_attempts=4, registry=reg)
    async def welcome(ctx: JobContext, payload: Welcome) -> JobResult:
        return JobResult(notes=[f"welcomed {payload.user_id}"])

    return reg, welcome


async def test_handler_enqueues_its_own_jobs_checked_by_its_model(
    db: store.Store, conn: asyncpg.Connection, db_dsn: str, make_settings: Any
) -> None:
    reg, welcome = welcome_registry()
    assert (await welcome(None, Welcome(user_id=0))).notes == ["welcomed 0"]  # still callable
    assert welcome.__name__ == "welcome"
    when = datetime(2030, 5, 6, tzinfo=UTC)
    async with conn.transaction():
        one = await welcome.enqueue(conn, Welcome(user_id=1, when=when))
        two = await welcome.enqueue(conn, {"user_id": "2"}, priority=3, max_attempts=2)
    with psycopg.connect(db_dsn) as sconn:
        three = welcome.enqueue_sync(sconn, {"user_id": 3})
    rows = await db.pool.fetch("SELECT id, payload, max_attempts FROM job_queue ORDER BY id")
    assert [(r["id"], r["payload"], r["max_attempts"]) for r in rows] == [
        (one.job_id, {"user_id": 1, "when": "2030-05-06T00:00:00Z"}, 4),
        (two.job_id, {"user_id": 2, "when": None}, 2),
        (three.job_id, {"user_id": 3, "when": None}, 4),
    ]
    summary = await drain(db, make_settings(), reg)
    assert (summary.processed, summary.succeeded) == (3, 3)


async def test_a_payload_the_model_refuses_raises_at_the_call_site(
    db: store.Store, conn: asyncpg.Connection
) -> None:
    _, welcome = welcome_registry()
    for wrong in ({"user_id": "one"}, {"user_id": 1, "extra": True}, {}):
        with pytest.raises(pydantic.ValidationError):
            await welcome.enqueue(conn, wrong)
    with pytest.raises(pydantic.ValidationError):
        welcome.job({"nobody": 1})
    with pytest.raises(ValueError, match="priority"):
        await welcome.enqueue(conn, {"user_id": 1}, priority=5000)
    assert await db.pool.fetchval("SELECT count(*) FROM job_queue") == 0
    ids = await client.enqueue_many(conn, [welcome.job({"user_id": i}) for i in range(3)])
    assert len(ids) == 3


async def test_ctx_enqueue_writes_a_follow_up_job(db: store.Store, make_settings: Any) -> None:
    async def parent(ctx: JobContext, payload: handlers.Empty) -> JobResult:
        done = await ctx.enqueue("ok", {}, dedupe_key=f"after:{ctx.job_id}", priority=1)
        return JobResult(notes=[f"follow-up {done.job_id}"])

    reg = handlers.registry()
    reg.add(Handler("parent", parent, handlers.Empty))
    parent_id = (await client.enqueue(db.pool, "parent", {})).job_id
    summary = await drain(db, make_settings(), reg)
    assert summary.failed == 0
    row = await db.pool.fetchrow(
        "SELECT id, status, priority, dedupe_key FROM job_queue WHERE task_type = 'ok'"
    )
    assert (row["dedupe_key"], row["priority"]) == (f"after:{parent_id}", 1)
    notes = await db.pool.fetchval("SELECT notes FROM job_runs WHERE job_id = $1", parent_id)
    assert notes == f"follow-up {row['id']}"


async def test_dedupe_key_taken_while_the_statement_ran(
    db: store.Store, db_dsn: str, conn: asyncpg.Connection
) -> None:
    """A key committed by another transaction after this one's snapshot: the first
    statement finds no holder, the second (a new snapshot) returns it."""
    other = await asyncpg.connect(db_dsn)
    try:
        tx = other.transaction()
        await tx.start()
        theirs = await client.enqueue(other, "ok", {}, dedupe_key="race")
        ours = asyncio.ensure_future(client.enqueue(conn, "ok", {}, dedupe_key="race"))
        await asyncio.wait_for(waiting_on_a_lock(db, conn.get_server_pid()), timeout=10)
        await tx.commit()
        done = await asyncio.wait_for(ours, timeout=10)
    finally:
        await other.close()
    assert done == client.Enqueued(theirs.job_id, "pending", duplicate=True)
    assert await count(db) == 1


async def waiting_on_a_lock(db: store.Store, pid: int) -> None:
    query = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"
    while not await db.pool.fetchval(query, pid):  # noqa: ASYNC110 - polls the database
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("name", sorted(client.QUERIES))
async def test_every_client_query_prepares(conn: asyncpg.Connection, name: str) -> None:
    await conn.prepare(client.QUERIES[name])


async def test_a_job_enqueued_after_its_parents_waits_for_them(
    db: store.Store, db_dsn: str, make_settings: Any
) -> None:
    """depends_on through the client (asyncpg and psycopg): the child waits until its
    parent succeeded, then runs; a bad policy or a dedupe key is refused before writing."""
    parent = await client.enqueue(db.pool, "ok", {})
    child = await client.enqueue(db.pool, "ok", {}, depends_on=[parent.job_id])
    assert (parent.status, child.status) == ("pending", "waiting")

    def produce() -> client.Enqueued:
        with psycopg.connect(db_dsn) as sconn:
            return client.enqueue_sync(
                sconn, "ok", {}, depends_on=[parent.job_id, child.job_id], on_parent_failure="run"
            )

    run_anyway = await asyncio.to_thread(produce)
    assert run_anyway.status == "waiting"
    for refused, problem in (
        ({"on_parent_failure": "maybe"}, "on_parent_failure must be cancel or run"),
        ({"dedupe_key": "k"}, "dedupe_key: a job with depends_on cannot take one"),
        ({"depends_on": []}, "depends_on must be a non-empty list of job ids"),
    ):
        options: dict[str, Any] = {"depends_on": [parent.job_id], **refused}
        with pytest.raises(ValueError, match=problem):
            await client.enqueue(db.pool, "ok", {}, **options)
    await drain(db, make_settings())
    statuses = await db.pool.fetch("SELECT id, status FROM job_queue ORDER BY id")
    assert [r["status"] for r in statuses] == ["succeeded"] * 3
