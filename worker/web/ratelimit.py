"""A limiter of failed authentications per client address (dashboard logins, API tokens):
at most `max_failures` in a sliding `window_s`. Memory is bounded: at most `max_addresses`
addresses are tracked (the oldest go). In memory, per process: a replica's limit is its own."""

from __future__ import annotations

import collections


class FailureLimiter:
    def __init__(
        self, *, max_failures: int = 10, window_s: float = 60.0, max_addresses: int = 10_000
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def blocked(self, address: str, now_s: float) -> bool:
        failures = self._failures.get(address)
        if failures is None:
            return False
        while failures and failures[0] <= now_s - self.window_s:
            failures.popleft()
        return len(failures) >= self.max_failures

    def retry_after_s(self, address: str, now_s: float) -> float:
        """Seconds until the oldest failure in the window leaves it."""
        failures = self._failures.get(address)
        if not failures:
            return 0.0
        return max(0.0, failures[0] + self.window_s - now_s)

    def failed(self, address: str, now_s: float) -> None:
        failures = self._failures.pop(address, None) or collections.deque()
        failures.append(now_s)
        while len(failures) > self.max_failures:
            failures.popleft()
        self._failures[address] = failures  # most recent last
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
