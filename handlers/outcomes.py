"""One job outcome for handlers that work through many entities (connections, competitors).

Each entity's work commits on its own, so one failing entity never blocks or undoes the
others. At the end:
- no failures: the handler returns its JobResult;
- a rate limit (RetryLater): raised at once, with what was done so far (the API said stop);
- every entity tried failed for good (e.g. HTTP 401 for all): PermanentJobError;
- otherwise: errors.JobError, so the engine retries the job; work already committed is
  not redone (cursors advanced, flags cleared), so a retry picks up only what failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker import errors

_SHOWN = 5


@dataclass
class Failures:
    """Failures of one run, by entity."""

    noun: str
    items: list[tuple[str, BaseException]] = field(default_factory=list)

    def add(self, entity: str, exc: BaseException) -> None:
        self.items.append((entity, exc))

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> str:
        shown = "; ".join(f"{self.noun} {entity}: {exc}" for entity, exc in self.items[:_SHOWN])
        more = len(self.items) - _SHOWN
        return shown + (f"; and {more} more" if more > 0 else "")

    def raise_if_any(self, summary: str, *, attempted: int) -> None:
        """Raise the job's outcome if anything failed; `summary` says what succeeded."""
        if not self.items:
            return
        all_permanent = all(isinstance(e, errors.PermanentJobError) for _, e in self.items)
        if all_permanent and len(self.items) >= attempted:
            raise errors.PermanentJobError(
                f"{summary}; every {self.noun} failed: {self.describe()}"
            )
        raise errors.JobError(
            f"{summary}; {len(self.items)} {self.noun}(s) failed and will be retried: "
            f"{self.describe()}"
        )


def rate_limited(exc: errors.RetryLater, summary: str) -> errors.RetryLater:
    """The same RetryLater, saying what was done before the API asked us to stop."""
    return errors.RetryLater(
        f"{summary}; stopped: {exc}", delay_s=exc.delay_s, hold_task_type=exc.hold_task_type
    )
