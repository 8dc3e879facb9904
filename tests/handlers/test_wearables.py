"""sync_wearables: placeholder, SQL function, and paged API sync against a fake provider."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers import wearables
from tests.handlers.conftest import Call, RunJob
from tests.support.fakeapi import FakeApi, Request, Response
from worker import errors, store

USER_A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
USER_B = uuid.UUID("00000000-0000-4000-8000-00000000000b")


def sample(n: int, value: float = 100.0) -> dict[str, Any]:
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n)
    return {
        "id": f"s{n}",
        "type": "steps",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=1)).isoformat(),
        "value": value,
        "unit": "count",
    }


class Provider:
    """A fake provider: per external user a list of samples; the cursor is an offset."""

    def __init__(self, api: FakeApi, data: dict[str, list[dict[str, Any]]]) -> None:
        self.data = data
        self.fail: dict[tuple[str, str], Response] = {}  # (user, cursor) -> response
        api.route("GET", "/v1/users/{user}/samples")(self.samples)

    def samples(self, request: Request) -> Response:
        user, cursor = request.params["user"], request.query.get("cursor", "0")
        if (user, cursor) in self.fail:
            return self.fail[(user, cursor)]
        rows = self.data.get(user, [])
        start, limit = int(cursor), int(request.query["limit"])
        page = rows[start : start + limit]
        end = start + len(page)
        return Response(
            json={"samples": page, "next_cursor": str(end), "has_more": end < len(rows)}
        )


async def connect(db: store.Store) -> None:
    await db.pool.execute(
        "INSERT INTO wearable_connections (user_id, external_user_id) VALUES ($1, 'a'), ($2, 'b')",
        USER_A,
        USER_B,
    )
    # Another provider's connection: never sent to this API.
    await db.pool.execute(
        "INSERT INTO wearable_connections (user_id, provider, external_user_id) "
        "VALUES ($1, 'other', 'x')",
        USER_A,
    )


async def state(db: store.Store) -> tuple[list[tuple[str, str | None]], list[tuple[str, float]]]:
    cursors = await db.pool.fetch(
        "SELECT external_user_id, sync_cursor FROM wearable_connections ORDER BY id"
    )
    samples = await db.pool.fetch(
        "SELECT external_id, value FROM wearable_samples ORDER BY connection_id, external_id"
    )
    return [tuple(r) for r in cursors], [tuple(r) for r in samples]


@pytest.fixture
def api_settings(hsettings: Any, fake_api: FakeApi) -> Any:
    return hsettings(
        wearables_api_url=fake_api.url, wearables_api_token="tok-secret", wearables_page_size=2
    )


async def test_neither_configured_records_a_placeholder_run(run_job: RunJob) -> None:
    ran = await run_job("sync_wearables")
    assert ran.status == "succeeded"
    assert (ran.last_run["rows_affected"], ran.last_run["notes"]) == (
        0,
        "sync_wearables RPC not configured yet; recorded placeholder run.",
    )


async def test_sql_function_is_called_instead_and_its_count_reported(
    db: store.Store, run_job: RunJob, api_settings: Any, fake_api: FakeApi
) -> None:
    await db.pool.execute(
        "CREATE FUNCTION sync_wearables() RETURNS integer LANGUAGE sql AS 'SELECT 42'"
    )
    ran = await run_job("sync_wearables")
    assert ran.status == "succeeded"
    assert (ran.last_run["rows_affected"], ran.last_run["notes"]) == (
        42,
        "called sync_wearables(): 42 rows",
    )
    assert fake_api.requests == []  # the function wins over the API


async def test_api_sync_pages_upserts_and_advances_cursors(
    db: store.Store, run_job: RunJob, api_settings: Any, fake_api: FakeApi
) -> None:
    Provider(fake_api, {"a": [sample(i) for i in range(5)], "b": [sample(9)]})
    await connect(db)
    ran = await run_job("sync_wearables")
    assert ran.status == "succeeded", ran.error
    assert ran.last_run["rows_affected"] == 6
    assert ran.last_run["notes"].startswith(
        "synced 2/2 connection(s): 4 page(s), 6 sample(s) fetched, 6 new or changed"
    )
    cursors, samples = await state(db)
    assert cursors == [("a", "5"), ("b", "1"), ("x", None)]
    assert [s[0] for s in samples] == ["s0", "s1", "s2", "s3", "s4", "s9"]
    sent = fake_api.requests
    assert [r.query.get("cursor") for r in sent] == [None, "2", "4", None]
    assert {r.headers["authorization"] for r in sent} == {"Bearer tok-secret"}


async def test_rerun_changes_nothing(
    db: store.Store, call: Call, api_settings: Any, fake_api: FakeApi
) -> None:
    provider = Provider(fake_api, {"a": [sample(i) for i in range(3)], "b": []})
    await connect(db)
    await call("sync_wearables")
    before = await state(db)
    again = await call("sync_wearables")
    assert again.rows_affected == 0
    assert await state(db) == before
    # Even an identical re-delivery (cursor lost) writes nothing.
    await db.pool.execute("UPDATE wearable_connections SET sync_cursor = NULL")
    redelivered = await call("sync_wearables")
    assert redelivered.rows_affected == 0
    assert (await state(db))[1] == before[1]
    # A changed sample is written.
    provider.data["a"][1] = sample(1, value=7.0)
    await db.pool.execute("UPDATE wearable_connections SET sync_cursor = NULL")
    assert (await call("sync_wearables")).rows_affected == 1


async def test_failure_midway_keeps_committed_pages_and_resumes(
    db: store.Store, run_job: RunJob, api_settings: Any, fake_api: FakeApi
) -> None:
    provider = Provider(fake_api, {"a": [sample(i) for i in range(5)], "b": [sample(9)]})
    provider.fail[("a", "2")] = Response(500, {"error": "provider down"})
    await connect(db)
    ran = await run_job("sync_wearables")
    assert ran.status == "failed"
    assert ran.error is not None
    assert "1 connection(s) failed and will be retried" in ran.error
    assert "HTTP 500 after 3 tries" in ran.error
    assert len(fake_api.requests_to("/v1/users/a")) == 1 + 3  # page 1, then 3 tries of page 2
    cursors, samples = await state(db)
    assert cursors == [("a", "2"), ("b", "1"), ("x", None)]  # page 1 of a and all of b kept
    assert [s[0] for s in samples] == ["s0", "s1", "s9"]

    del provider.fail[("a", "2")]
    again = await run_job("sync_wearables")
    assert again.status == "succeeded"
    assert again.last_run["rows_affected"] == 3
    cursors, samples = await state(db)
    assert cursors[0] == ("a", "5")
    assert [s[0] for s in samples] == ["s0", "s1", "s2", "s3", "s4", "s9"]


async def test_rate_limit_retries_after_retry_after(
    db: store.Store, run_job: RunJob, api_settings: Any, fake_api: FakeApi
) -> None:
    provider = Provider(fake_api, {"a": [sample(0)], "b": [sample(1)]})
    provider.fail[("b", "0")] = Response(429, {"error": "slow down"}, {"Retry-After": "120"})
    await connect(db)
    ran = await run_job("sync_wearables", max_attempts=3)
    assert ran.status == "pending"
    assert ran.last_run["reason"] == "retry_later"
    assert ran.error is not None and "synced 1/2 connection(s)" in ran.error
    assert "HTTP 429, rate limited; retrying in 120s" in ran.error
    wait = ran.job["run_at"] - datetime.now(UTC)
    assert timedelta(seconds=100) < wait <= timedelta(seconds=120)
    assert len(fake_api.requests_to("/v1/users/b")) == 1  # a 429 is not hammered


async def test_bad_payload_fails_at_once(run_job: RunJob) -> None:
    ran = await run_job("sync_wearables", {"user_id": "nobody"}, max_attempts=5)
    assert (ran.status, ran.job["attempts"]) == ("failed", 1)
    assert ran.error is not None
    assert ran.error.startswith(
        "PermanentJobError: invalid payload for 'sync_wearables': user_id: Input should be a "
        "valid UUID"
    )
    extra = await run_job("sync_wearables", {"url": "http://evil.example"})
    assert extra.error is not None and "url: Extra inputs are not permitted" in extra.error


async def test_rejected_token_fails_for_good_without_echoing_it(
    db: store.Store, call: Call, api_settings: Any, fake_api: FakeApi
) -> None:
    @fake_api.route("GET", "/v1/users/{user}/samples")
    def unauthorized(request: Request) -> Response:
        return Response(401, {"error": f"bad token {request.headers['authorization']}"})

    await connect(db)
    with pytest.raises(errors.PermanentJobError) as failed:
        await call("sync_wearables")
    message = str(failed.value)
    assert "every connection failed" in message
    assert "HTTP 401" in message and "bad token ***" in message
    assert "tok-secret" not in message


async def test_malformed_provider_body_is_a_permanent_error(
    db: store.Store, call: Call, api_settings: Any, fake_api: FakeApi
) -> None:
    @fake_api.route("GET", "/v1/users/{user}/samples")
    def malformed(request: Request) -> Response:
        return Response(json={"samples": [{"id": "s1"}]})

    await connect(db)
    with pytest.raises(errors.PermanentJobError, match=r"unexpected response body: samples\.0"):
        await call("sync_wearables", {"user_id": str(USER_A)})
    assert (await state(db))[1] == []


def test_placeholder_note_is_the_documented_one() -> None:
    assert wearables.PLACEHOLDER_NOTE == (
        "sync_wearables RPC not configured yet; recorded placeholder run."
    )
