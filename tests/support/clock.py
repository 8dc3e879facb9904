"""The tests' clock: time moves only when a test moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """Satisfies worker.clock.Clock; monotonic() is seconds since the Unix epoch of now()."""

    def __init__(self, now: datetime = _EPOCH) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._now.timestamp()

    def advance(self, by: timedelta | float) -> None:
        """Move forward by a timedelta or a number of seconds."""
        self._now += by if isinstance(by, timedelta) else timedelta(seconds=by)
