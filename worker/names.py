"""The name grammar, defined once: queues, task types and schedules are names of
A-Z a-z 0-9 _ . : - (queues up to 64 characters, task types and schedules up to 128). The
tables' CHECK constraints and the SQL functions hold the same rules. Use `fullmatch`: with
`match`, `$` also matches before a trailing newline ("default\\n"), which the table's CHECK
constraint then refuses."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

QUEUE_MAX_CHARS = 64
TASK_TYPE_MAX_CHARS = 128
SCHEDULE_MAX_CHARS = 128

QUEUE = re.compile(rf"[A-Za-z0-9_.:-]{{1,{QUEUE_MAX_CHARS}}}")
TASK_TYPE = re.compile(rf"[A-Za-z0-9_.:-]{{1,{TASK_TYPE_MAX_CHARS}}}")
SCHEDULE = re.compile(rf"[A-Za-z0-9_.:-]{{1,{SCHEDULE_MAX_CHARS}}}")

QUEUE_RULE = f"1-{QUEUE_MAX_CHARS} of A-Z a-z 0-9 _ . : -"
TASK_TYPE_RULE = f"1-{TASK_TYPE_MAX_CHARS} of A-Z a-z 0-9 _ . : -"
SCHEDULE_RULE = f"1-{SCHEDULE_MAX_CHARS} of A-Z a-z 0-9 _ . : -"

QueueName = Annotated[str, StringConstraints(pattern=rf"^{QUEUE.pattern}$")]
TaskType = Annotated[str, StringConstraints(pattern=rf"^{TASK_TYPE.pattern}$")]
ScheduleName = Annotated[str, StringConstraints(pattern=rf"^{SCHEDULE.pattern}$")]


def is_queue(text: str) -> bool:
    return QUEUE.fullmatch(text) is not None


def is_task_type(text: str) -> bool:
    return TASK_TYPE.fullmatch(text) is not None


def is_schedule(text: str) -> bool:
    return SCHEDULE.fullmatch(text) is not None
