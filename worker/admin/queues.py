"""Queues as an admin steers them: list, pause (no worker claims from a paused queue) and
resume. Running jobs of a paused queue finish."""

from __future__ import annotations

from typing import Any

from worker.admin.store import Actor, AdminStore


async def list_all(admin: AdminStore) -> list[dict[str, Any]]:
    """Every queue with live jobs or a pause: counts, the oldest due job's age, the pause."""
    async with admin.reads() as reads:
        return [dict(row) for row in await reads.queues()]


async def pause(admin: AdminStore, actor: Actor, queue: str, reason: str | None) -> bool:
    """Pause `queue` for every worker; False when it was paused already."""
    return await admin.pause_queue(actor, queue, reason) is not None


async def resume(admin: AdminStore, actor: Actor, queue: str) -> bool:
    """Let workers claim from `queue` again; False when it was not paused."""
    return await admin.resume_queue(actor, queue) is not None
