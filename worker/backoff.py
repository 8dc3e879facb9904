"""The retry delay after a failed attempt: pure, so tests pin `rand`."""

from __future__ import annotations

import random
from collections.abc import Callable


def retry_delay(
    attempt: int,
    *,
    base_s: float = 2.0,
    cap_s: float = 3600.0,
    jitter: float = 0.1,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): exponential, jittered, capped.

    The un-jittered delay is `base_s * 2 ** (attempt - 1)`, capped at `cap_s`; jitter spreads
    it uniformly over +/- `jitter` of itself so a burst of failures does not retry in lockstep.
    The result never exceeds `cap_s`.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    exponent = min(attempt - 1, 64)  # 2**64 * base is past any cap; avoids float overflow
    delay = min(cap_s, base_s * 2.0**exponent)
    spread = delay * jitter * (2.0 * rand() - 1.0)
    return max(0.0, min(cap_s, delay + spread))
