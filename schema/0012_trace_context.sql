-- Tracing: the W3C trace context of the code that enqueued a job (an OpenTelemetry
-- carrier: {"traceparent": "00-...", "tracestate": "..."}), written by the Python client
-- and the HTTP API when the caller is traced, so the job's attempts continue that trace.
-- Null for everything else; nothing reads it but the worker's tracing (worker/tracing.py).
-- Written for PostgreSQL 14 through 18.

alter table job_queue add column if not exists trace_context jsonb;
alter table job_queue drop constraint if exists job_queue_trace_context_check;
alter table job_queue add constraint job_queue_trace_context_check
  check (trace_context is null
         or (jsonb_typeof(trace_context) = 'object' and length(trace_context::text) <= 2048));
