"""The container and Fly configuration keep their promises (no image is built here)."""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    instructions = [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in dockerfile():
        if name == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def fly() -> dict[str, Any]:
    with (ROOT / "fly.toml").open("rb") as f:
        return tomllib.load(f)


def test_dockerfile_runs_the_worker_as_pid_1_and_not_as_root() -> None:
    final = dockerfile()
    base = final[0][1]
    assert base.startswith(("python:3.11-slim", "python:3.12-slim")), base
    users = [args for name, args in final if name == "USER"]
    assert users, "the final stage must switch to an unprivileged user"
    assert users[-1].split(":")[0] not in ("root", "0")
    [entrypoint] = [args for name, args in final if name == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "-m", "worker"]  # exec form: no shell
    assert ("STOPSIGNAL", "SIGTERM") in final
    [healthcheck] = [args for name, args in final if name == "HEALTHCHECK"]
    assert "/health" in healthcheck and "urllib" in healthcheck


def test_dockerfile_serves_health_on_all_interfaces() -> None:
    env = dockerfile_env()
    assert env["WORKER_HTTP_HOST"] == "0.0.0.0"
    assert env["WORKER_HTTP_PORT"] == "8080"
    assert env["WORKER_LOG_FORMAT"] == "json"


def test_fly_gives_shutdown_its_grace_and_exposes_nothing() -> None:
    config = fly()
    assert config["kill_signal"] == "SIGTERM"
    grace_s = float(config["env"]["WORKER_SHUTDOWN_GRACE_S"])
    assert config["kill_timeout"] > grace_s
    assert "http_service" not in config and "services" not in config
    assert config["processes"] == {"worker": "run"}  # appended to the ENTRYPOINT


def test_fly_checks_health_on_the_port_the_image_listens_on() -> None:
    config = fly()
    port = int(dockerfile_env()["WORKER_HTTP_PORT"])
    assert config["env"].get("WORKER_HTTP_PORT", str(port)) == str(port)
    checks = list(config["checks"].values())
    assert [(c["type"], c["port"], c["path"]) for c in checks] == [("http", port, "/health")]
    assert checks[0]["processes"] == ["worker"]
    assert (config["metrics"]["port"], config["metrics"]["path"]) == (port, "/metrics")


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"  # everything is excluded first ...
    assert {"!worker/", "!handlers/", "!schema/", "!pyproject.toml"} <= set(rules)
    assert not any(rule.startswith("!.") for rule in rules)  # ... and no dot-dir let back in
