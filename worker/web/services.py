"""What the web application works with, built once at start-up by the runtime (service.py):
the web layer reads no settings of its own and starts nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from worker import dispatcher, observability, store
from worker.admin.store import AdminStore
from worker.clock import Clock, SystemClock
from worker.config import Settings
from worker.registry import Registry
from worker.web.api import security


@dataclass(frozen=True, slots=True)
class DrainRequest:
    """What POST /api/v1/drain asks: at most `max_jobs` due jobs of these task types and
    queues (None: all this process serves), no new claim after `max_seconds`."""

    max_jobs: int
    task_types: list[str] | None = None
    queues: list[str] | None = None
    max_seconds: float = 30.0


Drain = Callable[[DrainRequest], Awaitable[dispatcher.Summary]]


@dataclass
class Services:
    """What the web application works with, built once at start-up by the runtime."""

    settings: Settings
    db: store.Store
    admin: AdminStore
    registry: Registry
    drain: Drain
    telemetry: observability.Telemetry | None = None
    """The daemon's, when the dispatcher runs in this process (None when serving alone)."""
    clock: Clock = field(default_factory=SystemClock)
    health_timeout_s: float = 2.0
    """How long /health waits for the database."""
    metrics_timeout_s: float = 5.0
    """How long /metrics waits for its queue query."""
    auth: security.Authenticator = field(init=False)

    def __post_init__(self) -> None:
        self.auth = security.Authenticator.from_settings(self.settings)
