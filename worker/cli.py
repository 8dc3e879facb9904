"""`python -m worker`: argparse -> Settings -> service. No logic lives here."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio

from worker import __version__, config, errors, observability, service

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3

_DESCRIPTION = """\
A PostgreSQL job-queue worker. With no command it runs as a daemon: it claims due jobs
from job_queue, runs their handlers, retries failures with backoff and records every
attempt in job_runs. Settings come from the environment (DATABASE_URL, WORKER_*); with
DATABASE_URL unset it starts an embedded PostgreSQL under .worker/.
"""

_EPILOG = """\
examples:
  python -m worker                       run until SIGTERM/SIGINT
  python -m worker --once                drain every due job, print a JSON summary, exit
  python -m worker migrate               create or update the tables and functions
  python -m worker enqueue echo --payload '{"message": "hi"}'
  python -m worker status                counts by queue, task type and status
  python -m worker pause mail --reason "provider outage"   (then: resume mail)
  python -m worker demo                  enqueue demo jobs and drain them

exit codes: 0 ok; 1 a job failed for good (--once, demo); 2 bad usage, settings or input;
3 the database could not be reached or migrated.
"""


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _datetime_arg(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time such as 2026-11-22T08:00:00+00:00"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _name_arg(text: str) -> str:
    if not _NAME.match(text):
        raise argparse.ArgumentTypeError(
            f"invalid queue name {text!r}: use 1-64 of A-Z a-z 0-9 _ . : -"
        )
    return text


def _uuid_arg(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"worker {__version__}")
    parser.add_argument(
        "--once", action="store_true", help="drain every due job, print a JSON summary and exit"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run as a daemon (the default)").add_argument(
        "--once", action="store_true", help="drain every due job and exit"
    )
    commands.add_parser("migrate", help="apply pending schema migrations")
    _add_enqueue(commands)
    pause = commands.add_parser("pause", help="stop every worker claiming from a queue")
    pause.add_argument("queue", type=_name_arg)
    pause.add_argument("--reason", help="shown by `status` and in job_queue_pauses")
    resume = commands.add_parser("resume", help="let workers claim from a paused queue again")
    resume.add_argument("queue", type=_name_arg)
    status = commands.add_parser("status", help="job counts, oldest pending age, unserved types")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    demo = commands.add_parser("demo", help="enqueue demo jobs, then drain them like --once")
    demo.add_argument(
        "--jobs",
        type=_int_range(1, 100_000),
        default=20,
        help="how many echo jobs to enqueue (default 20)",
    )
    return parser


def _add_enqueue(commands: Any) -> None:
    enqueue = commands.add_parser(
        "enqueue",
        help="enqueue one job (a manual run)",
        description="Insert one job, recorded as run_type='manual'. The payload is checked "
        "against the handler's model first when this worker has that handler.",
    )
    enqueue.add_argument("task", help="task type, e.g. echo")
    enqueue.add_argument("--payload", type=_json_arg, default={}, help="JSON payload (default {})")
    enqueue.add_argument("--run-at", type=_datetime_arg, help="ISO 8601 time; naive means UTC")
    enqueue.add_argument(
        "--queue", type=_name_arg, default="default", help="queue name (default 'default')"
    )
    enqueue.add_argument(
        "--priority", type=_int_range(-1000, 1000), default=0, help="lower runs first (default 0)"
    )
    enqueue.add_argument("--max-attempts", type=_int_range(1, 1000), help="default: the handler's")
    enqueue.add_argument("--user-id", type=_uuid_arg, help="UUID of the person running it")
    enqueue.add_argument("--dedupe-key", help="skip if a live job already has this key")
    enqueue.add_argument(
        "--force", action="store_true", help="allow a task type this worker has no handler for"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM outside the daemon loop must still exit normally, so atexit handlers run
    # (they stop the embedded PostgreSQL when this process is its last user).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        settings = config.load()
        observability.configure_logging(settings.log_format, settings.log_level)
        return _dispatch(args, settings)
    except errors.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (errors.UnknownTask, errors.PermanentJobError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (errors.MigrationError, errors.DatabaseUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DATABASE


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _run(func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, **kwargs: Any) -> Any:
    async def call() -> Any:
        return await func(*args, **kwargs)

    return anyio.run(call, backend="asyncio", backend_options={"use_uvloop": True})


def _dispatch(args: argparse.Namespace, settings: config.Settings) -> int:
    command = args.command or "run"
    if command == "run":
        summary = _run(service.run, settings, once=args.once)
        if args.once:
            print(json.dumps(summary.as_dict(), default=str))
        return EXIT_JOBS_FAILED if summary.failed else EXIT_OK
    if command == "migrate":
        applied = _run(service.migrate, settings)
        names = [f"{m.version:04d}_{m.name}" for m in applied]
        print(json.dumps({"applied": names}))
        return EXIT_OK
    if command == "enqueue":
        return _enqueue(args, settings)
    if command in ("pause", "resume"):
        changed = _run(
            service.set_paused,
            settings,
            args.queue,
            command == "pause",
            getattr(args, "reason", None),
        )
        print(json.dumps({"queue": args.queue, "paused": command == "pause", "changed": changed}))
        return EXIT_OK
    if command == "status":
        report = _run(service.status, settings)
        print(json.dumps(report, default=str, indent=2) if args.json else _format_status(report))
        return EXIT_OK
    if command == "demo":
        summary = _run(service.demo, settings, jobs=args.jobs)
        print(json.dumps(summary.as_dict(), default=str))
        return EXIT_JOBS_FAILED if summary.failed else EXIT_OK
    raise AssertionError(command)


def _enqueue(args: argparse.Namespace, settings: config.Settings) -> int:
    job_id = _run(
        service.enqueue,
        settings,
        args.task,
        args.payload,
        force=args.force,
        run_at=args.run_at,
        queue=args.queue,
        priority=args.priority,
        max_attempts=args.max_attempts,
        dedupe_key=args.dedupe_key,
        run_type="manual",
        requested_by=args.user_id,
    )
    if job_id is None:
        print(json.dumps({"job_id": None, "duplicate": True, "dedupe_key": args.dedupe_key}))
    else:
        print(json.dumps({"job_id": job_id}))
    return EXIT_OK


def _format_status(report: dict[str, Any]) -> str:
    lines = [f"{'queue':<16} {'task_type':<32} {'status':<10} {'jobs':>8}"]
    lines += [
        f"{r['queue']:<16} {r['task_type']:<32} {r['status']:<10} {r['jobs']:>8}"
        for r in report["counts"]
    ]
    if not report["counts"]:
        lines.append("(no jobs)")
    for row in report["oldest_pending"]:
        lines.append(
            f"oldest due job in {row['queue']!r}: {row['age_s']:.1f}s old ({row['due']} due)"
        )
    for row in report["paused_queues"]:
        why = f": {row['reason']}" if row["reason"] else ""
        lines.append(f"paused: queue {row['queue']!r} since {row['paused_at']}{why}")
    for row in report["unserved_task_types"]:
        lines.append(
            f"unserved: {row['pending']} pending {row['task_type']!r} job(s) have no "
            "handler in this worker"
        )
    return "\n".join(lines)
