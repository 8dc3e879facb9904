"""Cron expressions in words (the schedule pages), and None for what has no simple reading."""

from __future__ import annotations

import pytest

from worker.web.dashboard import cronwords


@pytest.mark.parametrize(
    ("expression", "timezone", "words"),
    [
        ("* * * * *", "UTC", "every minute"),
        ("*/30 * * * *", "UTC", "every 30 minutes"),
        ("0 * * * *", "UTC", "hourly"),
        ("@hourly", "UTC", "hourly"),
        ("15 * * * *", "UTC", "hourly at minute 15"),
        ("0,30 * * * *", "UTC", "hourly at minutes 0, 30"),
        ("15 3 * * *", "UTC", "at 03:15 UTC every day"),
        ("@daily", "Europe/Paris", "at 00:00 Europe/Paris every day"),
        ("0 9,17 * * *", "UTC", "at 09:00 and 17:00 UTC every day"),
        ("0 8 * * 1-5", "America/New_York", "at 08:00 America/New_York on weekdays"),
        ("30 6 * * 1", "UTC", "at 06:30 UTC on Monday"),
        ("0 10 * * 1,3,5", "UTC", "at 10:00 UTC on Monday, Wednesday and Friday"),
        ("0 0 1 * *", "UTC", "at 00:00 UTC on day 1 of every month"),
        ("0 0 1 1 *", "UTC", "at 00:00 UTC on January 1"),
        ("5 */2 * * *", "UTC", "every 2 hours at minute 5"),
        ("*/5 * * * 1-5", "UTC", "every 5 minutes, on weekdays"),
    ],
)
def test_common_shapes_in_words(expression: str, timezone: str, words: str) -> None:
    assert cronwords.describe(expression, timezone) == words


@pytest.mark.parametrize(
    "expression",
    ["1-5 * * * *", "0 0 1 * 1", "0 25 * * *", "0 0 32 * *", "* * *", "", "0 0 * 13 *"],
)
def test_what_has_no_simple_reading_is_none(expression: str) -> None:
    assert cronwords.describe(expression) is None
