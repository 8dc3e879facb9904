"""Schedules over HTTP: list, create, read, change (cron, timezone, payload, pause/resume,
missed-tick policy, ...), delete, and a schedule's runs. Every value is checked by the same
SQL functions the CLI and the dashboard use; every change is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from worker import names
from worker.admin import schedules as admin_schedules
from worker.web.api import common, models
from worker.web.api.security import Principal

router = APIRouter(route_class=common.ProblemRoute, tags=["schedules"])

Name = Annotated[str, Path(pattern=f"^{names.SCHEDULE.pattern}$", description="schedule name")]
Read = Annotated[Principal, common.scope("read")]
Admin = Annotated[Principal, common.scope("admin")]


def _schedule(row: dict[str, Any]) -> models.Schedule:
    row = {**row, "payload": models.json_value(row["payload"])}
    return models.Schedule(**{k: v for k, v in row.items() if k in models.Schedule.model_fields})


@router.get(
    "/schedules",
    response_model=list[models.Schedule],
    responses=common.responses(),
    summary="Every schedule, its next tick and last result",
)
async def list_schedules(request: Request, caller: Read) -> list[models.Schedule]:
    svc = common.services(request)
    return [_schedule(row) for row in await admin_schedules.list_all(svc.admin, svc.registry)]


@router.post(
    "/schedules",
    status_code=201,
    response_model=models.Schedule,
    responses=common.responses(409),
    summary="Create a schedule",
)
async def create_schedule(body: models.NewSchedule, request: Request, caller: Admin) -> Response:
    svc = common.services(request)
    fields = body.model_dump(exclude={"name", "force"})
    await admin_schedules.create(
        svc.admin, svc.registry, caller.actor, body.name, force=body.force, **fields
    )
    row = await admin_schedules.get(svc.admin, svc.registry, body.name)
    return JSONResponse(
        _schedule(row).model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/api/v1/schedules/{body.name}"},
    )


@router.get(
    "/schedules/{name}",
    response_model=models.Schedule,
    responses=common.responses(404),
    summary="One schedule",
)
async def get_schedule(name: Name, request: Request, caller: Read) -> models.Schedule:
    svc = common.services(request)
    return _schedule(await admin_schedules.get(svc.admin, svc.registry, name))


@router.patch(
    "/schedules/{name}",
    response_model=models.Schedule,
    responses=common.responses(404),
    summary="Change a schedule (a new cron or timezone re-times it from now)",
)
async def change_schedule(
    name: Name, body: models.ScheduleChanges, request: Request, caller: Admin
) -> models.Schedule:
    svc = common.services(request)
    changes = body.model_dump(exclude={"force"}, exclude_none=True)
    await admin_schedules.update(
        svc.admin, svc.registry, caller.actor, name, changes, force=body.force
    )
    return _schedule(await admin_schedules.get(svc.admin, svc.registry, name))


@router.delete(
    "/schedules/{name}",
    status_code=204,
    responses=common.responses(404),
    summary="Delete a schedule (its jobs and history stay)",
)
async def delete_schedule(name: Name, request: Request, caller: Admin) -> Response:
    await admin_schedules.remove(common.services(request).admin, caller.actor, name)
    return Response(status_code=204)


@router.get(
    "/schedules/{name}/runs",
    response_model=list[models.ScheduleRun],
    responses=common.responses(404),
    summary="A schedule's latest runs (job_runs), newest first",
)
async def schedule_runs(
    name: Name,
    request: Request,
    caller: Read,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[models.ScheduleRun]:
    svc = common.services(request)
    await admin_schedules.get(svc.admin, svc.registry, name)  # 404 for an unknown name
    rows = await admin_schedules.history(svc.admin, name, limit)
    return [
        models.ScheduleRun(**{k: v for k, v in r.items() if k in models.ScheduleRun.model_fields})
        for r in rows
    ]
