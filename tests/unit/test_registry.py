from __future__ import annotations

import pydantic
import pytest

from worker import errors
from worker.registry import JobContext, JobResult, Registry, handler


class P(pydantic.BaseModel):
    pass


async def f(ctx: JobContext, payload: P) -> JobResult:
    return JobResult()


def test_registers_under_the_explicit_name() -> None:
    reg = Registry()
    handler("send_mail", payload=P, max_attempts=7, timeout_s=3, registry=reg)(f)
    registered = reg.get("send_mail")
    assert (registered.name, registered.max_attempts, registered.timeout_s) == ("send_mail", 7, 3)
    assert reg.names() == ["send_mail"]


def test_registering_a_name_twice_fails() -> None:
    reg = Registry()
    handler("x", payload=P, registry=reg)(f)
    with pytest.raises(errors.DuplicateHandler, match="'x' is already registered"):
        handler("x", payload=P, registry=reg)(f)


@pytest.mark.parametrize("name", ["", "has space", "x" * 129, "semi;colon"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid task type"):
        handler(name, payload=P, registry=Registry())(f)


def test_unknown_task_type() -> None:
    with pytest.raises(errors.UnknownTask, match="'nope'"):
        Registry().get("nope")
