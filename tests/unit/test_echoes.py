"""Python-side refusals echo a value in part only: a 10 MB payload key or value gives a
short error (it is stored in job_runs.error and job_queue.last_error, and logged)."""

from __future__ import annotations

import pydantic
import pytest

from worker import errors, executor, values
from worker.registry import Handler, JobContext, JobResult

BIG = "k" * 10_000_000


class Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    count: int


async def _run(ctx: JobContext, payload: Strict) -> JobResult:
    return JobResult()


def test_cut_keeps_short_text_and_marks_a_cut() -> None:
    assert values.cut("short") == "short"
    assert values.cut("x" * 64) == "x" * 64
    assert values.cut("x" * 65) == "x" * 64 + "..."


@pytest.mark.parametrize("payload", [{BIG: 1, "count": 1}, {"count": BIG}, {"count": [BIG]}])
def test_a_refused_payload_is_described_shortly(payload: dict[str, object]) -> None:
    with pytest.raises(errors.PermanentJobError) as refused:
        executor.parse_payload(Handler("strict", _run, Strict), payload)
    assert len(str(refused.value)) < 1000
    assert str(refused.value).startswith("invalid payload for 'strict': ")
