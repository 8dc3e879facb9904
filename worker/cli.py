"""`python -m worker`: argparse -> Settings -> service. No logic lives here."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import anyio

from worker import __version__, config, errors, names, observability, service, values
from worker.admin import jobs as admin_jobs
from worker.admin import queues as admin_queues
from worker.admin import schedules as admin_schedules
from worker.admin import status as admin_status
from worker.admin.store import Actor, AdminStore, JobRequest
from worker.registry import Registry

_MAX_DEDUPE_KEY_CHARS = 512  # job_queue_dedupe_key_check
# A refusal is one line, and echoes input only in part (values.cut): whatever an error
# carries, no line is longer than this.
_MAX_ERROR_CHARS = 1000
_MAX_USAGE_ERROR_CHARS = 300

EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3  # also a fatal database fault in a running daemon (errors.DatabaseFault)

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
  python -m worker migrate --reference   ... and the bundled handlers' reference tables
  python -m worker enqueue echo --payload '{"message": "hi"}'
  python -m worker status                counts by queue, task type and status
  python -m worker pause mail --reason "provider outage"   (then: resume mail)
  python -m worker schedules list        recurring jobs: next run, last result
  python -m worker demo                  enqueue demo jobs and drain them

exit codes: 0 ok; 1 a job failed for good (--once, demo); 2 bad usage, settings or input;
3 the database could not be reached or migrated, or refuses the worker (a table, column or
function missing, a permission revoked: the daemon stops, it cannot mend that itself).
"""


def _job_ids_arg(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and 1 <= int(part) < 2**63 for part in parts) or len(parts) > 1000:
        shown = text if len(text) <= 64 else text[:64] + "…"
        raise argparse.ArgumentTypeError(f"{shown!r}: job ids separated by commas, such as 12,13")
    return tuple(int(part) for part in parts)


