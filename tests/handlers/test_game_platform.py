"""game_platform_sync and game_platform_totals_sweep against a fake game platform."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from handlers import game_platform
from tests.handlers.conftest import Call, RunJob, registry_of
from tests.support.fakeapi import FakeApi, Request, Response
from worker import dispatcher, store

COACH_1 = uuid.UUID("00000000-0000-4000-8000-0000000000c1")
COACH_2 = uuid.UUID("00000000-0000-4000-8000-0000000000c2")
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def game(n: int) -> dict[str, Any]:
    return {
        "id": f"g{n}",
        "played_at_unix": T0 + n * 60,
        "result": "win",
        "score": n,
        "stats": {"n": n},
    }


class Platform:
    """Games newer than `after_time_unix`, oldest first, `limit` per page; totals per player."""

    def __init__(self, api: FakeApi) -> None:
        self.games: dict[str, list[dict[str, Any]]] = {}
        self.totals: dict[str, dict[str, Any]] = {}
        self.fail: dict[tuple[str, str], Response] = {}  # (player, after or "totals") -> response
        api.route("GET", "/v1/players/{player}/games")(self.list_games)
        api.route("GET", "/v1/players/{player}/totals")(self.get_totals)

    def list_games(self, request: Request) -> Response:
        player, after = request.params["player"], request.query["after_time_unix"]
        if (player, after) in self.fail:
            return self.fail[(player, after)]
        newer = [g for g in self.games.get(player, []) if g["played_at_unix"] > int(after)]
        limit = int(request.query["limit"])
        return Response(json={"games": newer[:limit], "has_more": len(newer) > limit})

    def get_totals(self, request: Request) -> Response:
        player = request.params["player"]
        if (player, "totals") in self.fail:
            return self.fail[(player, "totals")]
        if player not in self.totals:
            return Response(404, {"error": "unknown player"})
        return Response(json=self.totals[player])


@pytest.fixture
def platform(hsettings: Any, fake_api: FakeApi) -> Platform:
    hsettings(
        game_platform_api_url=fake_api.url,
        game_platform_api_token="gp-secret",
        game_platform_page_size=2,
    )
    return Platform(fake_api)


async def add_competitors(db: store.Store) -> None:
    await db.pool.execute(
        "INSERT INTO competitors (coach_id, player_id) VALUES ($1, 'p1'), ($2, 'p2'), ($2, 'p3')",
        COACH_1,
        COACH_2,
    )


async def competitors(db: store.Store) -> list[tuple[Any, ...]]:
    rows = await db.pool.fetch(
        "SELECT player_id, after_time_unix, needs_totals_refresh, total_games, rating "
        "FROM competitors ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def game_ids(db: store.Store) -> list[str]:
    rows = await db.pool.fetch("SELECT game_id FROM competitor_game_stats ORDER BY game_id")
    return [r["game_id"] for r in rows]


# -- game_platform_sync ---------------------------------------------------------------------


async def test_sync_pages_stores_games_and_flags_new_activity(
    db: store.Store, run_job: RunJob, platform: Platform, fake_api: FakeApi
) -> None:
    platform.games = {"p1": [game(1), game(2), game(3)], "p3": [game(4)]}
    await add_competitors(db)
    ran = await run_job("game_platform_sync")
    assert ran.status == "succeeded", ran.error
    assert ran.last_run["rows_affected"] == 4
    assert ran.last_run["notes"] == (
        "synced 3 competitor(s): 4 game(s) fetched, 4 new; 2 flagged for a totals refresh"
    )
    assert await competitors(db) == [
        ("p1", T0 + 180, True, None, None),
        ("p2", 0, False, None, None),
        ("p3", T0 + 240, True, None, None),
    ]
    assert await game_ids(db) == ["g1", "g2", "g3", "g4"]
    p1 = fake_api.requests_to("/v1/players/p1/")
    assert [r.query["after_time_unix"] for r in p1] == ["0", str(T0 + 120)]
    assert {r.headers["authorization"] for r in fake_api.requests} == {"Bearer gp-secret"}
    stats = await db.pool.fetchval("SELECT stats FROM competitor_game_stats WHERE game_id = 'g2'")
    assert stats == {"n": 2}


async def test_sync_rerun_changes_nothing_and_flags_nobody(
    db: store.Store, call: Call, platform: Platform
) -> None:
    platform.games = {"p1": [game(1), game(2)]}
    await add_competitors(db)
    await call("game_platform_sync")
    await db.pool.execute("UPDATE competitors SET needs_totals_refresh = false")
    before = await competitors(db)
    again = await call("game_platform_sync")
    assert again.rows_affected == 0
    assert await competitors(db) == before
    # Games fetched again (a lost cursor) are not new activity either.
    await db.pool.execute("UPDATE competitors SET after_time_unix = 0")
    assert (await call("game_platform_sync")).rows_affected == 0
    assert [c[2] for c in await competitors(db)] == [False, False, False]


async def test_dry_run_fetches_and_reports_but_writes_nothing(
    db: store.Store, call: Call, platform: Platform
) -> None:
    platform.games = {"p1": [game(1), game(2), game(3)]}
    await add_competitors(db)
    await db.pool.execute(
        "INSERT INTO competitor_game_stats (competitor_id, game_id, played_at) "
        "SELECT id, 'g1', now() FROM competitors WHERE player_id = 'p1'"
    )
    before = await competitors(db)
    result = await call("game_platform_sync", {"dry_run": True})
    assert result.rows_affected == 0
    assert result.notes[0] == (
        "dry run: 3 competitor(s), 3 game(s) fetched, 2 new; 1 would be flagged for a "
        "totals refresh; nothing written"
    )
    assert await competitors(db) == before
    assert await game_ids(db) == ["g1"]


async def test_coach_id_limits_the_sync_to_that_coachs_competitors(
    db: store.Store, call: Call, platform: Platform, fake_api: FakeApi
) -> None:
    platform.games = {"p1": [game(1)], "p2": [game(2)], "p3": [game(3)]}
    await add_competitors(db)
    result = await call("game_platform_sync", {"coach_id": str(COACH_2)})
    assert result.rows_affected == 2
    assert {r.path for r in fake_api.requests} == {"/v1/players/p2/games", "/v1/players/p3/games"}
    nobody = await call("game_platform_sync", {"coach_id": str(uuid.uuid4())})
    assert nobody.rows_affected == 0 and "no competitors of coach" in nobody.notes[1]


async def test_sync_failure_midway_keeps_committed_pages_and_resumes(
    db: store.Store, run_job: RunJob, platform: Platform
) -> None:
    platform.games = {"p1": [game(1), game(2), game(3)], "p2": [game(4)]}
    platform.fail[("p1", str(T0 + 120))] = Response(502, text="bad gateway")
    await add_competitors(db)
    ran = await run_job("game_platform_sync")
    assert ran.status == "failed"
    assert ran.error is not None and "competitor 1: game platform API: GET " in ran.error
    assert "HTTP 502 after 3 tries: bad gateway" in ran.error
    assert (await competitors(db))[:2] == [
        ("p1", T0 + 120, True, None, None),
        ("p2", T0 + 240, True, None, None),
    ]
    assert await game_ids(db) == ["g1", "g2", "g4"]
    platform.fail.clear()
    again = await run_job("game_platform_sync")
    assert (again.status, again.last_run["rows_affected"]) == ("succeeded", 1)
    assert await game_ids(db) == ["g1", "g2", "g3", "g4"]


async def test_sync_bad_input(run_job: RunJob, call: Call) -> None:
    ran = await run_job("game_platform_sync", {"dry_run": "perhaps"})
    assert ran.status == "failed"
    assert ran.error is not None and "dry_run: Input should be a valid boolean" in ran.error
    # No API configured (a deployment without the coaching app): a note, not a failure.
    for task_type in ("game_platform_sync", "game_platform_totals_sweep"):
        result = await call(task_type)
        assert (result.rows_affected, result.notes) == (0, [game_platform.NOT_CONFIGURED_NOTE])


# -- game_platform_totals_sweep -------------------------------------------------------------


def totals(games: int) -> dict[str, Any]:
    return {"games": games, "wins": games - 1, "losses": 1, "draws": 0, "rating": 1500 + games}


async def flag(db: store.Store, *players: str) -> None:
    await db.pool.execute(
        "UPDATE competitors SET needs_totals_refresh = true, last_activity_at = now() "
        "WHERE player_id = ANY($1)",
        list(players),
    )


async def test_sweep_stores_fresh_totals_and_clears_flags(
    db: store.Store, run_job: RunJob, platform: Platform, fake_api: FakeApi
) -> None:
    platform.totals = {"p1": totals(10), "p2": totals(3), "p3": totals(7)}
    await add_competitors(db)
    await flag(db, "p1", "p2")
    ran = await run_job("game_platform_totals_sweep")
    assert ran.status == "succeeded", ran.error
    assert ran.last_run["rows_affected"] == 2
    assert ran.last_run["notes"] == "refreshed totals of 2/2 flagged competitor(s)"
    assert await competitors(db) == [
        ("p1", 0, False, 10, 1510),
        ("p2", 0, False, 3, 1503),
        ("p3", 0, False, None, None),
    ]
    assert {r.path for r in fake_api.requests} == {"/v1/players/p1/totals", "/v1/players/p2/totals"}
    again = await run_job("game_platform_totals_sweep")
    assert again.last_run["rows_affected"] == 0
    assert len(fake_api.requests) == 2


async def test_sweep_failure_keeps_that_competitor_flagged_and_goes_on(
    db: store.Store, run_job: RunJob, platform: Platform
) -> None:
    platform.totals = {"p1": totals(10), "p2": totals(3), "p3": totals(7)}
    platform.fail[("p2", "totals")] = Response(503, text="maintenance")
    await add_competitors(db)
    await flag(db, "p1", "p2", "p3")
    ran = await run_job("game_platform_totals_sweep")
    assert ran.status == "failed"
    assert ran.error is not None
    assert ran.error.startswith("JobError: refreshed totals of 2/3 flagged competitor(s); 1 ")
    assert [c[2:4] for c in await competitors(db)] == [(False, 10), (True, None), (False, 7)]
    platform.fail.clear()
    again = await run_job("game_platform_totals_sweep")
    assert (again.status, again.last_run["rows_affected"]) == ("succeeded", 1)
    assert [c[2:4] for c in await competitors(db)] == [(False, 10), (False, 3), (False, 7)]


async def test_sweep_keeps_the_flag_when_activity_arrives_meanwhile(
    db: store.Store, call: Call, platform: Platform, fake_api: FakeApi
) -> None:
    await add_competitors(db)
    await flag(db, "p1")

    @fake_api.route("GET", "/v1/players/p1/totals")
    async def while_a_sync_runs(request: Request) -> Response:
        await db.pool.execute(
            "UPDATE competitors SET last_activity_at = now() + interval '1 second' "
            "WHERE player_id = 'p1'"
        )
        return Response(json=totals(5))

    result = await call("game_platform_totals_sweep")
    assert result.notes == [
        "refreshed totals of 1/1 flagged competitor(s); 1 got new activity meanwhile and "
        "stay flagged"
    ]
    assert (await competitors(db))[0] == ("p1", 0, True, 5, 1505)


async def test_sweep_unknown_players_fail_for_good(
    db: store.Store, run_job: RunJob, platform: Platform
) -> None:
    await add_competitors(db)
    await flag(db, "p1")
    ran = await run_job("game_platform_totals_sweep", max_attempts=3)
    assert (ran.status, ran.job["attempts"]) == ("failed", 1)
    assert ran.error is not None and "every competitor failed" in ran.error
    assert "HTTP 404" in ran.error


async def test_sweep_bad_input(run_job: RunJob) -> None:
    ran = await run_job("game_platform_totals_sweep", {"limit": 0})
    assert ran.status == "failed"
    assert (
        ran.error is not None and "limit: Input should be greater than or equal to 1" in ran.error
    )


# -- the app's own payloads -----------------------------------------------------------------


async def test_the_apps_cron_payload_verbatim(
    db: store.Store, run_job: RunJob, platform: Platform
) -> None:
    """The game-platform app's admin page creates its cron jobs with this payload."""
    await add_competitors(db)
    platform.games["p1"] = [game(1), game(2)]
    ran = await run_job("game_platform_sync", {"dryRun": False, "coachId": None})
    assert ran.status == "succeeded", ran.error
    assert ran.last_run["rows_affected"] == 2
    dry = await run_job("game_platform_sync", {"dryRun": True, "coachId": str(COACH_1)})
    assert dry.status == "succeeded", dry.error
    assert dry.last_run["notes"].startswith("dry run: 1 competitor(s)")
    refused = await run_job("game_platform_sync", {"dryRun": False, "coachID": None})
    assert refused.error is not None and "coachID: Extra inputs are not permitted" in refused.error


