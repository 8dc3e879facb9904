"""OpenTelemetry: each attempt is a span in the trace of the code that enqueued the job."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from tests.integration.test_engine import drain
from tests.support import factories
from tests.support.telemetry import span_exporter
from worker import store, tracing


async def test_an_attempt_continues_the_trace_that_enqueued_its_job(
    db: store.Store, make_settings: Any
) -> None:
    exporter = span_exporter()
    with trace.get_tracer("app").start_as_current_span("POST /signup") as request:
        carrier = tracing.carrier()
        job_id = await factories.make_job(db, task_type="ok", trace_context=carrier)
    failing = await factories.make_job(db, task_type="boom", max_attempts=1)
    await drain(db, make_settings(tracing="on"))

    spans = {span.name: span for span in exporter.get_finished_spans()}
    attempt = spans["job ok"]
    assert attempt.context.trace_id == request.get_span_context().trace_id
    assert attempt.parent is not None
    assert attempt.parent.span_id == request.get_span_context().span_id
    assert attempt.kind == trace.SpanKind.CONSUMER
    assert dict(attempt.attributes or {}) == {
        "job.task_type": "ok",
        "job.id": job_id,
        "job.attempt": 1,
        "job.queue": "default",
        "job.outcome": "succeeded",
        "job.reason": "ok",
    }
    # A job enqueued outside any trace starts its own; a failure marks the span.
    failed = spans["job boom"]
    assert failed.parent is None
    assert failed.attributes is not None and failed.attributes["job.id"] == failing
    assert failed.attributes["job.outcome"] == "failed"
    assert failed.status.status_code == trace.StatusCode.ERROR


async def test_tracing_off_starts_no_span(db: store.Store, make_settings: Any) -> None:
    exporter = span_exporter()
    await factories.make_job(db, task_type="ok")
    await drain(db, make_settings(tracing="off"))
    assert exporter.get_finished_spans() == ()
    assert tracing.enabled("auto"), "a tracer provider is set: auto traces"
    assert not tracing.enabled("off")


def test_a_request_carries_its_trace_context_in_bounded_headers() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert tracing.from_headers({"traceparent": parent, "tracestate": "a=1"}) == {
        "traceparent": parent,
        "tracestate": "a=1",
    }
    assert tracing.from_headers({"traceparent": "x" * 200}) is None
    assert tracing.from_headers({}) is None
    assert tracing.from_headers({"traceparent": parent, "tracestate": "x" * 600}) == {
        "traceparent": parent
    }
