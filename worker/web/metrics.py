"""GET /metrics: the daemon's in-memory counters (observability.Telemetry) and the queue's
depth and lag from one scrape-time query, in Prometheus text format by prometheus-client.

The counters stay plain arithmetic on the dispatcher's path; a collector turns them into
metric families only when scraped. Queue depth and lag describe the shared table, not this
worker: every replica reports the same values (aggregate with max, not sum).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Sequence

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from worker import __version__, faults, observability, store
from worker.config import Settings

log = structlog.get_logger("worker.web.metrics")

# Scrapes of this process, one fault episode at a time (worker/faults.py).
_FAULT = faults.Episode("metrics", log, stops=False)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    *store.CONNECTION_ERRORS,
    asyncpg.PostgresError,
)


async def exposition(
    db: store.Store,
    telemetry: observability.Telemetry | None,
    settings: Settings,
    *,
    timeout_s: float = 5.0,
) -> bytes:
    """One scrape: the queue query first (async), then every family rendered at once."""
    rows: list[store.Record] | None
    try:
        async with asyncio.timeout(timeout_s):
            rows = await db.queue_metrics()
    except _DATABASE_ERRORS as exc:  # a scrape never stops the worker: logged once a fault
        await _FAULT.failed(exc)
        rows = None
    else:
        _FAULT.ok()
    return render(telemetry, rows, settings)


def render(
    telemetry: observability.Telemetry | None,
    rows: Sequence[store.Record] | None,
    settings: Settings,
) -> bytes:
    """The text format of the telemetry and the queue rows (None: the query failed)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(telemetry, rows, settings))
    return generate_latest(registry)


def _buckets(histogram: observability.Histogram) -> list[tuple[str, float]]:
    return [
        ("+Inf" if bound == math.inf else repr(float(bound)), count)
        for bound, count in histogram.cumulative()
    ]


class _Collector(Collector):
    def __init__(
        self,
        telemetry: observability.Telemetry | None,
        rows: Sequence[store.Record] | None,
        settings: Settings,
    ) -> None:
        self.telemetry = telemetry
        self.rows = rows
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "worker_info",
            "This worker process (value is always 1).",
            labels=["version", "worker_id"],
        )
        info.add_metric([__version__, self.settings.worker_id], 1)
        yield info
        if self.telemetry is not None:
            yield from _telemetry_families(self.telemetry)
        yield from _queue_families(self.rows, self.settings.queues)


def _telemetry_families(t: observability.Telemetry) -> Iterator[Metric]:
    jobs = CounterMetricFamily(
        "worker_jobs",
        "Attempts written, by task type, queue and outcome.",
        labels=["task_type", "queue", "outcome"],
    )
    for key, count in sorted(t.jobs.items()):
        jobs.add_metric(list(key), count)
    yield jobs
    lost = CounterMetricFamily(
        "worker_jobs_lease_lost",
        "Attempts whose outcome was not written: the lease had expired and been rescued.",
        labels=["task_type", "queue"],
    )
    for (task_type, queue), lost_count in sorted(t.lease_lost.items()):
        lost.add_metric([task_type, queue], lost_count)
    yield lost
    durations = HistogramMetricFamily(
        "worker_job_duration_seconds", "Handler run time per attempt.", labels=["task_type"]
    )
    for task_type, histogram in sorted(t.durations.items()):
        durations.add_metric([task_type], _buckets(histogram), sum_value=histogram.sum)
    yield durations
    claims = HistogramMetricFamily(
        "worker_claim_duration_seconds", "Latency of one claim statement."
    )
    claims.add_metric([], _buckets(t.claims), sum_value=t.claims.sum)
    yield claims
    yield CounterMetricFamily(
        "worker_claimed_jobs", "Jobs claimed by this worker.", value=t.claimed_jobs
    )
    yield GaugeMetricFamily(
        "worker_jobs_in_flight", "Jobs claimed and not yet finished.", value=t.in_flight
    )
    ages = GaugeMetricFamily(
        "worker_loop_seconds_since_alive",
        "Seconds since each long-running loop last made progress.",
        labels=["loop"],
    )
    for loop, age_s in t.loop_ages().items():
        ages.add_metric([loop], round(age_s, 3))
    yield ages


def _queue_families(rows: Sequence[store.Record] | None, queues: Sequence[str]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "worker_database_up",
        "1 if the scrape-time queue query succeeded.",
        value=0 if rows is None else 1,
    )
    if rows is None:
        return
    # Configured queues report zeros, so an idle queue is a flat line, not a gap.
    depth = {(queue, status): 0 for queue in queues for status in ("pending", "running")}
    age = dict.fromkeys(queues, 0.0)
    for row in rows:
        depth[(row["queue"], row["status"])] = row["jobs"]
        if row["status"] == "pending":
            age[row["queue"]] = row["oldest_due_age_s"]
    jobs = GaugeMetricFamily(
        "worker_queue_jobs",
        "Live jobs in the table, by queue and status.",
        labels=["queue", "status"],
    )
    for (queue, status), count in sorted(depth.items()):
        jobs.add_metric([queue, status], count)
    yield jobs
    lag = GaugeMetricFamily(
        "worker_queue_oldest_pending_age_seconds",
        "Age of the oldest due pending job by queue (0 when none is due): the queue's lag.",
        labels=["queue"],
    )
    for queue, age_s in sorted(age.items()):
        lag.add_metric([queue], round(age_s, 3))
    yield lag