def _json_arg(text: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError, and numbers past Python's digit limit
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise argparse.ArgumentTypeError("not valid JSON here: nested too deeply") from None
    problem = values.jsonb_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    if not isinstance(value, dict):
        kind = "null" if value is None else type(value).__name__
        raise argparse.ArgumentTypeError(
            f"a payload is a JSON object (got {kind}): pass {{}} for an empty one"
        )
    return value


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; JSON (and jsonb) has no such values.
    raise argparse.ArgumentTypeError(f"not valid JSON: {name} is not a JSON value")


def _text_arg(text: str) -> str:
    problem = values.text_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{values.shown(text)} {problem}")
    return text


def _dedupe_key_arg(text: str) -> str:
    if len(text) > _MAX_DEDUPE_KEY_CHARS:
        raise argparse.ArgumentTypeError(f"longer than {_MAX_DEDUPE_KEY_CHARS} characters")
    return _text_arg(text)


def _task_arg(text: str) -> str:
    if not names.is_task_type(text):
        raise argparse.ArgumentTypeError(
            f"invalid task type {values.shown(text)}: use {names.TASK_TYPE_RULE}"
        )
    return text


def _datetime_arg(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{values.shown(text)} is not an ISO 8601 time such as 2026-11-22T08:00:00+00:00"
        ) from None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
        raise argparse.ArgumentTypeError(f"{values.shown(text)} is out of range") from None
    return value


def _name_arg(text: str) -> str:
    if not names.is_queue(text):
        raise argparse.ArgumentTypeError(
            f"invalid queue name {values.shown(text)}: use {names.QUEUE_RULE}"
        )
    return text


def _schedule_arg(text: str) -> str:
    if not names.is_schedule(text):
        raise argparse.ArgumentTypeError(
            f"invalid schedule name {values.shown(text)}: use {names.SCHEDULE_RULE}"
        )
    return text


def _uuid_arg(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{values.shown(text)} is not a UUID") from None


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{values.shown(text)} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    """argparse, except that a refused argument is one line on stderr (the usage block only
    with --help) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        # "unrecognized arguments: ..." lists them all, whatever their length.
        text = values.cut(message, _MAX_USAGE_ERROR_CHARS)
        _print_error(errors.WorkerError(f"{self.prog}: {text} (see --help)"))
        raise SystemExit(EXIT_USAGE)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse quotes a refused choice whole.
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(repr, action.choices))
            shown = values.shown(value) if isinstance(value, str) else repr(value)
            raise argparse.ArgumentError(action, f"invalid choice: {shown} (choose from {choices})")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # `--queue=--` gives the option the value "--" (a valid queue name); argparse up to
        # 3.12 drops it as if it were the end-of-options marker and stores [] unchecked.
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m worker",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"worker {__version__}")
    _add_run_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_options(commands.add_parser("run", help="run as a daemon (the default)"))
    commands.add_parser("migrate", help="apply pending schema migrations").add_argument(
        "--reference",
        action="store_true",
        help="also create the reference tables the bundled handlers use (never needed by "
        "an app that has its own tables)",
    )
    _add_enqueue(commands)
    _add_schedules(commands)
    pause = commands.add_parser("pause", help="stop every worker claiming from a queue")
    pause.add_argument("queue", type=_name_arg, help="the queue's name")
    pause.add_argument("--reason", type=_text_arg, help="shown by `status` and in job_queue_pauses")
    resume = commands.add_parser("resume", help="let workers claim from a paused queue again")
    resume.add_argument("queue", type=_name_arg, help="the queue's name")
    status = commands.add_parser("status", help="job counts, oldest pending age, unserved types")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    demo = commands.add_parser("demo", help="enqueue demo jobs, then drain them like --once")
    demo.add_argument(
        "--jobs",
        type=_int_range(1, 100_000),
        default=20,
        help="how many echo jobs to enqueue (default 20)",
    )
    _add_job_commands(commands)
    _add_serve(commands)
    _add_import_pg_cron(commands)
    return parser


_IMPORT_DESCRIPTION = """\
Bring an app's pg_cron jobs over as native schedules. Run it with the DATABASE_URL of
pg_cron's own database (cron.database_name). Each job of cron.job becomes:
  select job_queue_enqueue(...)   a schedule of that task
  select [schema.]fn()            a call_function schedule (allow the function in
                                  HANDLERS_CALL_FUNCTIONS)
  select net.http_post(...)       a call_endpoint schedule and an endpoint for
                                  HANDLERS_ENDPOINTS (Vault lookups resolved)
Anything else is listed as not convertible, with why. Without --apply it prints the plan
and changes nothing. With --apply each job is moved in its own transaction (the schedule
created, an audit row written, cron.unschedule called), and the endpoint settings, secrets
included, are printed once on stdout: they are stored nowhere else.
"""


def _add_import_pg_cron(commands: Any) -> None:
    command = commands.add_parser(
        "import-pg-cron",
        help="convert pg_cron jobs into schedules (a dry run unless --apply)",
        description=_IMPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("--apply", action="store_true", help="convert and unschedule them")
    command.add_argument(
        "--job",
        type=_int_range(1, 2**63 - 1),
        action="append",
        help="only this cron.job id (repeatable)",
    )
    command.add_argument(
        "--actor", type=_name_arg, help="who to record in the audit rows (default: cli:<user>)"
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once",
        action="store_true",
        help="one cron-style pass: fire due schedule ticks, rescue, prune, drain every due "
        "job, print a JSON summary and exit",
    )
    parser.add_argument(
        "--max-jobs", type=_int_range(1, 10_000_000), help="with --once: claim at most N jobs"
    )
    parser.add_argument(
        "--task-type",
        type=_task_arg,
        action="append",
        help="with --once: only this task type (repeatable)",
    )
    parser.add_argument(
        "--queue", type=_name_arg, action="append", help="only this queue (repeatable)"
    )


def _add_job_commands(commands: Any) -> None:
    show = commands.add_parser("show", help="one job and its attempts (job_runs), as JSON")
    show.add_argument("job_id", type=_int_range(1, 2**63 - 1), help="job_queue.id")
    show.add_argument(
        "--runs", type=_int_range(1, 1000), default=20, help="attempts to show (default 20)"
    )
    for name, text in (
        ("retry", "put a failed or cancelled job back to pending, due now, with one more attempt"),
        ("cancel", "cancel a pending or running job (a running handler stops at its heartbeat)"),
    ):
        command = commands.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. Recorded in job_admin_audit with "
            "the actor cli:<your OS user> (or --actor), like the dashboard's actions.",
        )
        command.add_argument("job_id", type=_int_range(1, 2**63 - 1), help="job_queue.id")
        command.add_argument(
            "--actor", type=_name_arg, help="who to record in the audit row (default: cli:<user>)"
        )


_SERVE_DESCRIPTION = """\
Serve the worker's HTTP application without running the daemon: the JSON API (/api/v1,
with tokens from WORKER_API_TOKENS or Supabase access tokens), the admin dashboard
(/dashboard/, when WORKER_DASHBOARD_USERS is set), /health and /metrics. The API's drain
runs due jobs in this process: a deployment without a daemon calls it from a cron. The
daemon serves the same application when WORKER_HTTP_PORT is set.
"""

_SERVE_EPILOG = """\
settings:
  WORKER_API_TOKENS               JSON of named bearer tokens with scopes, e.g.
                                  '{"ci": {"token": "...", "scopes": ["enqueue"]}}'
  WORKER_API_JWT_SECRET           accept Supabase access tokens signed with this secret
  WORKER_DASHBOARD_USERS          name:password pairs, comma-separated (12+ characters)
  WORKER_DASHBOARD_SECURE_COOKIE  true when users reach it over HTTPS (a TLS proxy in front)

example:
  WORKER_DASHBOARD_USERS="alice:$(cat alice.pw)" python -m worker serve --port 8081
  then open http://127.0.0.1:8081/dashboard/

It listens on 127.0.0.1 unless told otherwise: to reach it from elsewhere, put a TLS proxy
in front rather than exposing plain HTTP.
"""


def _add_serve(commands: Any) -> None:
    for name, text in (
        ("serve", "serve the HTTP API, dashboard, /health and /metrics alone (no daemon)"),
        ("dashboard", "the same as serve"),
    ):
        serve = commands.add_parser(
            name,
            help=text,
            description=_SERVE_DESCRIPTION,
            epilog=_SERVE_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        serve.add_argument(
            "--host",
            help="address to listen on (default: WORKER_HTTP_HOST, which defaults to 127.0.0.1)",
        )
        serve.add_argument(
            "--port",
            type=_int_range(0, 65535),
            help="port to listen on (default: WORKER_HTTP_PORT, else 8080)",
        )


def _add_enqueue(commands: Any) -> None:
    enqueue = commands.add_parser(
        "enqueue",
        help="enqueue one job (a manual run)",
        description="Insert one job, recorded as run_type='manual'. The payload is checked "
        "against the handler's model first when this worker has that handler.",
    )
    enqueue.add_argument("task", type=_task_arg, help="task type, e.g. echo")
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
    enqueue.add_argument(
        "--dedupe-key", type=_dedupe_key_arg, help="skip if a live job already has this key"
    )
    enqueue.add_argument(
        "--force", action="store_true", help="allow a task type this worker has no handler for"
    )
    enqueue.add_argument(
        "--depends-on",
        type=_job_ids_arg,
        default=(),
        metavar="ID[,ID...]",
        help="jobs that must succeed first (the job waits until then)",
    )
    enqueue.add_argument(
        "--on-parent-failure",
        choices=("cancel", "run"),
        default="cancel",
        help="when a parent fails for good or is cancelled: cancel this job (default) or run it",
    )


def main(argv: Sequence[str] | None = None, *, received: Sequence[int] = ()) -> int:
    """`received`: stop signals that came while the process was importing, and keep coming
    there until the event loop takes them over (worker/__main__.py records them)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_jobs is not None and not args.once:
        parser.error("argument --max-jobs: only with --once")
    # The daemon and `serve` asked to stop before they ran have done as asked: exit 0, as
    # after a graceful stop. Later, their event loop acts on a stop signal (service.py):
    # until then the handler of worker/__main__.py records it. A one-off command (and
    # `--once`) stopped part way exits 128 + the signal, after its atexit handlers (they
    # stop the embedded PostgreSQL when this process is its last user).
    command = args.command or "run"
    in_loop = command in ("serve", "dashboard") or (command == "run" and not args.once)
    if received:
        return EXIT_OK if in_loop else 128 + received[0]
    if not in_loop:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        settings = config.load()
        observability.configure_logging(
            settings.log_format, settings.log_level, observability.Scrubber.from_settings(settings)
        )
        return _dispatch(args, settings, received)
    except _REFUSALS as exc:
        _print_error(exc)
        return EXIT_USAGE
    except (errors.MigrationError, errors.DatabaseUnavailable, errors.DatabaseFault) as exc:
        _print_error(exc)
        return EXIT_DATABASE
    except errors.WorkerError as exc:  # any other refusal the worker words itself
        _print_error(exc)
        return EXIT_USAGE


# Input, state or rights refused: one line and exit code 2 (README "Command line").
_REFUSALS = (
    errors.ConfigError,
    errors.UnknownTask,
    errors.PermanentJobError,
    errors.InvalidInput,
    errors.NotFound,
    errors.Conflict,
    errors.ScheduleError,
    errors.PermissionDenied,
)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return str(os.getuid())


def _actor(args: argparse.Namespace) -> Actor:
    """Who acts from the command line: --actor, else cli:<OS user>."""
    return Actor(getattr(args, "actor", None) or f"cli:{_os_user()}")


def _print_error(exc: Exception) -> None:
    """`error: ...` as one line on stderr: names, cron strings and database messages may
    carry newlines or terminal control characters, which are shown escaped."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(exc))
    print(f"error: {values.cut(text, _MAX_ERROR_CHARS)}", file=sys.stderr)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _run(func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, **kwargs: Any) -> Any:
    async def call() -> Any:
        return await func(*args, **kwargs)

    return anyio.run(call, backend="asyncio", backend_options={"use_uvloop": True})


AdminCall = Callable[[AdminStore, Registry], Coroutine[Any, Any, Any]]


def _admin(settings: config.Settings, call: AdminCall) -> Any:
    """Run one admin use case on the database (worker.admin)."""

    async def session() -> Any:
        async with service.admin(settings) as (admin, registry):
            return await call(admin, registry)

    return _run(session)


def _dispatch(args: argparse.Namespace, settings: config.Settings, received: Sequence[int]) -> int:
    command = args.command or "run"
    if command == "run":
        return _run_command(args, settings, received)
    if command == "migrate":
        applied = _run(service.migrate, settings, reference=args.reference)
        shown = [
            f"{'' if m.migration_set == 'core' else m.migration_set + '/'}{m.version:04d}_{m.name}"
            for m in applied
        ]
        print(json.dumps({"applied": shown}))
        return EXIT_OK
    if command in ("serve", "dashboard"):
        _run(
            service.serve,
            settings,
            host=args.host,
            port=args.port,
            exiting=True,
            received=received,
        )
        return EXIT_OK
    if command == "demo":
        summary, report = _run(service.demo, settings, jobs=args.jobs)
        print(json.dumps(_once_output(summary, report), default=str))
        return EXIT_JOBS_FAILED if summary.failed else EXIT_OK
    if command == "schedules":
        return _schedules(args, settings)
    if command == "import-pg-cron":
        return _import_pg_cron(args, settings)
    return _admin_command(command, args, settings)


def _import_pg_cron(args: argparse.Namespace, settings: config.Settings) -> int:
    from worker.admin import pgcron  # noqa: PLC0415 - pglast, needed by this command only

    actor = _actor(args).name

    async def convert(admin: AdminStore, _: Registry) -> Any:
        async with admin.pool.acquire() as conn:
            plan = await pgcron.plan(conn, job_ids=args.job)
            if not args.apply:
                return plan, None
            return plan, await pgcron.apply(conn, plan, actor)

    plan, report = _admin(settings, convert)
    if report is None:
        print(pgcron.format_plan(plan))
        print(
            f"dry run: nothing changed; run with --apply to import {len(plan.conversions)} job(s)"
        )
        return EXIT_OK
    print(pgcron.format_report(report))
    if report.functions:
        print(f"allow in HANDLERS_CALL_FUNCTIONS: {pgcron.call_functions_setting(report)}")
    if report.endpoints:
        print("add to HANDLERS_ENDPOINTS (it holds secrets, shown this once and stored nowhere):")
        print(pgcron.endpoint_settings(report))
    return EXIT_JOBS_FAILED if report.failed else EXIT_OK


def _run_command(
    args: argparse.Namespace, settings: config.Settings, received: Sequence[int]
) -> int:
    summary, report = _run(
        service.run,
        settings,
        exiting=True,
        received=received,
        once=args.once,
        max_jobs=args.max_jobs,
        task_types=args.task_type,
        queues=args.queue,
    )
    if not args.once:
        return EXIT_OK  # a clean shutdown, whatever the jobs did (their outcomes are logged)
    print(json.dumps(_once_output(summary, report), default=str))
    return EXIT_JOBS_FAILED if summary.failed else EXIT_OK


def _once_output(summary: Any, report: service.OnceReport) -> dict[str, Any]:
    return {
        **summary.as_dict(),
        "ticks": report.ticks,
        "rescued": report.rescued,
        "pruned": {"jobs": report.pruned_jobs, "runs": report.pruned_runs},
    }


def _admin_command(command: str, args: argparse.Namespace, settings: config.Settings) -> int:
    actor = _actor(args)
    if command == "enqueue":
        job = JobRequest(
            task_type=args.task,
            payload=args.payload,
            run_at=args.run_at,
            queue=args.queue,
            priority=args.priority,
            max_attempts=args.max_attempts,
            dedupe_key=args.dedupe_key,
            requested_by=args.user_id,
            depends_on=args.depends_on,
            on_parent_failure=args.on_parent_failure,
        )
        if job.depends_on and job.dedupe_key is not None:
            raise errors.InvalidInput("--depends-on and --dedupe-key do not go together")
        # Refused before the database is touched: a typo is no reason to wait for it.
        admin_jobs.check_payload(
            service.load_handlers(settings), job.task_type, job.payload, force=args.force
        )
        done = _admin(
            settings,
            lambda admin, registry: admin_jobs.enqueue(
                admin, registry, actor, job, force=args.force
            ),
        )
        if done.created and job.depends_on:
            print(json.dumps({"job_id": done.job_id, "status": done.status}))
        elif done.created:
            print(json.dumps({"job_id": done.job_id}))
        else:
            print(
                json.dumps(
                    {"job_id": done.job_id, "duplicate": True, "dedupe_key": args.dedupe_key}
                )
            )
        return EXIT_OK
    if command == "show":
        print(
            _json(
                _admin(
                    settings, lambda admin, _: admin_jobs.show(admin, args.job_id, runs=args.runs)
                )
            )
        )
        return EXIT_OK
    if command in ("retry", "cancel"):
        change = admin_jobs.retry if command == "retry" else admin_jobs.cancel
        _admin(settings, lambda admin, _: change(admin, actor, args.job_id))
        print(json.dumps({"job_id": args.job_id, "action": command, "actor": actor.name}))
        return EXIT_OK
    if command in ("pause", "resume"):
        if command == "pause":
            changed = _admin(
                settings, lambda admin, _: admin_queues.pause(admin, actor, args.queue, args.reason)
            )
        else:
            changed = _admin(
                settings, lambda admin, _: admin_queues.resume(admin, actor, args.queue)
            )
        print(json.dumps({"queue": args.queue, "paused": command == "pause", "changed": changed}))
        return EXIT_OK
    if command == "status":
        report = _admin(settings, admin_status.report)
        print(json.dumps(report, default=str, indent=2) if args.json else _format_status(report))
        return EXIT_OK
    raise AssertionError(command)


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


# -- schedules ----------------------------------------------------------------------------

_SCHEDULE_EPILOG = """\
examples:
  python -m worker schedules list
  python -m worker schedules add nightly_report --cron '0 6 * * *' --timezone Europe/London \\
      --task call_endpoint --payload '{"endpoint": "report"}'
  python -m worker schedules set nightly_report --cron '30 6 * * 1-5'
  python -m worker schedules pause nightly_report     (then: resume nightly_report)
  python -m worker schedules history nightly_report --limit 5

cron: 5 fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly,
@monthly, @yearly; evaluated in the schedule's IANA timezone (default UTC).
missed: ticks no worker ran in time: latest (run the newest once; the default), skip
(run a tick only if at most WORKER_SCHEDULER_GRACE_S late), all (run each of them, at
most the newest WORKER_SCHEDULER_BACKFILL_MAX).
"""


def _add_schedules(commands: Any) -> None:
    group = commands.add_parser(
        "schedules",
        help="list, add, change, pause, resume, remove recurring jobs; their history",
        description="Recurring jobs (job_schedules). Changes apply to every worker.",
        epilog=_SCHEDULE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every schedule, its next run and last result")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add = actions.add_parser("add", help="create a schedule")
    add.add_argument("name", type=_schedule_arg, help="unique name, e.g. nightly_report")
    add.add_argument("--cron", required=True, help="e.g. '*/15 * * * *' or @daily")
    add.add_argument("--task", required=True, help="task type each tick enqueues")
    _add_schedule_options(add, defaults=True)
    add.add_argument("--paused", action="store_true", help="create it paused")
    change = actions.add_parser("set", help="change a schedule (a new cron re-times it)")
    change.add_argument("name", type=_schedule_arg, help="the schedule's name")
    change.add_argument("--cron", help="new cron expression")
    change.add_argument("--task", help="new task type")
    _add_schedule_options(change, defaults=False)
    for action, text in (
        ("pause", "stop enqueueing a schedule's ticks"),
        ("resume", "start again (ticks missed while paused are not run)"),
        ("remove", "delete a schedule (its jobs and history stay)"),
    ):
        actions.add_parser(action, help=text).add_argument(
            "name", type=_schedule_arg, help="the schedule's name"
        )
    history = actions.add_parser("history", help="a schedule's latest runs (job_runs)")
    history.add_argument("name", type=_schedule_arg, help="the schedule's name")
    history.add_argument("--limit", type=_int_range(1, 1000), default=20, help="default 20")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_schedule_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value: Any) -> Any:
        return value if defaults else None

    parser.add_argument("--payload", type=_json_arg, default=default({}), help="JSON object")
    parser.add_argument(
        "--timezone", default=default("UTC"), help="IANA name, e.g. Europe/London (new: UTC)"
    )
    parser.add_argument("--queue", default=default("default"), help="new: 'default'")
    parser.add_argument(
        "--priority", type=_int_range(-1000, 1000), default=default(0), help="new: 0"
    )
    parser.add_argument("--max-attempts", type=_int_range(1, 1000), help="default: the handler's")
    parser.add_argument(
        "--missed", choices=("latest", "skip", "all"), default=default("latest"), help="new: latest"
    )
    parser.add_argument(
        "--force", action="store_true", help="allow a task type this worker has no handler for"
    )


def _schedules(args: argparse.Namespace, settings: config.Settings) -> int:
    actor, name = _actor(args), str(getattr(args, "name", ""))
    if args.action == "list":
        rows = _admin(settings, admin_schedules.list_all)
        print(_json(rows) if args.json else _format_schedules(rows))
    elif args.action == "history":
        runs = _admin(settings, lambda admin, _: admin_schedules.history(admin, name, args.limit))
        print(_json(runs) if args.json else _format_history(args.name, runs))
    elif args.action == "remove":
        _admin(settings, lambda admin, _: admin_schedules.remove(admin, actor, name))
        print(json.dumps({"removed": args.name}))
    elif args.action in ("pause", "resume"):
        active = args.action == "resume"
        row = _admin(
            settings,
            lambda admin, registry: admin_schedules.set_active(
                admin, registry, actor, name, active
            ),
        )
        print(_json({"schedule": row}))
    else:
        print(_json({"schedule": _change_schedule(args, settings, actor)}))
    return EXIT_OK


def _change_schedule(args: argparse.Namespace, settings: config.Settings, actor: Actor) -> Any:
    fields = {
        "cron": args.cron,
        "task_type": args.task,
        "payload": args.payload,
        "timezone": args.timezone,
        "queue": args.queue,
        "priority": args.priority,
        "max_attempts": args.max_attempts,
        "missed": args.missed,
    }
    if args.action == "add":
        return _admin(
            settings,
            lambda admin, registry: admin_schedules.create(
                admin,
                registry,
                actor,
                args.name,
                active=not args.paused,
                force=args.force,
                **fields,
            ),
        )
    changes = {key: value for key, value in fields.items() if value is not None}
    if not changes:
        raise errors.ScheduleError("nothing to change: pass --cron, --task, --payload, ...")
    return _admin(
        settings,
        lambda admin, registry: admin_schedules.update(
            admin, registry, actor, args.name, changes, force=args.force
        ),
    )


def _json(value: Any) -> str:
    return json.dumps(value, default=str, indent=2)


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M}"


def _format_schedules(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'name':<28} {'state':<14} {'cron':<14} {'timezone':<18} {'task_type':<28} "
        f"{'next run (UTC)':<17} last run"
    ]
    for r in rows:
        state = "active" if r["active"] else f"paused ({r['paused_by']})"
        task = r["task_type"] + ("" if r["served_here"] else " *")
        last = "-"
        if r["last_run_status"]:
            last = f"{r['last_run_status']} {_when(r['last_run_finished_at'])}"
        elif r["last_job_status"]:
            last = f"job {r['last_job_id']} {r['last_job_status']}"
        lines.append(
            f"{r['name']:<28} {state:<14} {r['cron']:<14} {r['timezone']:<18} {task:<28} "
            f"{_when(r['next_tick_at']):<17} {last}"
        )
    if not rows:
        lines.append("(no schedules)")
    if any(not r["served_here"] for r in rows):
        lines.append("* no handler for this task type in this worker")
    return "\n".join(lines)


def _format_history(name: str, runs: list[dict[str, Any]]) -> str:
    lines = [
        f"{'started (UTC)':<17} {'job':>8} {'try':>3} {'status':<10} {'reason':<16} "
        f"{'ms':>7} {'rows':>6} notes / error"
    ]
    for r in runs:
        text = (r["error"] or r["notes"] or "").replace("\n", " ")
        lines.append(
            f"{_when(r['started_at']):<17} {r['job_id']:>8} {r['attempt']:>3} "
            f"{r['status']:<10} {r['reason'] or '-':<16} {r['duration_ms']:>7} "
            f"{'-' if r['rows_affected'] is None else r['rows_affected']:>6} {text[:80]}"
        )
    if not runs:
        lines.append(f"(no runs of schedule '{name}' yet)")
    return "\n".join(lines)
