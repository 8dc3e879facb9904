"""The CLI as a user runs it: a real process against a real database."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from tests.support import factories
from tests.support.proc import last_json, run_cli
from worker import store


async def test_once_drains_and_prints_summary_exit_zero(db: store.Store, db_dsn: str) -> None:
    ids = [
        await factories.make_job(db, task_type="echo", payload={"message": f"m{i}"})
        for i in range(3)
    ]
    await factories.make_job(db, task_type="flaky", payload={"fail_times": 1})
    done = run_cli("--once", dsn=db_dsn)
    assert done.returncode == 0, done.stderr
    summary = last_json(done.stdout)
    assert {k: summary[k] for k in ("processed", "succeeded", "failed", "retried")} == {
        "processed": 5,
        "succeeded": 4,
        "failed": 0,
        "retried": 1,
    }
    assert sorted(r["job_id"] for r in summary["results"] if r["task_type"] == "echo") == ids
    outcome_lines = [
        json.loads(line) for line in done.stderr.splitlines() if '"job_succeeded"' in line
    ]
    assert len(outcome_lines) == 4
    assert {"job_id", "task_type", "attempt", "duration_ms", "outcome"} <= set(outcome_lines[0])


async def test_once_exits_non_zero_when_a_job_fails_for_good(db: store.Store, db_dsn: str) -> None:
    await factories.make_job(db, task_type="echo", payload={"wrong": 1})
    done = run_cli("--once", dsn=db_dsn)
    assert done.returncode == 1
    summary = last_json(done.stdout)
    assert (summary["failed"], summary["results"][0]["reason"]) == (1, "permanent_error")
    assert "invalid payload for 'echo'" in summary["results"][0]["error"]


def test_bad_setting_stops_with_one_clear_line(db_dsn: str) -> None:
    done = run_cli("--once", dsn=db_dsn, WORKER_CONCURRENCY="zero")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: WORKER_CONCURRENCY: Input should be a valid integer, unable to parse string "
        "as an integer (got 'zero')"
    )


def test_unreachable_database_is_a_clear_error() -> None:
    done = run_cli(
        "status",
        dsn="postgresql://nobody:secret-pw@127.0.0.1:1/none",
        timeout=90,
        WORKER_CONNECT_TIMEOUT_S="1",
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: DATABASE_URL: cannot connect")
    assert "secret-pw" not in done.stderr


async def test_enqueue_is_a_manual_run_with_user(db: store.Store, db_dsn: str) -> None:
    user = str(uuid.uuid4())
    done = run_cli(
        "enqueue",
        "echo",
        "--payload",
        '{"message": "hi"}',
        "--user-id",
        user,
        "--priority",
        "-3",
        dsn=db_dsn,
    )
    assert done.returncode == 0, done.stderr
    job_id = last_json(done.stdout)["job_id"]
    row = await factories.job(db, job_id)
    assert (row["run_type"], str(row["requested_by"]), row["priority"]) == ("manual", user, -3)
    assert run_cli("--once", dsn=db_dsn).returncode == 0
    [run] = await factories.runs(db, job_id)
    assert (run["run_type"], str(run["user_id"]), run["status"]) == ("manual", user, "succeeded")


def test_enqueue_refuses_bad_input_clearly(db_dsn: str) -> None:
    cases = {
        ("enqueue", "echo", "--payload", "{nope"): "not valid JSON",
        ("enqueue", "echo", "--payload", '{"message": 5}'): "invalid payload for 'echo': message",
        ("enqueue", "nosuch"): "no handler for task type 'nosuch'",
        ("enqueue", "echo", "--user-id", "bob"): "'bob' is not a UUID",
        ("enqueue", "echo", "--run-at", "tomorrow"): "is not an ISO 8601 time",
        ("enqueue", "echo", "--queue", "bad queue"): "invalid queue name",
    }
    for args, message in cases.items():
        done = run_cli(*args, dsn=db_dsn)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)


async def test_status_reports_counts_age_and_unserved_types(db: store.Store, db_dsn: str) -> None:
    await factories.make_job(db, task_type="echo", payload={"message": "x"})
    await factories.make_job(db, task_type="billing_export", queue="default")
    done = run_cli("status", "--json", dsn=db_dsn)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"queue": "default", "task_type": "echo", "status": "pending", "jobs": 1} in report[
        "counts"
    ]
    assert report["unserved_task_types"] == [{"task_type": "billing_export", "pending": 1}]
    assert report["oldest_pending"][0]["due"] == 2
    table = run_cli("status", dsn=db_dsn).stdout
    assert "unserved: 1 pending 'billing_export'" in table


def test_help_lists_the_commands() -> None:
    done = run_cli("--help", dsn=None)
    assert done.returncode == 0
    for word in ("--once", "migrate", "enqueue", "status", "DATABASE_URL"):
        assert word in done.stdout


async def test_show_retry_and_cancel_a_job_from_the_command_line(
    db: store.Store, db_dsn: str
) -> None:
    failed = await factories.make_job(
        db, task_type="echo", status="failed", attempts=3, max_attempts=3, last_error="boom"
    )
    pending = await factories.make_job(db, task_type="echo", payload={"message": "later"})

    shown = run_cli("show", str(failed), dsn=db_dsn)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["job"]["status"] == "failed"

    retried = run_cli("retry", str(failed), "--actor", "ops.alice", dsn=db_dsn)
    assert retried.returncode == 0, retried.stderr
    again = run_cli("retry", str(pending), dsn=db_dsn)
    assert (again.returncode, again.stderr.strip()) == (
        2,
        f"error: job {pending} is pending: only a failed or cancelled job can be retried",
    )
    cancelled = run_cli("cancel", str(pending), dsn=db_dsn)
    assert cancelled.returncode == 0, cancelled.stderr
    missing = run_cli("cancel", "999999", dsn=db_dsn)
    assert (missing.returncode, missing.stderr.strip()) == (2, "error: no job 999999")

    rows = {
        r["id"]: (r["status"], r["max_attempts"])
        for r in await db.pool.fetch("SELECT id, status, max_attempts FROM job_queue")
    }
    assert rows == {failed: ("pending", 4), pending: ("cancelled", None)}
    audit = await db.pool.fetch("SELECT actor, action, target FROM job_admin_audit ORDER BY id")
    assert [tuple(r) for r in audit] == [
        ("ops.alice", "job_retry", f"job:{failed}"),
        (cancelled_actor(cancelled.stdout), "job_cancel", f"job:{pending}"),
    ]


def cancelled_actor(stdout: str) -> str:
    actor = str(json.loads(stdout)["actor"])
    assert actor.startswith("cli:")
    return actor


async def test_once_fires_a_due_schedule_tick_then_runs_its_job(
    db: store.Store, db_dsn: str
) -> None:
    """A cron-runner deployment (`--once` every few minutes) loses no recurring job: the
    pass enqueues the owed tick (missed policy `latest`: the newest one) and runs it."""
    since = datetime.now(UTC) - timedelta(minutes=7, seconds=30)
    await db.pool.execute(
        "INSERT INTO job_schedules (name, cron, timezone, task_type, payload, missed,"
        " last_tick_at) VALUES ('nightly-echo', '*/5 * * * *', 'UTC', 'echo',"
        " '{\"message\": \"tick\"}', 'latest', $1)",
        since,
    )
    done = run_cli("--once", dsn=db_dsn, WORKER_SCHEDULER="on")
    assert done.returncode == 0, done.stderr
    summary = last_json(done.stdout)
    [tick] = summary["ticks"]
    assert tick["schedule"] == "nightly-echo"
    fired_at = datetime.fromisoformat(tick["tick"])
    assert fired_at > since and fired_at.minute % 5 == 0 and fired_at <= datetime.now(UTC)
    job = await factories.job(db, tick["job_id"])
    assert (job["status"], job["run_type"], job["schedule_name"]) == (
        "succeeded",
        "cron",
        "nightly-echo",
    )
    assert summary["succeeded"] == 1
    # The next pass does not fire that tick again (nor anything, unless the clock has
    # crossed the next 5-minute boundary meanwhile).
    again = last_json(run_cli("--once", dsn=db_dsn, WORKER_SCHEDULER="on").stdout)
    now = datetime.now(UTC)
    assert tick["tick"] not in [t["tick"] for t in again["ticks"]]
    if now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0) == fired_at:
        assert (again["ticks"], again["processed"]) == ([], 0)
