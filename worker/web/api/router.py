"""The /api/v1 router.

An application that already runs FastAPI can serve the API itself:

    from worker.web.api import router as job_api
    job_api.install(app, services, prefix="/jobs-api/v1")   # worker.web.services.Services

The routes carry their own error handling (common.ProblemRoute), so installing them changes
nothing else in the host application.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from worker.web.api import common, jobs, queues, schedules
from worker.web.services import Services


def build() -> APIRouter:
    """The API's routes (without the prefix, which install adds)."""
    router = APIRouter(route_class=common.ProblemRoute)
    for module in (jobs, schedules, queues):
        router.include_router(module.router)
    return router


def install(app: FastAPI, svc: Services, *, prefix: str = "/api/v1") -> None:
    """Serve the API under `prefix` in `app`, on these services."""
    setattr(app.state, common.STATE_KEY, svc)
    app.include_router(build(), prefix=prefix)
