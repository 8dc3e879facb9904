"""What a database error means for a long-running loop, decided in one place.

`classify(exc)` sorts an exception raised by a statement into one of four kinds:

- transient: the database is away or busy, and waiting mends it (connection lost, server
  shutting down or starting, statement or lock timeout, serialization failure, deadlock,
  read-only mode, out of memory, disk full, too many connections, a prepared statement a
  migration or a pooler invalidated);
- fatal: only the operator can mend it (a table, column or function the worker needs is
  missing: the schema is not the version this code expects; a permission on the worker's
  own tables was revoked): the process stops with one line and exit code 3;
- refused: this statement's data is the problem (class 22, 23, 54; a value the driver cannot
  encode): retrying the same values cannot help;
- unexpected: anything else; a loop logs it with its traceback and retries with backoff.

`Episode` turns a loop's failures into log lines: one `database_fault` line when a fault
begins (loop, SQLSTATE, error), none for the retries, one `database_recovered` line when
the loop's next statement succeeds; and the backoff between attempts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from worker import backoff, errors, redact

Kind = Literal["transient", "fatal", "refused", "unexpected"]

_MAX_ERROR_CHARS = 500

# SQLSTATE classes in which every code is transient: 08 connection exception, 40 transaction
# rollback (serialization failure 40001, deadlock 40P01, ...), 53 insufficient resources
# (disk full 53100, out of memory 53200, too many connections 53300), 58 system error (I/O).
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "58"})
_TRANSIENT_CODES = frozenset(
    {
        "57P01",  # admin_shutdown: the server is restarting under us
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: starting up, shutting down, in recovery
        "57014",  # query_canceled: statement_timeout, or pg_cancel_backend
        "55P03",  # lock_not_available: lock_timeout, NOWAIT
        "25006",  # read_only_sql_transaction: read-only mode, or connected to a standby
        "25P02",  # in_failed_sql_transaction: a session left broken by an earlier fault
        "25P03",  # idle_in_transaction_session_timeout
        "26000",  # invalid_sql_statement_name: a pooler handed us another session
        "42P05",  # duplicate_prepared_statement: the same, the other way round
    }
)
# Not these codes' every occurrence: 0A000 is also "this feature is not supported".
_TRANSIENT_MESSAGES = {
    "0A000": "cached plan must not change result type",  # a migration altered a table
    # The same in a PL/pgSQL function's cached plan (a trigger on an altered table).
    "42804": "does not match that when preparing the plan",
    "55000": "not currently accepting connections",  # ALTER DATABASE ... ALLOW_CONNECTIONS
}
# Sessions opened before the fault keep it: read-only mode and a failover to a standby stay
# with a connection, and so do plans a migration or a pooler invalidated.
_RECONNECT_CODES = frozenset({"25006", "26000", "42P05", "0A000", "42804", "25P02"})
_FATAL_CODES = {
    "42P01": "a table the worker needs is missing",
    "42703": "a column the worker needs is missing",
    "42883": "a function the worker needs is missing",
    "3F000": "a schema the worker needs is missing",
    "42501": "the worker's database role lost a permission it needs",
}
_REFUSED_CLASSES = frozenset({"22", "23", "54"})

# Errors without a SQLSTATE that mean the connection, not the statement, broke.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, DNS
    TimeoutError,
    asyncpg.InterfaceError,  # includes ConnectionDoesNotExistError
    asyncpg.InternalClientError,  # protocol state after a connection broke mid-statement
)


@dataclass(frozen=True, slots=True)
class Fault:
    kind: Kind
    sqlstate: str
    """The SQLSTATE, or `connection` for a connection that broke without one."""
    error: str
    """`Type: message`, bounded and scrubbed of secrets."""
    reconnect: bool = False
    """The pool's sessions should be replaced: they carry the fault with them."""


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = redact.scrub(text).replace("\n", " ")
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def classify(exc: BaseException) -> Fault:
    """Sort `exc` (raised by a statement, or by getting a connection for it)."""
    if isinstance(exc, asyncpg.PostgresError):
        code = str(getattr(exc, "sqlstate", None) or "XX000")
        kind = _kind(code, str(exc))
        reconnect = kind == "transient" and code in _RECONNECT_CODES
        return Fault(kind, code, describe(exc), reconnect)
    if isinstance(exc, asyncpg.OutdatedSchemaCacheError):
        return Fault("transient", "connection", describe(exc), reconnect=True)
    if isinstance(exc, _CONNECTION_ERRORS):
        return Fault("transient", "connection", describe(exc))
    if isinstance(exc, ValueError | TypeError):
        return Fault("refused", "none", describe(exc))
    return Fault("unexpected", "none", describe(exc))


