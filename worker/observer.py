"""What the engine reports as it works, for metrics and error reporting: the `Observer`
protocol the dispatcher and the rescuer call (observability.Telemetry implements it; tests
may pass their own), and `NullObserver`, which does nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from worker import executor, store


class Observer(Protocol):
    """Receives what the dispatcher does, for metrics and error reporting (observability.py
    implements it; tests may pass their own). Calls must be cheap and must not raise."""

    def claimed(self, jobs: int, seconds: float) -> None:
        """A claim statement returned `jobs` rows after `seconds`."""

    def finished(self, outcome: executor.Outcome, written: bool) -> None:
        """An attempt's outcome was written (`written`=False: the lease had been lost)."""

    def loop_alive(self, loop: str) -> None:
        """A long-running loop ("claimer", "flusher", "listener", ...) made progress."""

    def rescued(self, job: store.Record) -> None:
        """The rescuer took back a job whose lease expired (job_id, status 'rescued' or
        'failed', task_type, queue, attempt, error)."""


class NullObserver:
    def claimed(self, jobs: int, seconds: float) -> None:
        pass

    def finished(self, outcome: executor.Outcome, written: bool) -> None:
        pass

    def loop_alive(self, loop: str) -> None:
        pass

    def rescued(self, job: store.Record) -> None:
        pass
