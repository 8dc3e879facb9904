"""`python -m worker status`: counts by queue, task type and status (with the jobs waiting on
their parents in total), the oldest due job per queue, paused queues, and pending task types
that no handler in this worker serves."""

from __future__ import annotations

from typing import Any

from worker.admin.store import AdminStore
from worker.registry import Registry


async def report(admin: AdminStore, registry: Registry) -> dict[str, Any]:
    async with admin.reads() as reads:
        counts, oldest, pending = await reads.status()
        paused = await reads.paused_queues()
    served = set(registry.names())
    return {
        "counts": [dict(row) for row in counts],
        # jobs whose parents have not all succeeded yet (depends_on): never claimed until then
        "waiting": sum(int(row["jobs"]) for row in counts if row["status"] == "waiting"),
        "oldest_pending": [
            {"queue": row["queue"], "age_s": round(row["age_s"], 3), "due": row["due"]}
            for row in oldest
        ],
        "unserved_task_types": [
            {"task_type": row["task_type"], "pending": row["jobs"]}
            for row in pending
            if row["task_type"] not in served
        ],
        "served_task_types": sorted(served),
        "paused_queues": [dict(row) for row in paused],
    }
