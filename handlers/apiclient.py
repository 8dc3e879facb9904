"""JSON over HTTP for the handlers' external APIs, with one policy for every outcome.

    2xx                                 the response
    429, or 503 with Retry-After        errors.RetryLater(delay_s=<Retry-After>): the job is
                                        retried after that delay, the worker slot is freed
                                        meanwhile, and no worker starts another job of the
                                        task type before then (the provider throttles us)
    other 5xx, 408, network, timeout    tried again inside the job (`http_attempts` tries,
                                        exponential waits, tenacity), then errors.JobError:
                                        the engine retries the job with its own backoff
    other 4xx (and 3xx: never followed) errors.PermanentJobError with the status and a
                                        bounded excerpt of the body, secrets scrubbed

Error messages name the API and the request path, never the query string, the headers
or (for configured endpoints) the URL.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import pydantic
import tenacity

from handlers.settings import HandlerSettings
from worker import errors

M = TypeVar("M", bound=pydantic.BaseModel)

_EXCERPT_CHARS = 300
_RETRYABLE_STATUS = 408


@dataclass(frozen=True, slots=True)
class Policy:
    """Timeouts and retry limits of one client."""

    timeout: httpx.Timeout
    attempts: int
    retry_wait_s: float
    retry_after_default_s: float
    retry_after_max_s: float

    @classmethod
    def from_settings(cls, conf: HandlerSettings, *, timeout_s: float | None = None) -> Policy:
        return cls(
            timeout=httpx.Timeout(
                timeout_s or conf.http_timeout_s, connect=conf.http_connect_timeout_s
            ),
            attempts=conf.http_attempts,
            retry_wait_s=conf.http_retry_wait_s,
            retry_after_default_s=conf.retry_after_default_s,
            retry_after_max_s=conf.retry_after_max_s,
        )


def retry_after_s(value: str | None, *, now: datetime, default_s: float, max_s: float) -> float:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), within
    [0, max_s]; `default_s` when absent or unreadable."""
    delay = default_s
    if value is not None and value.strip():
        text = value.strip()
        if text.isdigit():
            delay = float(text)
        else:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None:
                delay = (when - now).total_seconds()
    return min(max(delay, 0.0), max_s)


def excerpt(text: str, secrets: Sequence[str], limit: int = _EXCERPT_CHARS) -> str:
    """A one-line, bounded piece of a response body with every secret replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _secret_forms(value: str) -> list[str]:
    """The header value and, for `Bearer <token>`-style values, the bare token too."""
    forms = [value]
    scheme, _, token = value.partition(" ")
    if scheme and token.strip():
        forms.append(token.strip())
    return forms


class Api:
    """An httpx.AsyncClient for one API (or one endpoint): use it as `async with`."""

    def __init__(
        self,
        name: str,
        policy: Policy,
        *,
        base_url: str | None = None,
        secret_header: str = "Authorization",
        secret: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self._base_url = base_url
        self._headers = {"Accept": "application/json", "User-Agent": "pg-job-worker"}
        self._secrets: list[str] = []
        if secret:
            self._headers[secret_header] = secret
            self._secrets = _secret_forms(secret)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(
            base_url=self._base_url or "",
            headers=self._headers,
            timeout=self.policy.timeout,
            follow_redirects=False,
            transport=self._transport,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def scrub(self, text: str, limit: int = _EXCERPT_CHARS) -> str:
        """A bounded one-line excerpt of `text` with this client's secrets replaced by ***."""
        return excerpt(text, self._secrets, limit)

    async def get_model(
        self, path: str, model: type[M], *, params: Mapping[str, str | int] | None = None
    ) -> M:
        """GET a JSON document and validate it against `model` (a contract mismatch is a
        PermanentJobError: retrying would not change the answer)."""
        response = await self.request("GET", path, params=params)
        try:
            return model.model_validate_json(response.content)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in exc.errors()[:3]
            )
            raise errors.PermanentJobError(
                f"{self.name}: GET {path}: unexpected response body: {problems}"
            ) from None

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        label: str | None = None,
    ) -> httpx.Response:
        """Send one request under the policy; returns a 2xx response or raises (see module
        docstring). `label` names the request in errors (default: `url`; "" for none)."""
        client = self._client
        if client is None:
            raise RuntimeError(f"{self.name}: use the client inside `async with`")
        what = f"{self.name}: {method} {url if label is None else label}".rstrip()
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.policy.attempts),
            wait=tenacity.wait_exponential(multiplier=self.policy.retry_wait_s, max=30),
            retry=tenacity.retry_if_exception_type(httpx.TransportError)
            | tenacity.retry_if_result(_worth_another_try),
            # Out of tries: hand back the last response (or raise the last exception).
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            reraise=True,
        )
        try:
            response: httpx.Response = await retrying(
                client.request, method, url, params=params, json=json, headers=headers
            )
        except httpx.TransportError as exc:
            detail = excerpt(str(exc) or "no detail", self._secrets)
            raise errors.JobError(
                f"{what}: {type(exc).__name__} after {self.policy.attempts} tries: {detail}"
            ) from None
        return self._check(response, what)

    def _check(self, response: httpx.Response, what: str) -> httpx.Response:
        status = response.status_code
        if 200 <= status < 300:
            return response
        retry_after = response.headers.get("Retry-After")
        if status == 429 or (status == 503 and retry_after is not None):
            delay = retry_after_s(
                retry_after,
                now=datetime.now(UTC),
                default_s=self.policy.retry_after_default_s,
                max_s=self.policy.retry_after_max_s,
            )
            # The provider throttles the account, not this job: hold the whole task type
            # back on every worker, not only this job.
            raise errors.RetryLater(
                f"{what}: HTTP {status}, rate limited; retrying in {delay:g}s",
                delay_s=delay,
                hold_task_type=True,
            )
        body = excerpt(response.text, self._secrets)
        if status >= 500 or status == _RETRYABLE_STATUS:
            raise errors.JobError(
                f"{what}: HTTP {status} after {self.policy.attempts} tries: {body}"
            )
        raise errors.PermanentJobError(f"{what}: HTTP {status}: {body}")


def _worth_another_try(response: httpx.Response) -> bool:
    status = response.status_code
    if status == 503 and "Retry-After" in response.headers:
        return False  # the server said when: RetryLater, not a hammering loop
    return status >= 500 or status == _RETRYABLE_STATUS
