from __future__ import annotations

import pytest

from worker.backoff import retry_delay


def test_doubles_per_attempt_without_jitter() -> None:
    delays = [retry_delay(n, base_s=2, cap_s=10_000, jitter=0) for n in range(1, 6)]
    assert delays == [2, 4, 8, 16, 32]


def test_is_capped_even_with_jitter() -> None:
    assert retry_delay(30, base_s=2, cap_s=60, jitter=0.5, rand=lambda: 1.0) == 60
    assert retry_delay(10_000, base_s=2, cap_s=60) <= 60


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 9.0), (0.5, 10.0), (1.0, 11.0)])
def test_jitter_spreads_symmetrically(rand: float, expected: float) -> None:
    assert retry_delay(1, base_s=10, cap_s=100, jitter=0.1, rand=lambda: rand) == pytest.approx(
        expected
    )


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        retry_delay(0)