def _kind(code: str, message: str) -> Kind:
    if code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES:
        return "transient"
    if code in _TRANSIENT_MESSAGES and _TRANSIENT_MESSAGES[code] in message:
        return "transient"
    if code in _FATAL_CODES:
        return "fatal"
    if code[:2] in _REFUSED_CLASSES:
        return "refused"
    return "unexpected"


def is_transient(exc: BaseException) -> bool:
    return classify(exc).kind == "transient"


def fatal_error(loop: str, fault: Fault) -> errors.DatabaseFault:
    """The one line a fatal fault stops the process with."""
    what = _FATAL_CODES.get(fault.sqlstate, "the database refused the worker")
    return errors.DatabaseFault(
        f"{loop}: {what} (SQLSTATE {fault.sqlstate}: {fault.error}); check that "
        "`python -m worker migrate` ran for this version and that the worker's role has "
        'its grants (README.md, "Access control")',
        loop=loop,
        sqlstate=fault.sqlstate,
    )


class Episode:
    """One loop's run of consecutive failed attempts (see the module docstring).

    `await failed(exc)` logs the first failure of an episode and returns the fault; a fatal one
    raises DatabaseFault instead (unless `stops` is False: a loop that is not on the job
    path only logs it). `reset` is called when the pool's sessions carry the fault.
    `delay_s()` is the backoff before the next attempt; `ok()` ends the episode."""

    def __init__(
        self,
        loop: str,
        logger: Any,
        *,
        reset: Callable[[], Awaitable[None]] | None = None,
        stops: bool = True,
        base_s: float = 0.2,
        cap_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loop = loop
        self.log = logger
        self.reset = reset
        self.stops = stops
        self.base_s = base_s
        self.cap_s = cap_s
        self.clock = clock
        self.failures = 0
        self.first: Fault | None = None
        self.last: Fault | None = None
        self._since = 0.0

    @property
    def active(self) -> bool:
        return self.failures > 0

    async def failed(self, exc: BaseException) -> Fault:
        fault = classify(exc)
        if fault.kind == "fatal" and self.stops:
            raise fatal_error(self.loop, fault) from None
        if fault.reconnect and self.reset is not None:
            await self.reset()
        self.failures += 1
        self.last = fault
        if self.failures == 1:
            self.first = fault
            self._since = self.clock()
            fields = {"loop": self.loop, "sqlstate": fault.sqlstate, "kind": fault.kind}
            if fault.kind == "unexpected":
                self.log.error("database_fault", error=fault.error, exc_info=exc, **fields)
            else:
                self.log.warning("database_fault", error=fault.error, **fields)
        return fault

    def delay_s(self) -> float:
        """Seconds to wait before the next attempt: exponential from base_s, capped."""
        return backoff.retry_delay(max(self.failures, 1), base_s=self.base_s, cap_s=self.cap_s)

    def ok(self) -> None:
        if not self.failures:
            return
        first, last = self.first, self.last
        assert first is not None and last is not None
        self.log.info(
            "database_recovered",
            loop=self.loop,
            sqlstate=first.sqlstate,
            last_sqlstate=last.sqlstate,
            failures=self.failures,
            down_s=round(self.clock() - self._since, 3),
        )
        self.failures = 0
        self.first = self.last = None
