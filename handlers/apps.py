"""The bundled apps: which handler modules and which schedule file each one brings.

A deployment picks the apps it serves; importing an app's modules registers its handlers
(each module registers at import, and Python imports a module once, so a module that
several apps list is loaded once), and its schedule file (the format of WORKER_SCHEDULES_FILE)
declares its recurring jobs. `ops` holds the shared handlers that apps list where they need
them (and that the pg_cron importer's schedules run); `demo` is the engine's demo
(echo, noop, flaky), for `python -m worker demo` and tests, never a deployment's pick.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SCHEDULES_DIR = Path(__file__).resolve().parent / "schedules"


@dataclass(frozen=True, slots=True)
class App:
    """One bundled app."""

    name: str
    modules: tuple[str, ...]
    """Python modules to import; importing them registers the app's handlers."""
    schedules: Path | None
    """The app's schedule file (absolute path), or None when it has no recurring jobs."""


_OPS = ("handlers.endpoints", "handlers.functions", "handlers.metrics", "handlers.maintenance")


def _app(name: str, *modules: str, schedules: bool = True) -> App:
    return App(name, modules, SCHEDULES_DIR / f"{name}.toml" if schedules else None)


APPS: dict[str, App] = {
    app.name: app
    for app in (
        _app("ops", *_OPS, schedules=False),
        _app("health", "handlers.wearables", "handlers.metrics"),
        _app("challenges", "handlers.challenges", "handlers.metrics", "handlers.maintenance"),
        _app("trading", "handlers.trading", "handlers.functions", "handlers.maintenance"),
        _app("tts", "handlers.usage", "handlers.endpoints"),
        _app("game_platform", "handlers.game_platform", "handlers.maintenance"),
        _app("demo", "handlers.demo", schedules=False),
    )
}
"""Every bundled app by name, in this order: ops, health, challenges, trading, tts,
game_platform, demo."""

DEPLOYABLE: tuple[str, ...] = tuple(name for name in APPS if name != "demo")
"""The apps a deployment may pick (all but the demo)."""
