"""Secrets out of text, for everything the worker writes: log lines, Sentry events, and the
error text of failed attempts (job_queue.last_error, job_runs.error, the --once summary).

Two nets:
- the exact values of the process's secrets: the worker's own settings (registered at start,
  observability.Scrubber.from_settings) and whatever handler modules load
  (`registry.register_secret`, which handlers/settings.py calls for every HANDLERS_* secret);
- the shapes of credentials, for secrets nobody registered: passwords in URLs, credential
  query parameters, `password=`/`token:` assignments, bearer/basic authorization values.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pydantic
from pydantic import SecretStr

FILTERED = "[Filtered]"
# Shorter secrets are left to the patterns below: replacing every "pw" in a text would shred
# it without protecting much.
MIN_SECRET_CHARS = 4

# scheme://user:password@host -> scheme://user:[Filtered]@host
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/?#@\s]*):[^@/?#\s]+@")
# ?token=... &api_key=... &sig=... in any URL
_QUERY_CREDENTIAL = re.compile(
    r"(?i)([?&;][a-z0-9_.-]*?(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|key|"
    r"signature|sig|auth|credential)=)[^&#\s'\"]+"
)
# password=... / token: ... in free text (libpq keyword DSNs, error messages)
_ASSIGNED_CREDENTIAL = re.compile(
    r"(?i)\b([a-z0-9_-]*(?:password|passwd|secret|token|api[_-]?key|apikey)[\"']?\s*[=:]\s*)"
    r"(?!\[Filtered\])(\"[^\"]*\"|'[^']*'|[^\s&,;'\"]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}")

# The process-wide secret values, longest first (a URL before the password inside it).
_registered: set[str] = set()
_ordered: tuple[str, ...] = ()


def forms(value: str) -> set[str]:
    """The ways a secret shows up in text: as given, percent-decoded and percent-encoded
    (in URLs), the password of a URL, the token of an `Authorization`-style `Bearer <token>`."""
    found = {value, unquote(value), quote(value, safe="")}
    scheme, _, token = value.partition(" ")
    if scheme and token.strip():
        found.add(token.strip())
    with contextlib.suppress(ValueError):
        parts = urlsplit(value)
        if parts.password:
            found |= {parts.password, unquote(parts.password)}
    return {form for form in found if len(form) >= MIN_SECRET_CHARS}


def register(values: Iterable[str | None]) -> None:
    """Add secret values (and their forms) to the process-wide set every scrub removes."""
    global _ordered  # noqa: PLW0603 - one set per process, like the handler registry
    new: set[str] = set()
    for value in values:
        if value:
            new |= forms(value)
    if not new <= _registered:
        _registered.update(new)
        _ordered = tuple(sorted(_registered, key=len, reverse=True))


def registered() -> tuple[str, ...]:
    """The registered secret values, longest first."""
    return _ordered


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """`text` without any registered secret (nor any of `extra`), nor anything shaped like a
    credential."""
    for secret in (*extra, *_ordered):
        if secret in text:
            text = text.replace(secret, FILTERED)
    text = _URL_PASSWORD.sub(rf"\1:{FILTERED}@", text)
    text = _QUERY_CREDENTIAL.sub(rf"\1{FILTERED}", text)
    text = _ASSIGNED_CREDENTIAL.sub(rf"\1{FILTERED}", text)
    return _BEARER.sub(rf"\1 {FILTERED}", text)


def secret_values(value: Any) -> Iterator[str]:
    """The value of every SecretStr in `value` (a settings model; nested models, dicts and
    lists too)."""
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, pydantic.BaseModel):
        for name in type(value).model_fields:
            yield from secret_values(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from secret_values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from secret_values(item)


_MAX_ERROR_CHARS = 4000


def describe(exc: BaseException) -> str:
    """`Type: message`, bounded and scrubbed of secrets, for last_error and job_runs.error
    (and log lines). Only failures pay for the scrub: a succeeded job never gets here."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = scrub(text.replace("\x00", "\ufffd"))  # PostgreSQL text cannot hold NUL
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"
