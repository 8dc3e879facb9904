"""OpenTelemetry tracing, when the optional extra is installed (`pip install
'pg-job-worker[otel]'`): the enqueuer's trace context travels with the job (the
`trace_context` column, an OpenTelemetry carrier), and each attempt is a span in that
trace. Without the package nothing here imports it and nothing on the per-job path
changes: `carrier()` returns None and the worker starts no spans."""

from __future__ import annotations

from typing import Any

try:  # the optional extra
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
