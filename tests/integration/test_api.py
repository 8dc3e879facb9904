"""The JSON API over real HTTP against a real database: credentials and scopes, validation
problems, audit rows, every operation, and the served apps' three flows (a manual run that
answers the job contract, an admin trigger from a CI cron, a drain of N due jobs)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt

import handlers.wearables
from tests.support import factories, handlers, web
from worker import dispatcher, observability, store
from worker.registry import REGISTRY, Registry
from worker.web import ratelimit

ADMIN = "admin-token-0123456789abcdefgh"
READER = "read-token-0123456789abcdefghi"
ENQUEUER = "enqueue-token-0123456789abcdef"
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters"
TOKENS = json.dumps(
    {
        "ci": {"token": ADMIN, "scopes": ["admin"]},
        "dash": {"token": READER, "scopes": ["read"]},
        "app": {
            "token_sha256": __import__("hashlib").sha256(ENQUEUER.encode()).hexdigest(),
            "scopes": ["enqueue"],
        },
    }
)
USER = "00000000-0000-0000-0000-000000000000"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def registry() -> Registry:
    reg = handlers.registry()
    reg.add(REGISTRY.get("sync_wearables"))
    return reg


@contextlib.asynccontextmanager
async def api(
    db: store.Store,
    make_settings: Any,
    *,
    daemon: bool = False,
    tries: int = 10,
    **overrides: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The application; with `daemon`, a dispatcher running beside it as in the daemon."""
    settings = make_settings(api_tokens=TOKENS, api_jwt_secret=JWT_SECRET, **overrides)
    telemetry = observability.Telemetry(settings)
    worker = dispatcher.Dispatcher(db, registry(), settings, observer=telemetry)
    svc = web.services(settings, db, registry(), telemetry)
    svc.auth.limiter = ratelimit.FailureLimiter(max_failures=tries)
    task = asyncio.create_task(worker.run()) if daemon else None
    try:
        async with web.running(svc) as client:
            yield client
    finally:
        if task is not None:
            worker.request_stop()
            await asyncio.wait_for(task, timeout=10)


async def audit(db: store.Store) -> list[dict[str, Any]]:
    rows = await db.pool.fetch("SELECT actor, action, target FROM job_admin_audit ORDER BY id")
    return [dict(row) for row in rows]


def access_token(sub: str = USER, **claims: Any) -> str:
    body = {
        "sub": sub,
        "aud": "authenticated",
        "role": "authenticated",
        "exp": int(time.time()) + 600,
        "app_metadata": {"job_scopes": ["enqueue", "read"]},
        **claims,
    }
    return jwt.encode(body, JWT_SECRET, algorithm="HS256")


# -- the served apps' flows ------------------------------------------------------------------


async def test_a_manual_run_answers_the_job_contract_and_records_who_asked(
    db: store.Store, make_settings: Any
) -> None:
    async with api(db, make_settings, daemon=True) as client:
        response = await client.post(
            "/api/v1/tasks/sync_wearables/run?wait=10",
            headers=bearer(ADMIN),
            json={"user_id": USER},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in ("ok", "ran", "rows_affected", "status", "error")} == {
        "ok": True,
        "ran": "sync_wearables",
        "rows_affected": 0,
        "status": "succeeded",
        "error": None,
    }
    assert body["notes"] == ["sync_wearables RPC not configured yet; recorded placeholder run."]
    assert body["started_at"] <= body["finished_at"]
    # The health app's own audit queries.
    [run] = await db.pool.fetch(
        "select * from job_runs where run_type = 'manual' order by started_at desc"
    )
    assert (str(run["user_id"]), run["job_key"], run["job_id"]) == (
        USER,
        "sync_wearables",
        body["job_id"],
    )
    latest = await db.pool.fetch(
        "select job_key, status, reason, started_at, finished_at, rows_affected"
        " from job_runs order by started_at desc limit 20"
    )
    assert [(r["job_key"], r["status"]) for r in latest] == [("sync_wearables", "succeeded")]
    assert await audit(db) == [
        {"actor": "ci", "action": "job_enqueue", "target": f"job:{body['job_id']}"}
    ]


