"""GET /health: 200 when the database answers quickly and (in the daemon) every loop of the
engine reported progress recently; else 503 with the problems listed. Platform checks (Fly,
Docker's HEALTHCHECK) call it without credentials, so it says nothing about jobs' contents."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from worker import observability, redact, store
from worker.config import Settings

# The database is away, slow, or refuses the statement (a schema not migrated yet).
_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    *store.CONNECTION_ERRORS,
    asyncpg.PostgresError,
)


class Health:
    def __init__(
        self,
        db: store.Store,
        telemetry: observability.Telemetry | None,
        settings: Settings,
        *,
        ping_timeout_s: float = 2.0,
    ) -> None:
        self.db = db
        self.telemetry = telemetry
        self.worker_id = settings.worker_id
        self.ping_timeout_s = ping_timeout_s

    async def check(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body)."""
        database = await self._ping()
        problems = [] if database["ok"] else [f"database: {database['error']}"]
        body: dict[str, Any] = {"status": "ok", "problems": problems, "worker_id": self.worker_id}
        body["database"] = database
        if self.telemetry is not None:
            problems += self.telemetry.liveness_problems()
            body["loops"] = {
                loop: {"seconds_since_alive": round(age_s, 3)}
                for loop, age_s in self.telemetry.loop_ages().items()
            }
            body["jobs_in_flight"] = self.telemetry.in_flight
        if problems:
            body["status"] = "unhealthy"
        return (503 if problems else 200), body

    async def _ping(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            # A pool connection, so a pool exhausted for longer than the timeout shows too.
            async with asyncio.timeout(self.ping_timeout_s):
                _, version = await self.db.server_version()
        except TimeoutError:
            return {"ok": False, "error": f"no answer within {self.ping_timeout_s:g}s"}
        except _DATABASE_ERRORS as exc:
            return {"ok": False, "error": redact.describe(exc)}
        latency_ms = (loop.time() - t0) * 1000
        return {"ok": True, "server_version": version, "latency_ms": round(latency_ms, 2)}
