"""call_endpoint against a fake endpoint, and the HTTP client policy under it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from handlers import apiclient
from tests.handlers.conftest import Call, RunJob, drain
from tests.support.fakeapi import FakeApi, Request, Response
from worker import errors, store

SECRET = "Bearer sk-live-0123456789"


@pytest.fixture
def endpoint(hsettings: Any, fake_api: FakeApi) -> FakeApi:
    hsettings(
        endpoints={
            "adapter_health": {
                "url": f"{fake_api.url}/functions/v1/adapter-health?region=eu",
                "secret": SECRET,
            },
            "slow": {"url": f"{fake_api.url}/slow", "timeout_s": 0.1},
        },
    )
    return fake_api


def answers(api: FakeApi, *responses: Response) -> list[Request]:
    """The endpoint answers with `responses` in turn (the last one repeats)."""
    seen: list[Request] = []

    @api.route("POST", "/functions/v1/adapter-health")
    def reply(request: Request) -> Response:
        seen.append(request)
        return responses[min(len(seen), len(responses)) - 1]

    return seen


async def test_posts_the_body_with_the_secret_header_and_records_the_answer(
    endpoint: FakeApi, run_job: RunJob
) -> None:
    seen = answers(endpoint, Response(json={"ok": True, "rows_affected": 12}))
    ran = await run_job("call_endpoint", {"endpoint": "adapter_health", "body": {"week": 47}})
    assert ran.status == "succeeded", ran.error
    [request] = seen
    assert request.json() == {"week": 47}
    assert request.query == {"region": "eu"}
    assert request.headers["authorization"] == SECRET
    assert request.headers["idempotency-key"] == f"job-{ran.job['id']}"
    assert ran.last_run["rows_affected"] == 12
    assert ran.last_run["notes"].startswith("POST adapter_health: HTTP 200 in ")
    assert ran.job["result"]["response"] == {"ok": True, "rows_affected": 12}


async def test_rerun_sends_again_with_its_own_idempotency_key(
    endpoint: FakeApi, call: Call
) -> None:
    seen = answers(endpoint, Response(json={"ok": True}))
    first = await call("call_endpoint", {"endpoint": "adapter_health"}, job_id=7)
    second = await call("call_endpoint", {"endpoint": "adapter_health"}, job_id=7)
    assert first.rows_affected == second.rows_affected == 0
    assert [r.headers["idempotency-key"] for r in seen] == ["job-7", "job-7"]
    assert [r.json() for r in seen] == [{}, {}]


async def test_5xx_is_tried_again_inside_the_job_then_succeeds(
    endpoint: FakeApi, run_job: RunJob
) -> None:
    seen = answers(endpoint, Response(500, text="boom"), Response(502), Response(json={"ok": 1}))
    ran = await run_job("call_endpoint", {"endpoint": "adapter_health"})
    assert (ran.status, ran.job["attempts"]) == ("succeeded", 1)
    assert len(seen) == 3
    assert len({r.headers["idempotency-key"] for r in seen}) == 1


async def test_5xx_on_every_try_fails_the_attempt_and_the_next_attempt_succeeds(
    endpoint: FakeApi, run_job: RunJob
) -> None:
    seen = answers(endpoint, *[Response(503, text="down")] * 3, Response(json={"ok": 1}))
    ran = await run_job("call_endpoint", {"endpoint": "adapter_health"}, max_attempts=2)
    assert (ran.status, ran.job["attempts"]) == ("succeeded", 2)
    assert [(r["status"], r["reason"]) for r in ran.runs] == [
        ("retry", "error"),
        ("succeeded", "ok"),
    ]
    assert ran.runs[0]["error"] == (
        "JobError: endpoint 'adapter_health': POST: HTTP 503 after 3 tries: down"
    )
    assert len(seen) == 4


async def test_429_retries_the_job_after_retry_after(
    endpoint: FakeApi, run_job: RunJob, db: store.Store, make_settings: Any
) -> None:
    seen = answers(
        endpoint, Response(429, {"error": "slow down"}, {"Retry-After": "30"}), Response(json={})
    )
    ran = await run_job("call_endpoint", {"endpoint": "adapter_health"}, max_attempts=3)
    assert (ran.status, ran.last_run["reason"]) == ("pending", "retry_later")
    assert ran.error == (
        "RetryLater: endpoint 'adapter_health': POST: HTTP 429, rate limited; retrying in 30s"
    )
    wait = ran.job["run_at"] - datetime.now(UTC)
    assert timedelta(seconds=25) < wait <= timedelta(seconds=30)
    assert len(seen) == 1
    # The provider throttles the account: the whole task type waits as long, on every worker.
    held = await db.pool.fetchval(
        "SELECT held_until - now() FROM job_limits WHERE task_type = 'call_endpoint'"
    )
    assert timedelta(seconds=25) < held <= timedelta(seconds=30)
    await db.pool.execute("UPDATE job_queue SET run_at = now()")
    await drain(db, make_settings(), "call_endpoint")
    assert (await db.pool.fetchval("SELECT attempts FROM job_queue")) == 1  # still held
    # Once due and no longer held, the job runs again and succeeds.
    await db.pool.execute("UPDATE job_limits SET held_until = now()")
    await drain(db, make_settings(), "call_endpoint")
    row = await db.pool.fetchrow("SELECT status, attempts FROM job_queue")
    assert row is not None and (row["status"], row["attempts"]) == ("succeeded", 2)


async def test_4xx_fails_for_good_with_the_response_and_without_the_secret(
    endpoint: FakeApi, run_job: RunJob
) -> None:
    @endpoint.route("POST", "/functions/v1/adapter-health")
    def refuse(request: Request) -> Response:
        echoed = request.headers["authorization"]
        return Response(422, text=f"invalid week; you sent {echoed}\n" + "x" * 1000)

    ran = await run_job("call_endpoint", {"endpoint": "adapter_health"}, max_attempts=5)
    assert (ran.status, ran.job["attempts"]) == ("failed", 1)
    assert ran.error is not None
    assert ran.error.startswith(
        "PermanentJobError: endpoint 'adapter_health': POST: HTTP 422: invalid week; you sent "
        "*** xxx"
    )
    assert len(ran.error) < 450 and ran.error.endswith("…")
    assert "sk-live" not in ran.error and "region=eu" not in ran.error


async def test_timeouts_are_explicit_and_retried(endpoint: FakeApi, call: Call) -> None:
    @endpoint.route("POST", "/slow")
    async def slow(request: Request) -> Response:
        await asyncio.sleep(5)
        return Response(json={})

    with pytest.raises(errors.JobError, match=r"POST: ReadTimeout after 3 tries") as failed:
        await call("call_endpoint", {"endpoint": "slow"})
    assert not isinstance(failed.value, errors.PermanentJobError)
    assert len(endpoint.requests_to("/slow")) == 3


async def test_bad_input(endpoint: FakeApi, run_job: RunJob) -> None:
    unknown = await run_job("call_endpoint", {"endpoint": "nope"})
    assert unknown.error == (
        "PermanentJobError: call_endpoint: unknown endpoint 'nope' (HANDLERS_ENDPOINTS "
        "defines: adapter_health, slow)"
    )
    url = await run_job("call_endpoint", {"endpoint": "adapter_health", "url": "http://x"})
    assert url.error is not None and "url: Extra inputs are not permitted" in url.error
    name = await run_job("call_endpoint", {"endpoint": "../admin"})
    assert name.error is not None and "endpoint: String should match pattern" in name.error
    assert endpoint.requests == []


# -- the client policy --------------------------------------------------------------------

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Thu, 01 Jan 2026 12:01:30 GMT", 90.0),
        ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),  # in the past
        ("99999", 3600.0),  # capped
        ("soon", 60.0),  # unreadable: the default
        (None, 60.0),
        ("-5", 60.0),
    ],
)
def test_retry_after(header: str | None, expected: float) -> None:
    assert apiclient.retry_after_s(header, now=NOW, default_s=60, max_s=3600) == expected


def test_excerpt_scrubs_secrets_and_bounds_the_text() -> None:
    assert apiclient.excerpt("a\n  b tok-1 c", ["tok-1"]) == "a b *** c"
    assert apiclient.excerpt("y" * 500, [], limit=10) == "y" * 9 + "…"


async def test_network_errors_are_retried_then_transient(hsettings: Any) -> None:
    conf = hsettings(http_attempts=2)
    transport = httpx.MockTransport(
        lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused"))
    )
    api = apiclient.Api(
        "some API",
        apiclient.Policy.from_settings(conf),
        base_url="http://127.0.0.1:9",
        transport=transport,
    )
    async with api:
        with pytest.raises(
            errors.JobError, match="some API: GET /x: ConnectError after 2 tries: refused"
        ):
            await api.request("GET", "/x")