async def test_a_failed_manual_run_is_ok_false_with_its_error_not_a_500(
    db: store.Store, make_settings: Any
) -> None:
    async with api(db, make_settings, daemon=True) as client:
        response = await client.post("/api/v1/tasks/permanent/run?wait=10", headers=bearer(ADMIN))
    assert response.status_code == 200
    body = response.json()
    assert (body["ok"], body["status"]) == (False, "failed")
    assert "customer 42 does not exist" in body["error"]


async def test_the_challenges_admin_trigger_from_a_ci_cron(
    db: store.Store, make_settings: Any
) -> None:
    # curl -X POST .../tasks/ok/run -H "Authorization: Bearer $ADMIN_TOKEN": no body at all
    async with api(db, make_settings) as client:
        response = await client.post("/api/v1/tasks/ok/run", headers=bearer(ADMIN))
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        assert response.headers["location"] == f"/api/v1/jobs/{job_id}"
        shown = await client.get(response.headers["location"], headers=bearer(READER))
    assert shown.json()["job"]["run_type"] == "manual"
    assert shown.json()["job"]["status"] == "pending"


async def test_a_drain_processes_n_due_jobs_and_reports_them(
    db: store.Store, make_settings: Any
) -> None:
    ids = [await factories.make_job(db, task_type="ok") for _ in range(5)]
    await factories.make_job(db, task_type="ok", run_at=datetime.now(UTC) + timedelta(hours=1))
    async with api(db, make_settings) as client:
        first = await client.post("/api/v1/drain", headers=bearer(ADMIN), json={"max_jobs": 3})
        second = await client.post("/api/v1/drain", headers=bearer(ADMIN), json={"max_jobs": 3})
        idle = await client.post("/api/v1/drain", headers=bearer(ADMIN), json={"max_jobs": 3})
    assert first.status_code == 200, first.text
    counts = [(r.json()["processed"], r.json()["succeeded"]) for r in (first, second, idle)]
    assert counts == [(3, 3), (2, 2), (0, 0)]
    assert {r["job_id"] for r in first.json()["results"] + second.json()["results"]} == set(ids)
    assert [e["action"] for e in await audit(db)] == ["jobs_drain"] * 3


# -- credentials ---------------------------------------------------------------------------------


