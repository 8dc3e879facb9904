"""Queues over HTTP: list them with their depth, lag and pause; pause and resume."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path
from starlette.requests import Request

from worker import names
from worker.admin import queues as admin_queues
from worker.web.api import common, models
from worker.web.api.security import Principal

router = APIRouter(route_class=common.ProblemRoute, tags=["queues"])

QueuePath = Annotated[str, Path(pattern=f"^{names.QUEUE.pattern}$", description="queue name")]
Read = Annotated[Principal, common.scope("read")]
Admin = Annotated[Principal, common.scope("admin")]


@router.get(
    "/queues",
    response_model=list[models.Queue],
    responses=common.responses(),
    summary="Queues with live jobs or a pause",
)
async def list_queues(request: Request, caller: Read) -> list[models.Queue]:
    rows = await admin_queues.list_all(common.services(request).admin)
    return [models.Queue(**row) for row in rows]


@router.post(
    "/queues/{queue}/pause",
    response_model=models.QueueChanged,
    responses=common.responses(),
    summary="Stop every worker claiming from a queue (running jobs finish)",
)
async def pause_queue(
    queue: QueuePath,
    request: Request,
    caller: Admin,
    body: Annotated[models.PauseQueue | None, Body()] = None,
) -> models.QueueChanged:
    reason = body.reason if body is not None else None
    changed = await admin_queues.pause(common.services(request).admin, caller.actor, queue, reason)
    return models.QueueChanged(queue=queue, paused=True, changed=changed)


@router.post(
    "/queues/{queue}/resume",
    response_model=models.QueueChanged,
    responses=common.responses(),
    summary="Let workers claim from a paused queue again",
)
async def resume_queue(queue: QueuePath, request: Request, caller: Admin) -> models.QueueChanged:
    changed = await admin_queues.resume(common.services(request).admin, caller.actor, queue)
    return models.QueueChanged(queue=queue, paused=False, changed=changed)
