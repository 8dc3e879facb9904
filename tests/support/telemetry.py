"""Helpers for the observability tests: a fake clock, outcomes, a raw HTTP client, a Sentry
transport that keeps events in memory, and a strict Prometheus text check."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sentry_sdk
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from worker import executor, observability
from worker.config import Settings


def outcome(
    kind: executor.Kind = "succeeded",
    *,
    task_type: str = "ok",
    attempt: int = 1,
    error: str | None = None,
    reason: str = "ok",
    duration_ms: int = 12,
    job_id: int = 1,
) -> executor.Outcome:
    job = executor.Job(
        id=job_id,
        queue="default",
        task_type=task_type,
        payload={},
        attempt=attempt,
        max_attempts=5,
        run_type="queue",
        schedule_name=None,
        requested_by=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    verdict = executor.Verdict(kind, reason, error, 1.0 if kind == "retry" else 0.0)
    return executor.Outcome(job, verdict, None, job.created_at, duration_ms)


async def raw_request(port: int, data: bytes, *, half_close: bool = True) -> bytes:
    """Send bytes as they are and read the answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


class CaptureTransport(Transport):
    """Keeps envelopes in memory: the real sentry_sdk client pipeline minus the network."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def events(self) -> list[dict[str, Any]]:
        return [
            json.loads(item.payload.get_bytes())
            for envelope in self.envelopes
            for item in envelope.items
            if item.type == "event"
        ]

    def payload_text(self) -> str:
        """Every item the client would have sent, as text (headers excluded: they carry the
        DSN's public key by design)."""
        return "\n".join(
            item.payload.get_bytes().decode()
            for envelope in self.envelopes
            for item in envelope.items
        )


@contextlib.contextmanager
def sentry_capture(settings: Settings) -> Iterator[CaptureTransport]:
    """A real sentry_sdk Client, built from the worker's own options, bound to an isolated
    scope. Integrations are off: they patch libraries process-wide and would outlive the test."""
    transport = CaptureTransport()
    client = sentry_sdk.Client(
        **observability.sentry_options(settings), transport=transport, default_integrations=False
    )
    try:
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(client)
            yield transport
    finally:
        client.close()


def parse_metrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} via the reference parser, after checking what
    it lets slide: every sample's family is declared (HELP, TYPE) before its samples, and
    histogram buckets are cumulative and end in +Inf == _count."""
    declared: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
        elif line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            base = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
            assert name in declared or base in declared, f"sample before its TYPE: {line}"
    assert text.endswith("\n")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for metric_family in text_string_to_metric_families(text):
        for s in metric_family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        if metric_family.type == "histogram":
            _check_histogram(metric_family.samples)
    return samples


def _check_histogram(samples: list[Any]) -> None:
    buckets: dict[tuple[tuple[str, str], ...], list[tuple[str, float]]] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for s in samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        if s.name.endswith("_bucket"):
            buckets.setdefault(key, []).append((s.labels["le"], s.value))
        elif s.name.endswith("_count"):
            counts[key] = s.value
    for key, series in buckets.items():
        values = [value for _, value in series]
        assert values == sorted(values), f"buckets not cumulative: {key}"
        assert series[-1] == ("+Inf", counts[key]), f"last bucket is not +Inf == _count: {key}"


@functools.cache
def _exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def span_exporter() -> InMemorySpanExporter:
    """The process's OpenTelemetry tracer provider, set once (OpenTelemetry allows one per
    process) with an in-memory exporter; cleared for the caller."""
    exporter = _exporter()
    exporter.clear()
    return exporter
