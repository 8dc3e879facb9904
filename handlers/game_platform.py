"""The coaching app's game platform jobs: incremental game sync and the totals sweep.

`game_platform_sync` pages through each competitor's games newer than its
`after_time_unix` cursor. Each page's games are inserted (ON CONFLICT DO NOTHING) and the
cursor moved (compare-and-set) in one transaction; a competitor with new games gets
`needs_totals_refresh`. A retry resumes after the last committed page; games already stored
count as nothing new, so a re-run flags nobody.

`game_platform_totals_sweep` asks the API for each flagged competitor's totals (the source
of truth), stores them and clears the flag, one competitor per transaction. A competitor
whose request fails stays flagged and does not stop the others; the flag is kept, too, when
new activity arrived while its totals were being fetched.

`game_platform_sync_by_coach` fans out: one `game_platform_sync` per coach, as a group
whose finalizer is the totals sweep for exactly the competitors those syncs flagged (it
reads them from its parents' results), run once every sync is final: no sweep starts
before the syncs it depends on, nor an hour after them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote
from uuid import UUID

import asyncpg
import pydantic
from pydantic import Field

from handlers import apiclient, outcomes, payloads
from handlers import settings as handler_settings
from worker import errors, queries
from worker.registry import JobContext, JobResult, JobSpec, handler

Q = queries.load("handlers", "queries.sql")


class GameSyncPayload(payloads.Payload):
    dry_run: bool = False
    """Fetch and report; write nothing (cursors stay where they are)."""
    coach_id: UUID | None = None
    """Only this coach's competitors."""


class TotalsSweepPayload(payloads.Payload):
    coach_id: UUID | None = None
    limit: int | None = Field(default=None, ge=1, le=100_000)
    """Most competitors this run (default HANDLERS_GAME_PLATFORM_SWEEP_BATCH)."""
    from_parents: bool = False
    """Only the competitors this job's parents (game_platform_sync jobs) flagged: the
    finalizer of a game_platform_sync_by_coach group."""


class SyncByCoachPayload(payloads.Payload):
    dry_run: bool = False
    """Passed to each coach's sync (a dry run flags nobody: the sweep then has nothing)."""


