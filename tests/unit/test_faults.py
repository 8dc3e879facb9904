"""The one place that sorts database errors, and the log lines of a fault episode."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from asyncpg.exceptions._base import PostgresMessage

from worker import errors, faults


def pg_error(sqlstate: str, message: str = "injected") -> asyncpg.PostgresError:
    cls = PostgresMessage.get_message_class_for_sqlstate(sqlstate)
    exc = cls(message)
    exc.sqlstate = sqlstate  # a class without its own code (UnknownPostgresError) lacks it
    return exc


@pytest.mark.parametrize(
    "sqlstate",
    [
        "08006",  # connection failure
        "57P01",  # admin shutdown
        "57P03",  # cannot connect now
        "57014",  # statement timeout
        "55P03",  # lock timeout
        "40001",  # serialization failure
        "40P01",  # deadlock
        "25006",  # read-only transaction
        "53200",  # out of memory
        "53100",  # disk full
        "53300",  # too many connections
        "26000",  # prepared statement does not exist (a pooler)
        "42P05",  # prepared statement already exists (a pooler)
    ],
)
def test_transient_sqlstates(sqlstate: str) -> None:
    fault = faults.classify(pg_error(sqlstate))
    assert (fault.kind, fault.sqlstate) == ("transient", sqlstate)


def test_sessions_that_carry_the_fault_are_replaced() -> None:
    assert faults.classify(pg_error("25006")).reconnect
    assert faults.classify(pg_error("42P05")).reconnect
    assert not faults.classify(pg_error("57014")).reconnect


def test_feature_not_supported_is_transient_only_for_an_invalidated_plan() -> None:
    cached = pg_error("0A000", "cached plan must not change result type")
    assert faults.classify(cached).kind == "transient"
    assert faults.classify(cached).reconnect
    assert faults.classify(pg_error("0A000", "LISTEN is not supported")).kind == "unexpected"
    stale = pg_error(
        "42804",
        "type of parameter 23 (character varying) does not match that when preparing the plan",
    )
    assert faults.classify(stale).kind == "transient" and faults.classify(stale).reconnect
    assert faults.classify(pg_error("42804", "column is of type integer")).kind == "unexpected"


@pytest.mark.parametrize("sqlstate", ["42P01", "42883", "42703", "42501", "3F000"])
def test_fatal_sqlstates(sqlstate: str) -> None:
    assert faults.classify(pg_error(sqlstate)).kind == "fatal"


@pytest.mark.parametrize("sqlstate", ["22P02", "23514", "54000"])
def test_refused_data(sqlstate: str) -> None:
    assert faults.classify(pg_error(sqlstate)).kind == "refused"
    assert faults.classify(ValueError("NaN")).kind == "refused"


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError("reset"),
        TimeoutError(),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    ],
)
def test_connection_errors_without_a_sqlstate(exc: BaseException) -> None:
    assert (faults.classify(exc).kind, faults.classify(exc).sqlstate) == ("transient", "connection")


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def _log(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    info = warning = error = _log


async def test_an_episode_logs_its_start_and_its_end_once() -> None:
    lines, resets = Lines(), []

    async def reset() -> None:
        resets.append(1)

    episode = faults.Episode("claimer", lines, reset=reset, clock=lambda: 10.0)
    for code in ("57014", "57014", "25006"):
        await episode.failed(pg_error(code))
    episode.ok()
    episode.ok()  # no episode: nothing to say
    assert [event for event, _ in lines.lines] == ["database_fault", "database_recovered"]
    assert lines.lines[0][1]["loop"] == "claimer" and lines.lines[0][1]["sqlstate"] == "57014"
    assert lines.lines[1][1]["last_sqlstate"] == "25006" and lines.lines[1][1]["failures"] == 3
    assert resets == [1]  # read-only mode: the pool's sessions replaced


async def test_a_fatal_fault_raises_one_line_naming_the_loop_and_sqlstate() -> None:
    episode = faults.Episode("scheduler", Lines())
    with pytest.raises(errors.DatabaseFault) as raised:
        await episode.failed(pg_error("42501", "permission denied for table job_schedules"))
    assert raised.value.loop == "scheduler" and raised.value.sqlstate == "42501"
    assert "\n" not in str(raised.value) and "42501" in str(raised.value)
    quiet = faults.Episode("presence", Lines(), stops=False)
    assert (await quiet.failed(pg_error("42501"))).kind == "fatal"


def test_backoff_grows_and_is_capped() -> None:
    episode = faults.Episode("x", Lines(), base_s=0.2, cap_s=1.0)
    episode.failures = 1
    first = episode.delay_s()
    episode.failures = 10
    assert 0.15 <= first <= 0.25 and episode.delay_s() <= 1.0