# -- game_platform_sync_by_coach: a group per coach, then the sweep of what they flagged -----


async def run_until_settled(db: store.Store, make_settings: Any) -> None:
    """A real dispatcher until no job is waiting, pending or running."""
    worker = dispatcher.Dispatcher(
        db,
        registry_of(
            "game_platform_sync_by_coach", "game_platform_sync", "game_platform_totals_sweep"
        ),
        make_settings(poll_interval_s=0.05),
    )
    task = asyncio.create_task(worker.run())
    live = "SELECT count(*) FROM job_queue WHERE status IN ('waiting', 'pending', 'running')"
    try:
        async with asyncio.timeout(60):
            while await db.pool.fetchval(live):  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.05)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=10)


async def test_sync_by_coach_sweeps_exactly_the_competitors_its_syncs_flagged(
    db: store.Store, platform: Platform, fake_api: FakeApi, make_settings: Any
) -> None:
    platform.games = {"p1": [game(1)], "p3": [game(2), game(3)], "p9": [game(4)]}
    platform.totals = {
        p: {"games": 3, "wins": 2, "losses": 1, "draws": 0, "rating": 1500}
        for p in ("p1", "p2", "p3", "p9")
    }
    await add_competitors(db)
    # flagged before, by something else, and no coach's: the group does not touch it
    await db.pool.execute(
        "INSERT INTO competitors (player_id, needs_totals_refresh) VALUES ('p9', true)"
    )
    fan_out = await db.pool.fetchval(
        "INSERT INTO job_queue (task_type) VALUES ('game_platform_sync_by_coach') RETURNING id"
    )
    await run_until_settled(db, make_settings)
    jobs = await db.pool.fetch(
        "SELECT id, task_type, status, payload, result FROM job_queue ORDER BY id"
    )
    assert [(j["task_type"], j["status"]) for j in jobs] == [
        ("game_platform_sync_by_coach", "succeeded"),
        ("game_platform_sync", "succeeded"),
        ("game_platform_sync", "succeeded"),
        ("game_platform_totals_sweep", "succeeded"),
    ]
    assert jobs[0]["id"] == fan_out
    assert [j["payload"]["coach_id"] for j in jobs[1:3]] == sorted([str(COACH_1), str(COACH_2)])
    sweep = jobs[3]
    parents = await db.pool.fetch(
        "SELECT parent_id FROM job_dependencies WHERE child_id = $1 ORDER BY 1", sweep["id"]
    )
    assert [p["parent_id"] for p in parents] == [jobs[1]["id"], jobs[2]["id"]]
    assert sweep["result"] == {"flagged": 2, "refreshed": 2, "still_flagged": 0}
    # p1 and p3 had new games and were refreshed; p2 had none; p9 stays for the hourly sweep
    assert await competitors(db) == [
        ("p1", T0 + 60, False, 3, 1500),
        ("p2", 0, False, None, None),
        ("p3", T0 + 180, False, 3, 1500),
        ("p9", 0, True, None, None),
    ]
    assert not fake_api.requests_to("/v1/players/p9/")
    # the sweep started only after both syncs' successes were committed
    order = await db.pool.fetch(
        "SELECT s.finished_at AS sync_done, w.started_at AS sweep_start"
        " FROM job_dependencies d JOIN job_queue s ON s.id = d.parent_id"
        " JOIN job_queue w ON w.id = d.child_id WHERE d.child_id = $1",
        sweep["id"],
    )
    assert all(r["sweep_start"] > r["sync_done"] for r in order)


async def test_sync_by_coach_with_no_coaches_enqueues_nothing(run_job: RunJob) -> None:
    ran = await run_job("game_platform_sync_by_coach")
    assert ran.status == "succeeded", ran.error
    assert ran.last_run["notes"] == "no coaches with competitors; nothing to sync"
