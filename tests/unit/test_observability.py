"""Telemetry, exposition and Sentry scrubbing, without a database."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import pytest
import sentry_sdk
import structlog

from tests.support.clock import FakeClock
from tests.support.telemetry import (
    outcome,
    parse_metrics,
    sentry_capture,
)
from worker import config, observability
from worker.observability import Telemetry
from worker.web import metrics

DB_PASSWORD = "S3cr3t/pw"  # percent-encoded in the URL below
DATABASE_URL = "postgresql://app:S3cr3t%2Fpw@db.internal.example:5432/app"
SENTRY_KEY = "0123456789abcdef0123456789abcdef"
SENTRY_DSN = f"https://{SENTRY_KEY}@o1.ingest.sentry.example/42"


def settings(**overrides: Any) -> config.Settings:
    values: dict[str, Any] = {
        "database_url": DATABASE_URL,
        "sentry_dsn": SENTRY_DSN,
        "handler_modules": [],
        "worker_id": "unit:1",
        "poll_interval_s": 2.0,
    }
    return config.load(**{**values, **overrides})


# -- metrics -----------------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    histogram = observability.Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    # 0.1 itself belongs to le="0.1"
    assert histogram.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)]
    assert (histogram.sum, histogram.count) == (3.65, 4)
    text = metrics.render(None, [], settings()).decode()
    assert text.startswith("# HELP worker_info")


def test_label_values_are_escaped() -> None:
    text = metrics.render(None, None, settings(worker_id='a"b\\c')).decode()
    assert 'worker_info{version="0.1.0",worker_id="a\\"b\\\\c"} 1.0' in text
    assert parse_metrics(text)["worker_info"] == {
        (("version", "0.1.0"), ("worker_id", 'a"b\\c')): 1
    }


def test_telemetry_counts_outcomes_and_renders_valid_exposition() -> None:
    clock = FakeClock()
    telemetry = Telemetry(settings(), clock=clock)
    telemetry.claimed(3, 0.002)
    telemetry.claimed(0, 0.001)
    telemetry.finished(outcome("succeeded", duration_ms=40), True)
    telemetry.finished(outcome("retry", task_type="boom", error="E: x", reason="error"), True)
    telemetry.finished(outcome("succeeded"), False)  # its lease had been lost
    telemetry.loop_alive("claimer")
    clock.advance(1.5)
    samples = parse_metrics(metrics.render(telemetry, [], telemetry.settings).decode())
    jobs = samples["worker_jobs_total"]
    assert jobs[(("outcome", "succeeded"), ("queue", "default"), ("task_type", "ok"))] == 1
    assert jobs[(("outcome", "retry"), ("queue", "default"), ("task_type", "boom"))] == 1
    assert samples["worker_jobs_lease_lost_total"] == {
        (("queue", "default"), ("task_type", "ok")): 1
    }
    assert samples["worker_job_duration_seconds_count"][(("task_type", "ok"),)] == 2
    assert samples["worker_claim_duration_seconds_count"][()] == 2
    assert samples["worker_claimed_jobs_total"][()] == 3
    assert samples["worker_jobs_in_flight"][()] == 0
    assert samples["worker_loop_seconds_since_alive"][(("loop", "claimer"),)] == 1.5


# -- liveness ----------------------------------------------------------------------------------


def test_a_loop_is_stale_after_its_window() -> None:
    clock = FakeClock()
    telemetry = Telemetry(settings(poll_interval_s=2.0), clock=clock)
    assert telemetry.liveness_problems() == ["no loop has reported progress yet"]
    telemetry.loop_alive("claimer")
    telemetry.loop_alive("some_new_loop")
    clock.advance(30.0)  # the window: max(3 × 2 s, 30 s)
    assert telemetry.liveness_problems() == []
    clock.advance(0.5)
    assert telemetry.liveness_problems() == [
        "loop 'claimer' last reported 30.5s ago (limit 30s)",
        "loop 'some_new_loop' last reported 30.5s ago (limit 30s)",
    ]
    telemetry.loop_alive("claimer")
    assert len(telemetry.liveness_problems()) == 1


def test_slow_loops_get_three_of_their_intervals_and_the_floor_is_configurable() -> None:
    clock = FakeClock()
    telemetry = Telemetry(settings(prune_interval_s=600.0, health_stale_s=5.0), clock=clock)
    telemetry.loop_alive("pruner")  # reports every 10 minutes
    telemetry.loop_alive("claimer")
    clock.advance(6.5)  # the claimer polls every 2 s: 3 × 2 s beats the 5 s floor
    assert telemetry.liveness_problems() == ["loop 'claimer' last reported 6.5s ago (limit 6s)"]
    clock.advance(1793.5)
    assert "loop 'pruner'" not in " ".join(telemetry.liveness_problems())
    clock.advance(1.0)
    assert "loop 'pruner' last reported 1801.0s ago (limit 1800s)" in telemetry.liveness_problems()


# -- Sentry ------------------------------------------------------------------------------------


def test_failed_jobs_are_errors_and_repeated_retries_warnings_with_tags() -> None:
    telemetry = Telemetry(settings(sentry_repeat_failures=3))
    with sentry_capture(telemetry.settings) as sentry:
        telemetry.finished(outcome("succeeded"), True)
        telemetry.finished(outcome("retry", attempt=2, error="E: a", reason="error"), True)
        telemetry.finished(outcome("retry", attempt=3, error="E: b", reason="error"), True)
        telemetry.finished(
            outcome("failed", attempt=5, error="E: c", reason="max_attempts", job_id=77), True
        )
        telemetry.finished(outcome("failed", attempt=1, error="gone"), False)  # lease lost
    warning, error = sentry.events()
    assert (warning["level"], error["level"]) == ("warning", "error")
    assert warning["tags"] == {
        "task_type": "ok",
        "queue": "default",
        "attempt": "3",
        "outcome": "retry",
        "reason": "error",
    }
    assert error["tags"]["attempt"] == "5"
    assert error["contexts"]["job"]["job_id"] == 77
    assert error["message"] == "job failed for good: ok: E: c"
    assert error["fingerprint"] == ["worker-job", "ok", "failed", "max_attempts"]


def _raise_with_secrets_in_locals() -> None:
    database_url = DATABASE_URL  # captured as a frame variable
    connect_string = f"host=db user=app password={DB_PASSWORD} sslmode=require"
    raise ConnectionError(f"cannot reach {database_url} ({connect_string}) as {DB_PASSWORD}")


def test_no_secret_leaves_in_any_event() -> None:
    s = settings()
    telemetry = Telemetry(s)
    token = "ghp_abcdefghijklmnop123456"
    with sentry_capture(s) as sentry:
        error = f"HTTPError: GET https://api.example.com/v1/sync?api_key={token}&page=2 -> 401"
        telemetry.finished(outcome("failed", error=f"{error}; {DATABASE_URL}"), True)
        with contextlib.suppress(ConnectionError):
            try:
                _raise_with_secrets_in_locals()
            except ConnectionError:
                sentry_sdk.capture_exception()
                raise
        sentry_sdk.add_breadcrumb(message=f"connecting with {DB_PASSWORD}")
        sentry_sdk.capture_event(
            {
                "message": f"dsn={SENTRY_DSN} Authorization: Bearer {token}",
                "request": {
                    "url": f"https://hooks.example.com/x?token={token}",
                    "headers": {"Authorization": f"Bearer {token}", "X-Trace": "plain"},
                    "cookies": {"session": token},
                },
                "extra": {"settings": repr(s), "password": "hunter22", "sentry": SENTRY_DSN},
            }
        )
    assert len(sentry.events()) == 3
    sent = sentry.payload_text()
    for secret in (DB_PASSWORD, "S3cr3t%2Fpw", SENTRY_KEY, token, "hunter22", "S3cr3t"):
        assert secret not in sent, secret
    # What is not secret survives, so the event is still useful.
    assert "cannot reach [Filtered]" in sent  # the whole DATABASE_URL is a secret value
    assert "api.example.com/v1/sync?api_key=[Filtered]&page=2" in sent
    assert "_raise_with_secrets_in_locals" in sent


def test_scrubber_patterns() -> None:
    scrub = observability.Scrubber([]).scrub_text
    assert scrub("redis://:pw@cache:6379/0") == "redis://:[Filtered]@cache:6379/0"
    assert (
        scrub("https://u:p4ss@host/x?sig=abc&n=1")
        == "https://u:[Filtered]@host/x?sig=[Filtered]&n=1"
    )
    assert scrub('{"password": "x y"}') == '{"password": [Filtered]}'
    assert scrub("Authorization: Basic dXNlcjpwYXNz") == "Authorization: Basic [Filtered]"
    assert scrub("postgresql://app@db/app and 3 jobs") == "postgresql://app@db/app and 3 jobs"


def test_sentry_is_off_without_a_dsn() -> None:
    assert observability.init_sentry(settings(sentry_dsn=None)) is False


def test_a_job_the_rescuer_fails_for_good_is_counted_and_reported() -> None:
    telemetry = Telemetry(settings())
    row = {
        "job_id": 9,
        "status": "failed",
        "task_type": "ok",
        "queue": "default",
        "attempt": 3,
        "error": "lease expired: worker w1 stopped before finishing attempt 3",
    }
    with sentry_capture(telemetry.settings) as sentry:
        telemetry.rescued({**row, "job_id": 8, "status": "rescued", "attempt": 1})
        telemetry.rescued(row)
    [event] = sentry.events()
    assert (event["level"], event["tags"]["reason"], event["tags"]["attempt"]) == (
        "error",
        "lease_expired",
        "3",
    )
    found = parse_metrics(metrics.render(telemetry, [], telemetry.settings).decode())[
        "worker_jobs_total"
    ]
    counts = {dict(labels)["outcome"]: value for labels, value in found.items()}
    assert counts == {"rescued": 1, "failed": 1}


def test_library_warnings_become_one_scrubbed_json_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """asyncpg's pool logs a traceback through the standard library after a database
    restart: it must arrive as one JSON line, its secrets removed, not as raw text."""
    s = settings()
    observability.configure_logging("json", "info", observability.Scrubber.from_settings(s))
    try:
        try:
            raise ConnectionError(f"cannot connect to {DATABASE_URL}")
        except ConnectionError:
            logging.getLogger("asyncpg.pool").warning("pool floor not restored", exc_info=True)
        logging.getLogger("asyncpg.pool").info("below the threshold")
        lines = capsys.readouterr().err.splitlines()
    finally:
        structlog.reset_defaults()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "pool floor not restored"
    assert record["logger"] == "asyncpg.pool" and record["level"] == "warning"
    assert "ConnectionError" in record["exception"]
    assert DB_PASSWORD not in lines[0]


def test_log_lines_are_scrubbed_like_sentry_events(capsys: pytest.CaptureFixture[str]) -> None:
    s = settings()
    observability.configure_logging("json", "info", observability.Scrubber.from_settings(s))
    try:
        logger = structlog.get_logger("test.scrub")
        logger.error(
            "job_failed",
            job_id=1,
            error=f"cannot reach {DATABASE_URL} as {DB_PASSWORD}",
            detail={"database_url": "x", "note": f"key {SENTRY_KEY}"},
        )
        line = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
    assert DB_PASSWORD not in line and "S3cr3t%2Fpw" not in line and SENTRY_KEY not in line
    record = json.loads(line)
    assert record["job_id"] == 1 and record["detail"]["database_url"] == "[Filtered]"
