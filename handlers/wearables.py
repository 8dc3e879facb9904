"""The health app's wearable sync: samples from the provider API into wearable_samples.

Three ways to run, first match wins:
1. a SQL function `sync_wearables()` (HANDLERS_WEARABLES_SYNC_FUNCTION) exists: call it and
   report its row count (the app already syncs inside the database);
2. HANDLERS_WEARABLES_API_URL is set: page through each connection's new samples;
3. neither: succeed with rows_affected=0 and a note saying so (a placeholder run).

Idempotency: each page's samples are upserted and the connection's cursor is moved (a
compare-and-set on the old cursor) in one transaction, so a retry resumes after the last
committed page; an identical re-delivered sample writes nothing; a run racing another over
the same connection writes nothing for pages the other run already moved past.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from uuid import UUID

import asyncpg
import pydantic
from pydantic import AwareDatetime, Field

from handlers import apiclient, outcomes, payloads, sqlnames
from handlers import settings as handler_settings
from worker import errors, queries
from worker.registry import JobContext, JobResult, handler

Q = queries.load("handlers", "queries.sql")

PLACEHOLDER_NOTE = "sync_wearables RPC not configured yet; recorded placeholder run."


class SyncWearablesPayload(payloads.Payload):
    user_id: UUID | None = None
    """Only this user's connections (API mode)."""
    max_pages: int | None = Field(default=None, ge=1, le=10_000)
    """Pages per connection this run (default HANDLERS_WEARABLES_MAX_PAGES)."""


class Sample(pydantic.BaseModel):
    """One sample as the provider API returns it."""

    model_config = pydantic.ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=100)
    start: AwareDatetime
    end: AwareDatetime | None = None
    value: float
    unit: str | None = Field(default=None, max_length=50)


class SamplesPage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")

    samples: list[Sample]
    next_cursor: str | None = Field(default=None, max_length=2000)
    has_more: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionSync:
    pages: int
    fetched: int
    written: int
    more_left: bool
    raced: bool


@handler("sync_wearables", payload=SyncWearablesPayload, max_attempts=5, timeout_s=900)
async def sync_wearables(ctx: JobContext, payload: SyncWearablesPayload) -> JobResult:
    """Pull new wearable samples for every connected user (or call the SQL function)."""
    conf = handler_settings.get()
    if conf.wearables_sync_function:
        func = await sqlnames.function(ctx.pool, conf.wearables_sync_function)
        if func is not None:
            rows = await sqlnames.call(ctx.pool, func)
            notes = [f"called {func.call}: {rows} rows"]
            if payload.user_id is not None or payload.max_pages is not None:
                notes.append("user_id and max_pages apply to the API sync only: ignored")
            return JobResult(rows_affected=rows, notes=notes, data={"mode": "rpc", "rows": rows})
    if conf.wearables_api_url is None:
        return JobResult(rows_affected=0, notes=[PLACEHOLDER_NOTE], data={"mode": "placeholder"})
    return await _sync_from_api(ctx, payload, conf)


async def _sync_from_api(
    ctx: JobContext, payload: SyncWearablesPayload, conf: handler_settings.HandlerSettings
) -> JobResult:
    connections = await ctx.pool.fetch(
        Q["wearable_connections"], conf.wearables_provider, payload.user_id
    )
    max_pages = payload.max_pages or conf.wearables_max_pages
    failures = outcomes.Failures("connection")
    done: list[ConnectionSync] = []
    token = conf.wearables_api_token.get_secret_value() if conf.wearables_api_token else None
    api = apiclient.Api(
        "wearables API",
        apiclient.Policy.from_settings(conf),
        base_url=str(conf.wearables_api_url),
        secret=f"Bearer {token}" if token else None,
    )
    async with api:
        for conn in connections:
            try:
                done.append(
                    await _sync_connection(ctx.pool, api, conn, conf.wearables_page_size, max_pages)
                )
            except errors.RetryLater as exc:
                raise outcomes.rate_limited(exc, _summary(done, len(connections))) from None
            except (errors.JobError, asyncpg.PostgresError, OSError) as exc:
                failures.add(str(conn["id"]), exc)
    summary = _summary(done, len(connections))
    failures.raise_if_any(summary, attempted=len(connections))
    notes = [summary]
    if more := sum(1 for d in done if d.more_left):
        notes.append(f"{more} connection(s) have more pages; the next run continues")
    if raced := sum(1 for d in done if d.raced):
        notes.append(f"{raced} connection(s) were being synced by another run; left to it")
    written = sum(d.written for d in done)
    return JobResult(
        rows_affected=written,
        notes=notes,
        data={"mode": "api", "connections": len(connections), "samples_written": written},
    )


def _summary(done: list[ConnectionSync], total: int) -> str:
    fetched = sum(d.fetched for d in done)
    written = sum(d.written for d in done)
    pages = sum(d.pages for d in done)
    return (
        f"synced {len(done)}/{total} connection(s): {pages} page(s), {fetched} sample(s) "
        f"fetched, {written} new or changed"
    )


async def _sync_connection(
    pool: asyncpg.Pool, api: apiclient.Api, conn: Any, page_size: int, max_pages: int
) -> ConnectionSync:
    cursor: str | None = conn["sync_cursor"]
    path = f"/v1/users/{quote(conn['external_user_id'], safe='')}/samples"
    pages = fetched = written = 0
    has_more = True
    while has_more and pages < max_pages:
        params: dict[str, str | int] = {"limit": page_size}
        if cursor is not None:
            params["cursor"] = cursor
        page = await api.get_model(path, SamplesPage, params=params)
        pages += 1
        fetched += len(page.samples)
        new_cursor = page.next_cursor if page.next_cursor is not None else cursor
        async with pool.acquire() as db, db.transaction():
            moved = await db.fetchval(Q["advance_wearable_cursor"], conn["id"], cursor, new_cursor)
            if moved is None:
                return ConnectionSync(pages, fetched, written, more_left=False, raced=True)
            written += await _upsert(db, conn, page.samples)
        has_more = page.has_more and new_cursor != cursor
        cursor = new_cursor
    return ConnectionSync(pages, fetched, written, more_left=has_more, raced=False)


async def _upsert(db: sqlnames.Connection, conn: Any, samples: list[Sample]) -> int:
    if not samples:
        return 0
    unique = {s.id: s for s in samples}  # a page repeating a sample: the last one wins
    rows = list(unique.values())
    written = await db.fetch(
        Q["upsert_wearable_samples"],
        conn["id"],
        conn["user_id"],
        [s.id for s in rows],
        [s.type for s in rows],
        [s.start for s in rows],
        [s.end for s in rows],
        [s.value for s in rows],
        [s.unit for s in rows],
    )
    return len(written)
