from __future__ import annotations

import re

import pytest

from worker import queries
from worker.admin import store as admin_store


def test_parse_splits_by_name_and_drops_comments() -> None:
    text = "-- name: a\n-- what a does\nSELECT 1;\n\n-- name: b_2\nSELECT\n  2;\n"
    assert queries.parse(text) == {"a": "SELECT 1;", "b_2": "SELECT\n  2;"}


def test_duplicate_name_is_refused() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        queries.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_empty_query_is_refused() -> None:
    with pytest.raises(ValueError, match="without SQL"):
        queries.parse("-- name: a\n-- only a comment\n-- name: b\nSELECT 1;\n")


def test_registries_hold_the_engine_and_control_plane_queries() -> None:
    assert {"finish_and_claim", "enqueue_job", "queue_metrics"} <= set(queries.QUERIES)
    assert {"status_breakdown", "retry_job", "session_user"} <= set(admin_store.Q)
    # Each statement has one home: the engine's or the control plane's.
    assert set(queries.QUERIES).isdisjoint(admin_store.Q)
    # No str.format / f-string placeholders: every value travels as a $n parameter.
    both = {**queries.QUERIES, **admin_store.Q}
    templated = [name for name, sql in both.items() if re.search(r"\{[A-Za-z_]\w*\}", sql)]
    assert templated == []