class Game(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    played_at_unix: int = Field(ge=0)
    result: str | None = Field(default=None, max_length=50)
    score: float | None = None
    stats: dict[str, Any] = {}


class GamesPage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")

    games: list[Game]
    has_more: bool = False


class Totals(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")

    games: int = Field(ge=0)
    wins: int = Field(ge=0)
    losses: int = Field(ge=0)
    draws: int = Field(ge=0)
    rating: int | None = None


@dataclass
class CompetitorSync:
    competitor_id: int = 0
    pages: int = 0
    fetched: int = 0
    new: int = 0
    more_left: bool = False
    raced: bool = False
    games: list[Game] = field(default_factory=list)


NOT_CONFIGURED_NOTE = (
    "game platform API not configured (HANDLERS_GAME_PLATFORM_API_URL unset); nothing to do"
)


def _api(conf: handler_settings.HandlerSettings) -> apiclient.Api | None:
    """The API client, or None when no base URL is configured: the default schedule runs
    these jobs in every deployment, and one without the coaching app must not fail."""
    if conf.game_platform_api_url is None:
        return None
    token = conf.game_platform_api_token
    return apiclient.Api(
        "game platform API",
        apiclient.Policy.from_settings(conf),
        base_url=str(conf.game_platform_api_url),
        secret=f"Bearer {token.get_secret_value()}" if token else None,
    )


def _player_path(player_id: str, resource: str) -> str:
    return f"/v1/players/{quote(player_id, safe='')}/{resource}"


@handler("game_platform_sync", payload=GameSyncPayload, max_attempts=5, timeout_s=900)
async def game_platform_sync(ctx: JobContext, payload: GameSyncPayload) -> JobResult:
    """Sync competitors' new games; flag those with new activity for a totals refresh."""
    conf = handler_settings.get()
    api = _api(conf)
    if api is None:
        return JobResult(notes=[NOT_CONFIGURED_NOTE])
    competitors = await ctx.pool.fetch(Q["gp_competitors"], payload.coach_id)
    failures = outcomes.Failures("competitor")
    done: list[CompetitorSync] = []
    async with api:
        for competitor in competitors:
            try:
                synced = await _sync_competitor(ctx.pool, api, competitor, conf, payload.dry_run)
            except errors.RetryLater as exc:
                raise outcomes.rate_limited(exc, _sync_summary(done, payload.dry_run)) from None
            except (errors.JobError, asyncpg.PostgresError) as exc:
                failures.add(str(competitor["id"]), exc)
                continue
            done.append(synced)
    summary = _sync_summary(done, payload.dry_run)
    failures.raise_if_any(summary, attempted=len(competitors))
    notes = [summary]
    if not competitors:
        notes.append(
            f"no competitors of coach {payload.coach_id}" if payload.coach_id else "no competitors"
        )
    if more := sum(1 for d in done if d.more_left):
        notes.append(f"{more} competitor(s) have more pages; the next run continues")
    if raced := sum(1 for d in done if d.raced):
        notes.append(f"{raced} competitor(s) were being synced by another run; left to it")
    new = sum(d.new for d in done)
    flagged = sum(1 for d in done if d.new)
    return JobResult(
        rows_affected=0 if payload.dry_run else new,
        notes=notes,
        data={
            "dry_run": payload.dry_run,
            "competitors": len(competitors),
            "games_fetched": sum(d.fetched for d in done),
            "games_new": new,
            "flagged": flagged,
            # for a sweep that follows this sync (a group's finalizer): whom to refresh
            "flagged_ids": [] if payload.dry_run else [d.competitor_id for d in done if d.new],
        },
    )


def _sync_summary(done: list[CompetitorSync], dry_run: bool) -> str:
    fetched = sum(d.fetched for d in done)
    new = sum(d.new for d in done)
    flagged = sum(1 for d in done if d.new)
    if dry_run:
        return (
            f"dry run: {len(done)} competitor(s), {fetched} game(s) fetched, {new} new; "
            f"{flagged} would be flagged for a totals refresh; nothing written"
        )
    return (
        f"synced {len(done)} competitor(s): {fetched} game(s) fetched, {new} new; "
        f"{flagged} flagged for a totals refresh"
    )


async def _sync_competitor(
    pool: asyncpg.Pool,
    api: apiclient.Api,
    competitor: Any,
    conf: handler_settings.HandlerSettings,
    dry_run: bool,
) -> CompetitorSync:
    result = CompetitorSync(competitor_id=int(competitor["id"]))
    after: int = competitor["after_time_unix"]
    path = _player_path(competitor["player_id"], "games")
    has_more = True
    while has_more and result.pages < conf.game_platform_max_pages:
        page = await api.get_model(
            path,
            GamesPage,
            params={"after_time_unix": after, "limit": conf.game_platform_page_size},
        )
        result.pages += 1
        result.fetched += len(page.games)
        # The API returns games played strictly after the cursor, oldest first.
        newest = max((g.played_at_unix for g in page.games), default=after)
        if dry_run:
            result.new += await _count_unknown(pool, competitor["id"], page.games)
        else:
            written = await _store_page(pool, competitor["id"], after, max(newest, after), page)
            if written is None:
                result.raced = True
                return result
            result.new += written
        has_more = page.has_more and newest > after
        after = max(newest, after)
    result.more_left = has_more
    return result


async def _store_page(
    pool: asyncpg.Pool, competitor_id: int, after: int, new_after: int, page: GamesPage
) -> int | None:
    """Insert the page and move the cursor in one transaction; None if another run moved
    the cursor first (nothing written)."""
    unique = list({g.id: g for g in page.games}.values())
    async with pool.acquire() as db, db.transaction():
        moved = await db.fetchval(Q["gp_advance_cursor"], competitor_id, after, new_after)
        if moved is None:
            return None
        if not unique:
            return 0
        new = await db.fetch(
            Q["gp_insert_games"],
            competitor_id,
            [g.id for g in unique],
            [g.played_at_unix for g in unique],
            [g.result for g in unique],
            [g.score for g in unique],
            [g.stats for g in unique],
        )
        if new:
            await db.execute(Q["gp_flag_activity"], competitor_id)
        return len(new)


async def _count_unknown(pool: asyncpg.Pool, competitor_id: int, games: list[Game]) -> int:
    ids = list({g.id for g in games})
    if not ids:
        return 0
    known = await pool.fetch(Q["gp_known_games"], competitor_id, ids)
    return len(ids) - len(known)


@handler("game_platform_totals_sweep", payload=TotalsSweepPayload, max_attempts=5, timeout_s=900)
async def game_platform_totals_sweep(ctx: JobContext, payload: TotalsSweepPayload) -> JobResult:
    """Refresh the totals of competitors flagged `needs_totals_refresh`."""
    conf = handler_settings.get()
    api = _api(conf)
    if api is None:
        return JobResult(notes=[NOT_CONFIGURED_NOTE])
    limit = payload.limit or conf.game_platform_sweep_batch
    if payload.from_parents:
        touched = await _flagged_by_parents(ctx)
        flagged = await ctx.pool.fetch(Q["gp_flagged_among"], touched, payload.coach_id, limit)
    else:
        flagged = await ctx.pool.fetch(Q["gp_flagged"], payload.coach_id, limit)
    failures = outcomes.Failures("competitor")
    refreshed = kept = 0
    async with api:
        for competitor in flagged:
            try:
                still_flagged = await _refresh_totals(ctx.pool, api, competitor)
            except errors.RetryLater as exc:
                raise outcomes.rate_limited(exc, _sweep_summary(refreshed, kept, flagged)) from None
            except (errors.JobError, asyncpg.PostgresError) as exc:
                failures.add(str(competitor["id"]), exc)
                continue
            refreshed += 1
            kept += still_flagged
    summary = _sweep_summary(refreshed, kept, flagged)
    failures.raise_if_any(summary, attempted=len(flagged))
    return JobResult(
        rows_affected=refreshed,
        notes=[summary],
        data={"flagged": len(flagged), "refreshed": refreshed, "still_flagged": kept},
    )


async def _flagged_by_parents(ctx: JobContext) -> list[int]:
    """The competitors the parent syncs flagged (a failed sync flagged nobody it reports;
    what it flagged before failing is left to the hourly sweep)."""
    touched: set[int] = set()
    for parent in await ctx.parent_results():
        if parent.task_type == "game_platform_sync" and isinstance(parent.result, dict):
            touched.update(int(i) for i in parent.result.get("flagged_ids", []))
    return sorted(touched)


@handler("game_platform_sync_by_coach", payload=SyncByCoachPayload, max_attempts=3, timeout_s=60)
async def game_platform_sync_by_coach(ctx: JobContext, payload: SyncByCoachPayload) -> JobResult:
    """One game_platform_sync per coach, then one totals sweep of what they flagged."""
    coaches = await ctx.pool.fetch(Q["gp_coaches"])
    if not coaches:
        return JobResult(notes=["no coaches with competitors; nothing to sync"])
    children = [
        JobSpec(
            "game_platform_sync",
            {"coach_id": str(row["coach_id"]), "dry_run": payload.dry_run},
            # one live sync per coach: a coach still syncing joins this group as it is
            dedupe_key=f"game_platform_sync:coach:{row['coach_id']}",
        )
        for row in coaches
    ]
    group = await ctx.enqueue_group(
        children, JobSpec("game_platform_totals_sweep", {"from_parents": True})
    )
    return JobResult(
        rows_affected=len(children),
        notes=[f"enqueued {len(children)} coach sync(s); sweep job {group.finalizer} follows"],
        data={"syncs": group.children, "sweep": group.finalizer},
    )


def _sweep_summary(refreshed: int, kept: int, flagged: list[Any]) -> str:
    text = f"refreshed totals of {refreshed}/{len(flagged)} flagged competitor(s)"
    if kept:
        text += f"; {kept} got new activity meanwhile and stay flagged"
    return text


async def _refresh_totals(pool: asyncpg.Pool, api: apiclient.Api, competitor: Any) -> bool:
    """Fetch and store one competitor's totals; True if it stays flagged (new activity)."""
    totals = await api.get_model(_player_path(competitor["player_id"], "totals"), Totals)
    seen: datetime | None = competitor["last_activity_at"]
    still_flagged = await pool.fetchval(
        Q["gp_store_totals"],
        competitor["id"],
        totals.games,
        totals.wins,
        totals.losses,
        totals.draws,
        totals.rating,
        seen,
    )
    return bool(still_flagged)
