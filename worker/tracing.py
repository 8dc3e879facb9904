"""OpenTelemetry tracing, when the optional extra is installed (`pip install
'pg-job-worker[otel]'`): the enqueuer's trace context travels with the job (the
`trace_context` column, an OpenTelemetry carrier), and each attempt is a span in that
trace. Without the package nothing here imports it and nothing on the per-job path
changes: `carrier()` returns None and the worker starts no spans."""

from __future__ import annotations

from typing import Any

try:  # the optional extra
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace

    AVAILABLE = True
except ImportError:  # exercised where the extra is absent
    AVAILABLE = False


def carrier() -> dict[str, str] | None:
    """The current trace context as a carrier ({"traceparent": ..., ["tracestate": ...]}),
    to store with a job being enqueued; None without OpenTelemetry or outside a span."""
    if not AVAILABLE:
        return None
    if not _trace.get_current_span().get_span_context().is_valid:
        return None
    found: dict[str, str] = {}
    _propagate.inject(found)
    return found or None


def from_headers(headers: Any) -> dict[str, str] | None:
    """The W3C trace context an HTTP request carried (traceparent, tracestate), to store
    with the job it enqueues; None when it carried none. Kept as sent (bounded), whether
    or not this process traces: the job's attempt continues it if the worker does."""
    traceparent = headers.get("traceparent")
    if not traceparent or len(traceparent) > 128:
        return None
    found = {"traceparent": traceparent}
    tracestate = headers.get("tracestate")
    if tracestate and len(tracestate) <= 512:
        found["tracestate"] = tracestate
    return found


class Attempts:
    """One span per attempt, in the trace of the code that enqueued the job (its stored
    carrier) or a new trace. Made only when tracing is on (`enabled`): without it the
    executor calls nothing here."""

    def __init__(self) -> None:
        self._tracer = _trace.get_tracer("pg-job-worker")

    def start(self, job: Any) -> tuple[Any, object]:
        """Start the attempt's span and make it current in the job's task (handlers' own
        spans nest under it; a sync handler's thread inherits it). Returns what `end`
        takes."""
        parent = _propagate.extract(job.trace_context) if job.trace_context else None
        span = self._tracer.start_span(
            f"job {job.task_type}",
            context=parent,
            kind=_trace.SpanKind.CONSUMER,
            attributes={
                "job.task_type": job.task_type,
                "job.id": job.id,
                "job.attempt": job.attempt,
                "job.queue": job.queue,
            },
        )
        token = _context.attach(_trace.set_span_in_context(span))
        return span, token

    def end(
        self, started: tuple[Any, object], outcome: str, reason: str, error: str | None
    ) -> None:
        span, token = started
        span.set_attribute("job.outcome", outcome)
        span.set_attribute("job.reason", reason)
        if outcome in ("failed", "retry"):
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, error or reason))
        _context.detach(token)  # type: ignore[arg-type]
        span.end()


def enabled(setting: str) -> bool:
    """WORKER_TRACING: `on` (the extra must be installed), `off`, or `auto`: on when the
    extra is installed and the process has set a tracer provider by the time the worker
    starts (after importing the handler modules, which may set one up)."""
    if setting == "off":
        return False
    if setting == "on":
        if not AVAILABLE:
            raise RuntimeError(
                "WORKER_TRACING=on needs OpenTelemetry: pip install 'pg-job-worker[otel]'"
            )
        return True
    return AVAILABLE and not isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider)
