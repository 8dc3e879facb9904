"""call_endpoint: POST to an endpoint named in the payload and defined in settings.

For the weekly adapter health check, an Edge Function, any webhook: the payload names the
endpoint (`{"endpoint": "adapter_health", "body": {...}}`); its URL, secret header and
timeout come from HANDLERS_ENDPOINTS, so a payload can never send the worker's secrets to
a URL of its choosing. Failures follow handlers.apiclient: 5xx and network errors are
tried again inside the job, then the job is retried with backoff; 429 (or 503 with
Retry-After) retries the job after Retry-After; any other 4xx fails the job for good with
the status and a bounded body excerpt in `last_error`.

Idempotency: a POST cannot be undone, so every attempt of one job sends the same
`Idempotency-Key: job-<job id>` header for the receiver to drop repeats.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pydantic

from handlers import apiclient, payloads
from handlers import settings as handler_settings
from handlers.settings import EndpointName
from worker import errors
from worker.registry import JobContext, JobResult, handler

_STORED_BODY_CHARS = 4000


class CallEndpointPayload(payloads.Payload):
    endpoint: EndpointName
    """A key of HANDLERS_ENDPOINTS."""
    body: dict[str, Any] = pydantic.Field(default_factory=dict)
    """JSON object to POST (default {})."""


@handler("call_endpoint", payload=CallEndpointPayload, max_attempts=5, timeout_s=900)
async def call_endpoint(ctx: JobContext, payload: CallEndpointPayload) -> JobResult:
    """POST the payload's body to a configured endpoint and record its answer."""
    conf = handler_settings.get()
    endpoint = conf.endpoints.get(payload.endpoint)
    if endpoint is None:
        known = ", ".join(sorted(conf.endpoints)) or "none"
        raise errors.PermanentJobError(
            f"call_endpoint: unknown endpoint {payload.endpoint!r} (HANDLERS_ENDPOINTS "
            f"defines: {known})"
        )
    api = apiclient.Api(
        f"endpoint {payload.endpoint!r}",
        apiclient.Policy.from_settings(conf, timeout_s=endpoint.timeout_s),
        secret_header=endpoint.secret_header,
        secret=endpoint.secret.get_secret_value() if endpoint.secret else None,
    )
    started = time.monotonic()
    async with api:
        response = await api.request(
            "POST",
            str(endpoint.url),
            json=payload.body,
            headers={"Idempotency-Key": f"job-{ctx.job_id}"},
            label="",
        )
        duration_ms = round((time.monotonic() - started) * 1000)
        answer = _answer(api, response.text)
    reported = answer.get("rows_affected") if isinstance(answer, dict) else None
    rows = reported if isinstance(reported, int) and not isinstance(reported, bool) else 0
    return JobResult(
        rows_affected=rows,
        notes=[f"POST {payload.endpoint}: HTTP {response.status_code} in {duration_ms} ms"],
        data={"status": response.status_code, "duration_ms": duration_ms, "response": answer},
    )


def _answer(api: apiclient.Api, text: str) -> Any:
    """The response as JSON when it is small and free of secrets, else a scrubbed excerpt."""
    scrubbed = api.scrub(text, limit=_STORED_BODY_CHARS)
    if len(text) <= _STORED_BODY_CHARS and scrubbed == " ".join(text.split()):
        try:
            return json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            pass
    return scrubbed