async def test_nothing_but_health_answers_without_credentials(
    db: store.Store, make_settings: Any
) -> None:
    calls = [
        ("GET", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/1"),
        ("POST", "/api/v1/jobs/1/retry"),
        ("POST", "/api/v1/tasks/ok/run"),
        ("POST", "/api/v1/drain"),
        ("GET", "/api/v1/schedules"),
        ("DELETE", "/api/v1/schedules/x"),
        ("GET", "/api/v1/queues"),
        ("POST", "/api/v1/queues/q/pause"),
        ("GET", "/api/v1/runs"),
        ("GET", "/metrics"),
    ]
    async with api(db, make_settings, tries=1000) as client:
        for method, path in calls:
            for headers in ({}, bearer("wrong-token"), {"Authorization": f"Basic {ADMIN}"}):
                response = await client.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert ADMIN not in response.text
        assert (await client.get("/health")).status_code in (200, 503)
        assert (await client.get("/api/v1/openapi.json")).status_code == 200


async def test_scopes_read_enqueue_admin(db: store.Store, make_settings: Any) -> None:
    job = {"task_type": "ok"}
    async with api(db, make_settings) as client:
        assert (await client.get("/api/v1/jobs", headers=bearer(READER))).status_code == 200
        refused = await client.post("/api/v1/jobs", headers=bearer(READER), json=job)
        assert refused.status_code == 403 and "'enqueue' scope" in refused.json()["detail"]
        assert (
            await client.post("/api/v1/jobs", headers=bearer(ENQUEUER), json=job)
        ).status_code == 201
        assert (await client.get("/api/v1/jobs", headers=bearer(ENQUEUER))).status_code == 403
        assert (
            await client.post("/api/v1/drain", headers=bearer(ENQUEUER), json={})
        ).status_code == 403
        assert (
            await client.post("/api/v1/jobs", headers=bearer(ADMIN), json=job)
        ).status_code == 201
        assert (await client.get("/api/v1/runs", headers=bearer(ADMIN))).status_code == 200
    assert [(e["actor"], e["action"]) for e in await audit(db)] == [
        ("app", "job_enqueue"),
        ("ci", "job_enqueue"),
    ]


async def test_supabase_access_tokens(db: store.Store, make_settings: Any) -> None:
    job = {"task_type": "ok"}
    user = str(uuid.uuid4())
    async with api(db, make_settings) as client:
        good = await client.post("/api/v1/jobs", headers=bearer(access_token(user)), json=job)
        assert good.status_code == 201, good.text
        expired = access_token(user, exp=int(time.time()) - 5)
        tampered = access_token(user)[:-3] + (
            "AAA" if not access_token(user).endswith("AAA") else "BBB"
        )
        other_key = jwt.encode(
            {"sub": user, "aud": "authenticated", "exp": int(time.time()) + 60},
            "another-secret-that-is-also-long-enough-here",
            algorithm="HS256",
        )
        wrong_audience = access_token(user, aud="somebody-else")
        no_expiry = jwt.encode({"sub": user, "aud": "authenticated"}, JWT_SECRET, "HS256")
        unsigned = jwt.encode({"sub": user, "aud": "authenticated", "exp": 2e9}, None, "none")
        for token in (expired, tampered, other_key, wrong_audience, no_expiry, unsigned):
            response = await client.post("/api/v1/jobs", headers=bearer(token), json=job)
            assert response.status_code == 401, token
        no_scope = access_token(user, app_metadata={})
        assert (
            await client.post("/api/v1/jobs", headers=bearer(no_scope), json=job)
        ).status_code == 403
        service_key = jwt.encode(
            {"role": "service_role", "iss": "supabase", "exp": int(time.time()) + 60},
            JWT_SECRET,
            algorithm="HS256",
        )
        assert (
            await client.post("/api/v1/drain", headers=bearer(service_key), json={})
        ).status_code == 200
    job_row = await factories.job(db, good.json()["job_id"])
    assert str(job_row["requested_by"]) == user
    assert [e["actor"] for e in await audit(db)] == [f"jwt:{user}", "jwt:service_role"]


async def test_failed_authentication_is_limited_per_client(
    db: store.Store, make_settings: Any
) -> None:
    async with api(db, make_settings) as client:
        for _ in range(10):
            assert (await client.get("/api/v1/jobs", headers=bearer("guess"))).status_code == 401
        limited = await client.get("/api/v1/jobs", headers=bearer(READER))
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60


# -- validation ----------------------------------------------------------------------------------


async def test_refusals_are_problems_naming_the_field(db: store.Store, make_settings: Any) -> None:
    async with api(db, make_settings, api_max_body_bytes=4096) as client:
        h = bearer(ADMIN)

        async def post(body: Any) -> dict[str, Any]:
            response = await client.post("/api/v1/jobs", headers=h, json=body)
            if response.status_code >= 400:
                ctype = response.headers["content-type"]
                assert ctype == "application/problem+json", (body, response.text)
            return {"status": response.status_code, **response.json()}

        missing = await post({})
        assert (missing["status"], missing["errors"][0]["pointer"]) == (422, "#/task_type")
        bad_queue = await post({"task_type": "ok", "queue": "no spaces allowed"})
        assert bad_queue["errors"][0]["pointer"] == "#/queue"
        assert "no spaces allowed" not in json.dumps(bad_queue)  # the value is not echoed
        unknown = await post({"task_type": "ok", "colour": "red"})
        assert unknown["errors"][0]["pointer"] == "#/colour"
        payload = await post({"task_type": "sleep", "payload": {"seconds": "long"}})
        assert payload["errors"] == [
            {
                "pointer": "#/payload/seconds",
                "detail": "Input should be a valid number, unable to parse string as a number",
            }
        ]
        nul = await post({"task_type": "ok", "dedupe_key": "a\u0000b"})
        assert nul["errors"][0]["pointer"] == "#/dedupe_key" and "NUL" in nul["errors"][0]["detail"]
        not_served = await post({"task_type": "elsewhere"})
        assert (not_served["status"], not_served["errors"][0]["pointer"]) == (422, "#/task_type")
        forced = {"task_type": "elsewhere", "force": True}
        assert (await client.post("/api/v1/jobs", headers=h, json=forced)).status_code == 201
        malformed = await client.post(
            "/api/v1/jobs", headers={**h, "content-type": "application/json"}, content=b"{nope"
        )
        assert malformed.status_code == 400
        deep = await client.post(
            "/api/v1/jobs",
            headers={**h, "content-type": "application/json"},
            content=b'{"task_type": "ok", "payload": {"a": ' + b"[" * 2000 + b"]" * 2000 + b"}}",
        )
        assert deep.status_code in (400, 422), deep.text
        big = await client.post(
            "/api/v1/jobs", headers=h, json={"task_type": "ok", "payload": {"x": "y" * 5000}}
        )
        assert big.status_code == 413
        bad_id = await client.get("/api/v1/jobs/99999999999999999999", headers=h)
        assert bad_id.status_code == 422 and bad_id.json()["errors"][0]["parameter"] == "job_id"
    assert await db.pool.fetchval("SELECT count(*) FROM job_queue") == 1  # the forced one


async def test_a_taken_dedupe_key_answers_200_with_the_live_job(
    db: store.Store, make_settings: Any
) -> None:
    body = {"task_type": "ok", "dedupe_key": "nightly"}
    async with api(db, make_settings) as client:
        first = await client.post("/api/v1/jobs", headers=bearer(ADMIN), json=body)
        second = await client.post("/api/v1/jobs", headers=bearer(ADMIN), json=body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json() == {
        "job_id": first.json()["job_id"],
        "status": "pending",
        "duplicate": True,
    }
    assert len(await audit(db)) == 1


# -- jobs, runs, schedules, queues ----------------------------------------------------------------


async def test_list_inspect_retry_cancel_run_now(db: store.Store, make_settings: Any) -> None:
    failed = await factories.make_job(db, task_type="ok", status="failed", last_error="boom here")
    pending = await factories.make_job(
        db, task_type="ok", run_at=datetime.now(UTC) + timedelta(days=1)
    )
    others = [await factories.make_job(db, task_type="sleep", queue="mail") for _ in range(3)]
    async with api(db, make_settings) as client:
        r, a = bearer(READER), bearer(ADMIN)
        listed = (await client.get("/api/v1/jobs?limit=2", headers=r)).json()
        assert [j["id"] for j in listed["jobs"]] == [others[2], others[1]]
        older = (
            await client.get(f"/api/v1/jobs?limit=2&before={listed['next_cursor']}", headers=r)
        ).json()
        assert [j["id"] for j in older["jobs"]] == [others[0], pending]
        by_error = (await client.get("/api/v1/jobs?q=BOOM", headers=r)).json()["jobs"]
        assert [j["id"] for j in by_error] == [failed]
        by_queue = (await client.get("/api/v1/jobs?queue=mail&task_type=sleep", headers=r)).json()
        assert len(by_queue["jobs"]) == 3 and by_queue["next_cursor"] is None
        assert (await client.get("/api/v1/jobs/424242", headers=r)).status_code == 404
        assert (await client.post(f"/api/v1/jobs/{pending}/retry", headers=a)).status_code == 409
        retried = await client.post(f"/api/v1/jobs/{failed}/retry", headers=a)
        assert retried.json() == {"job_id": failed, "action": "retry", "status": "pending"}
        now = await client.post(f"/api/v1/jobs/{pending}/run-now", headers=a)
        assert now.status_code == 200
        cancelled = await client.post(f"/api/v1/jobs/{others[0]}/cancel", headers=a)
        assert cancelled.json()["status"] == "cancelled"
        again = await client.post(f"/api/v1/jobs/{others[0]}/cancel", headers=a)
        assert again.status_code == 409 and "is cancelled" in again.json()["detail"]
        assert (await client.post(f"/api/v1/jobs/{others[1]}/retry", headers=r)).status_code == 403
    assert [(e["action"], e["target"]) for e in await audit(db)] == [
        ("job_retry", f"job:{failed}"),
        ("job_run_now", f"job:{pending}"),
        ("job_cancel", f"job:{others[0]}"),
    ]


async def test_runs_are_filtered_by_type_task_status_and_user(
    db: store.Store, make_settings: Any
) -> None:
    async with api(db, make_settings, daemon=True) as client:
        run = await client.post(
            "/api/v1/tasks/ok/run?wait=10", headers=bearer(ADMIN), json={"user_id": USER}
        )
        assert run.status_code == 200
        await factories.make_job(db, task_type="boom")
        await asyncio.sleep(0.5)
        r = bearer(READER)
        manual = (await client.get("/api/v1/runs?run_type=manual", headers=r)).json()["runs"]
        mine = (await client.get(f"/api/v1/runs?user_id={USER}", headers=r)).json()["runs"]
        boom = (await client.get("/api/v1/runs?job_key=boom&status=retry", headers=r)).json()
    assert [(x["job_key"], x["actor"]) for x in manual] == [("ok", "ci")]
    assert [x["job_id"] for x in mine] == [run.json()["job_id"]]
    assert {(x["job_key"], x["status"]) for x in boom["runs"]} == {("boom", "retry")}


async def test_schedules_crud_and_runs(db: store.Store, make_settings: Any) -> None:
    new = {"name": "nightly", "cron": "0 6 * * *", "task_type": "ok", "timezone": "Europe/London"}
    async with api(db, make_settings) as client:
        a, r = bearer(ADMIN), bearer(READER)
        created = await client.post("/api/v1/schedules", headers=a, json=new)
        assert created.status_code == 201, created.text
        assert created.headers["location"] == "/api/v1/schedules/nightly"
        assert (await client.post("/api/v1/schedules", headers=a, json=new)).status_code == 409
        bad = await client.post(
            "/api/v1/schedules", headers=a, json={**new, "name": "x", "cron": "61 * * * *"}
        )
        assert bad.status_code == 422 and "minute value 61" in bad.json()["detail"]
        listed = (await client.get("/api/v1/schedules", headers=r)).json()
        assert [(s["name"], s["served_here"]) for s in listed] == [("nightly", True)]
        patched = await client.patch(
            "/api/v1/schedules/nightly",
            headers=a,
            json={"cron": "30 6 * * *", "active": False, "missed": "skip"},
        )
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert (body["cron"], body["active"], body["missed"], body["paused_by"]) == (
            "30 6 * * *",
            False,
            "skip",
            "admin",
        )
        assert (
            await client.patch("/api/v1/schedules/nope", headers=a, json={"cron": "@daily"})
        ).status_code == 404
        assert (await client.get("/api/v1/schedules/nightly/runs", headers=r)).json() == []
        assert (await client.get("/api/v1/schedules/nope/runs", headers=r)).status_code == 404
        assert (await client.delete("/api/v1/schedules/nightly", headers=a)).status_code == 204
        assert (await client.delete("/api/v1/schedules/nightly", headers=a)).status_code == 404
        assert (await client.get("/api/v1/schedules/nightly", headers=r)).status_code == 404
    assert [e["action"] for e in await audit(db)] == [
        "schedule_create",
        "schedule_update",
        "schedule_pause",
        "schedule_delete",
    ]


async def test_queues_list_pause_and_resume(db: store.Store, make_settings: Any) -> None:
    await factories.make_job(db, task_type="ok", queue="mail")
    async with api(db, make_settings) as client:
        a = bearer(ADMIN)
        paused = await client.post(
            "/api/v1/queues/mail/pause", headers=a, json={"reason": "outage"}
        )
        assert paused.json() == {"queue": "mail", "paused": True, "changed": True}
        again = await client.post("/api/v1/queues/mail/pause", headers=a)
        assert again.json()["changed"] is False
        [mail] = (await client.get("/api/v1/queues", headers=bearer(READER))).json()
        assert (mail["queue"], mail["pending"], mail["paused"], mail["reason"]) == (
            "mail",
            1,
            True,
            "outage",
        )
        resumed = await client.post("/api/v1/queues/mail/resume", headers=a)
        assert resumed.json()["changed"] is True
        bad = await client.post("/api/v1/queues/bad%20name/pause", headers=a)
        assert bad.status_code == 422
    assert [(e["action"], e["target"]) for e in await audit(db)] == [
        ("queue_pause", "queue:mail"),
        ("queue_resume", "queue:mail"),
    ]


async def test_the_openapi_document_lists_every_operation(
    db: store.Store, make_settings: Any
) -> None:
    async with api(db, make_settings) as client:
        document = (await client.get("/api/v1/openapi.json")).json()
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert operations == {
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/{job_id}"),
        ("POST", "/api/v1/jobs/{job_id}/retry"),
        ("POST", "/api/v1/jobs/{job_id}/cancel"),
        ("POST", "/api/v1/jobs/{job_id}/run-now"),
        ("POST", "/api/v1/tasks/{task_type}/run"),
        ("POST", "/api/v1/drain"),
        ("GET", "/api/v1/runs"),
        ("GET", "/api/v1/schedules"),
        ("POST", "/api/v1/schedules"),
        ("GET", "/api/v1/schedules/{name}"),
        ("PATCH", "/api/v1/schedules/{name}"),
        ("DELETE", "/api/v1/schedules/{name}"),
        ("GET", "/api/v1/schedules/{name}/runs"),
        ("GET", "/api/v1/queues"),
        ("POST", "/api/v1/queues/{queue}/pause"),
        ("POST", "/api/v1/queues/{queue}/resume"),
    }
    assert "HTTPBearer" in document["components"]["securitySchemes"]


async def test_an_enqueue_keeps_the_requests_trace_context(
    db: store.Store, make_settings: Any
) -> None:
    """A request's traceparent is stored with the job it enqueues (for the attempt's span
    to continue that trace); a request without one stores none."""
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with api(db, make_settings) as client:
        traced = await client.post(
            "/api/v1/jobs",
            headers={**bearer(ENQUEUER), "traceparent": parent, "tracestate": "app=1"},
            json={"task_type": "ok"},
        )
        plain = await client.post(
            "/api/v1/jobs", headers=bearer(ENQUEUER), json={"task_type": "ok"}
        )
        run = await client.post(
            "/api/v1/tasks/ok/run", headers={**bearer(ENQUEUER), "traceparent": parent}
        )
    stored = {
        row["id"]: row["trace_context"]
        for row in await db.pool.fetch("SELECT id, trace_context FROM job_queue")
    }
    assert stored[traced.json()["job_id"]] == {"traceparent": parent, "tracestate": "app=1"}
    assert stored[plain.json()["job_id"]] is None
    assert stored[run.json()["job_id"]] == {"traceparent": parent}
