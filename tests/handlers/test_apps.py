"""The catalog of bundled apps: opt-in handler sets, one schedule file per app."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

import handlers
from worker import config, errors, executor, scheduler, service
from worker.registry import REGISTRY

# (app, schedule, cron, task_type, payload, active): every recurring job of the apps. The
# twelve of the former single file keep their names; the apps' other cleanups are new.
EXPECTED = {
    ("health", "wearable_sync", "0 2 * * *", "sync_wearables", "{}", True),
    ("health", "metrics_refresh", "0 3 * * *", "refresh_metrics", "{}", True),
    ("challenges", "challenge_auto_complete", "0 0 * * *", "auto_complete_challenges", "{}", True),
    ("challenges", "streak_reminders", "0 * * * *", "send_streak_reminders", "{}", True),
    (
        "challenges",
        "challenge_stats_refresh",
        "0 * * * *",
        "refresh_metrics",
        '{"functions": [], "views": ["challenge_stats"]}',
        False,
    ),
    (
        "challenges",
        "notification_cleanup",
        "15 3 * * *",
        "cleanup",
        '{"targets": ["notifications"]}',
        True,
    ),
    ("trading", "price_snapshots", "0 * * * *", "snapshot_prices", "{}", True),
    (
        "trading",
        "stats_cache_refresh",
        "*/5 * * * *",
        "call_function",
        '{"function": "refresh_issuer_stats_cache"}',
        False,
    ),
    ("trading", "queue_cleanup", "0 3 * * *", "cleanup", '{"targets": ["orders"]}', True),
    ("tts", "usage_rollup", "5 0 * * *", "rollup_usage", "{}", True),
    (
        "tts",
        "endpoint_health_check",
        "0 3 * * 0",
        "call_endpoint",
        '{"endpoint": "adapter_health"}',
        False,
    ),
    (
        "game_platform",
        "game_platform_sync",
        "*/30 * * * *",
        "game_platform_sync_by_coach",
        "{}",
        True,
    ),
    (
        "game_platform",
        "game_platform_totals_sweep",
        "0 * * * *",
        "game_platform_totals_sweep",
        "{}",
        True,
    ),
    ("game_platform", "job_queue_cleanup", "15 3 * * *", "cleanup", '{"targets": ["jobs"]}', True),
}

TASK_TYPES = {
    "ops": {"call_endpoint", "call_function", "refresh_metrics", "cleanup"},
    "health": {"sync_wearables", "refresh_metrics"},
    "challenges": {
        "auto_complete_challenges",
        "send_streak_reminders",
        "refresh_metrics",
        "cleanup",
    },
    "trading": {"process_orders", "snapshot_prices", "call_function", "cleanup"},
    "tts": {"rollup_usage", "call_endpoint"},
    "game_platform": {
        "game_platform_sync",
        "game_platform_totals_sweep",
        "game_platform_sync_by_coach",
        "cleanup",
    },
    "demo": {"echo", "noop", "flaky"},
}


def test_the_catalog() -> None:
    assert list(handlers.APPS) == [
        "ops",
        "health",
        "challenges",
        "trading",
        "tts",
        "game_platform",
        "demo",
    ]
    assert tuple(name for name in handlers.APPS if name != "demo") == handlers.DEPLOYABLE
    for name, app in handlers.APPS.items():
        assert isinstance(app, handlers.App) and app.name == name
        assert (app.schedules is None) == (name in {"ops", "demo"})
        assert app.schedules is None or (app.schedules.is_absolute() and app.schedules.exists())


def test_each_apps_schedules_and_handlers_go_together() -> None:
    found = set()
    for name, app in handlers.APPS.items():
        for spec in scheduler.load_file(app.schedules) if app.schedules else []:
            # Served by the app's own modules, with a payload its handler accepts.
            assert spec.task_type in TASK_TYPES[name], (name, spec.name)
            executor.parse_payload(REGISTRY.get(spec.task_type), spec.payload)
            assert spec.timezone == "UTC"
            payload = json.dumps(spec.payload, sort_keys=True)
            found.add((name, spec.name, spec.cron, spec.task_type, payload, spec.active))
    assert found == EXPECTED
    assert len({schedule for _, schedule, *_ in found}) == len(found)  # names unique overall


def test_by_default_no_app_and_no_schedule_file_is_loaded() -> None:
    settings = config.load(database_url="postgresql://x@127.0.0.1/x")
    assert (settings.apps, settings.handler_modules, settings.schedules_file) == ([], [], [])
    assert service.schedule_files(settings) == []


def test_apps_are_loaded_by_name_with_their_schedule_files() -> None:
    settings = config.load(database_url="postgresql://x@127.0.0.1/x", apps="trading,tts")
    assert service.schedule_files(settings) == [
        handlers.APPS["trading"].schedules,
        handlers.APPS["tts"].schedules,
    ]
    everything = config.load(database_url="postgresql://x@127.0.0.1/x", apps="all")
    assert [a.name for a in service.bundled_apps(everything.apps)] == list(handlers.DEPLOYABLE)
    for bad in ("nope", "demo"):
        refused = config.load(database_url="postgresql://x@127.0.0.1/x", apps=bad)
        with pytest.raises(errors.ConfigError, match="WORKER_APPS: unknown app"):
            service.load_handlers(refused)


_PROBE = """
import importlib, json, sys
import pytest

import handlers
from worker.registry import REGISTRY
seen = {"package": REGISTRY.names()}
for name in sys.argv[1:]:
    before = set(REGISTRY.names())
    for module in handlers.APPS[name].modules:
        importlib.import_module(module)
        importlib.import_module(module)  # imported twice: Python imports once
    seen[name] = sorted(set(REGISTRY.names()) - before)
print(json.dumps(seen))
"""


def _probe(*apps: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *apps],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_importing_the_package_registers_nothing_and_each_app_its_own() -> None:
    alone = {name: set(_probe(name)[name]) for name in handlers.APPS}
    assert alone == TASK_TYPES
    assert _probe()["package"] == []
    # Apps sharing modules load them once, in any order.
    together = _probe("trading", "challenges", "ops", "game_platform")
    assert set(together["trading"]) == TASK_TYPES["trading"]
    assert set(together["challenges"]) == TASK_TYPES["challenges"] - TASK_TYPES["trading"]
    assert together["ops"] == ["call_endpoint"]
    assert together["game_platform"] == [
        "game_platform_sync",
        "game_platform_sync_by_coach",
        "game_platform_totals_sweep",
    ]
