"""Every argument the CLI refuses: one line on stderr, exit code 2, no usage block, and a
refused value echoed only in part. Driven in-process: parsing refuses before any database
is touched."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from worker import cli

BIG = "x" * 10_000_000
NUL = "a\x00b"

# (argv, a fragment of the one line)
REFUSED: list[tuple[list[str], str]] = [
    (["bogus"], "invalid choice: 'bogus'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--max-jobs", "5"], "--max-jobs: only with --once"),
    (["--once", "--max-jobs", "0"], "must be between 1 and 10000000"),
    (["--once", "--max-jobs", "x"], "'x' is not an integer"),
    (["--once", "--task-type", "bad type"], "invalid task type 'bad type'"),
    (["--queue", "bad queue"], "invalid queue name 'bad queue'"),
    (["run", "--queue", ""], "invalid queue name ''"),
    (["run", "--max-jobs", "3"], "--max-jobs: only with --once"),
    (["migrate", "extra"], "unrecognized arguments: extra"),
    (["migrate", "--bogus"], "unrecognized arguments: --bogus"),
    (["enqueue"], "the following arguments are required: task"),
    (["enqueue", "bad task"], "invalid task type 'bad task'"),
    (["enqueue", "echo", "--payload", "[]"], "a payload is a JSON object (got list)"),
    (["enqueue", "echo", "--payload=[]"], "a payload is a JSON object (got list)"),
    (["enqueue", "echo", "--payload", "null"], "a payload is a JSON object (got null)"),
    (["enqueue", "echo", "--payload", '"text"'], "a payload is a JSON object (got str)"),
    (["enqueue", "echo", "--payload", "-1"], "a payload is a JSON object (got int)"),
    (["enqueue", "echo", "--payload", "{nope"], "not valid JSON"),
    (["enqueue", "echo", "--payload", '{"a": NaN}'], "NaN is not a JSON value"),
    (["enqueue", "echo", "--payload", '{"a": "\\u0000"}'], "NUL character"),
    (["enqueue", "echo", "--payload"], "argument --payload: expected one argument"),
    (["enqueue", "echo", "--run-at", "tomorrow"], "is not an ISO 8601 time"),
    (["enqueue", "echo", "--run-at", "0001-01-01T00:00+01:00"], "is out of range"),
    (["enqueue", "echo", "--queue", "bad queue"], "invalid queue name"),
    (["enqueue", "echo", "--priority", "5000"], "must be between -1000 and 1000"),
    (["enqueue", "echo", "--priority", "x"], "'x' is not an integer"),
    (["enqueue", "echo", "--max-attempts", "0"], "must be between 1 and 1000"),
    (["enqueue", "echo", "--user-id", "bob"], "'bob' is not a UUID"),
    (["enqueue", "echo", "--dedupe-key", "k" * 513], "longer than 512 characters"),
    (["enqueue", "echo", "--dedupe-key", NUL], "NUL character"),
    (["schedules"], "the following arguments are required: ACTION"),
    (["schedules", "bogus"], "invalid choice: 'bogus'"),
    (["schedules", "list", "--bogus"], "unrecognized arguments: --bogus"),
    (["schedules", "add", "nightly"], "the following arguments are required: --cron, --task"),
    (["schedules", "add", "bad name", "--cron", "@daily", "--task", "echo"], "invalid schedule"),
    (["schedules", "add", "n", "--cron", "@daily", "--task", "t", "--missed", "never"], "never"),
    (["schedules", "add", "n", "--cron", "@daily", "--task", "t", "--priority", "x"], "'x'"),
    (["schedules", "add", "n", "--cron", "@daily", "--task", "t", "--payload", "[]"], "object"),
    (["schedules", "set", "bad name"], "invalid schedule name"),
    (["schedules", "set", "n", "--max-attempts", "0"], "must be between 1 and 1000"),
    (["schedules", "pause"], "the following arguments are required: name"),
    (["schedules", "resume", "bad name"], "invalid schedule name"),
    (["schedules", "remove"], "the following arguments are required: name"),
    (["schedules", "history", "n", "--limit", "0"], "must be between 1 and 1000"),
    (["pause"], "the following arguments are required: queue"),
    (["pause", "bad queue"], "invalid queue name"),
    (["pause", "default", "--reason", NUL], "NUL character"),
    (["resume", "bad queue"], "invalid queue name"),
    (["status", "--bogus"], "unrecognized arguments: --bogus"),
    (["demo", "--jobs", "0"], "must be between 1 and 100000"),
    (["demo", "--jobs", "100001"], "must be between 1 and 100000"),
    (["show", "x"], "'x' is not an integer"),
    (["show", "0"], "must be between 1 and"),
    (["show", "1", "--runs", "0"], "must be between 1 and 1000"),
    (["retry", "--actor", "ops"], "the following arguments are required: job_id"),
    (["retry", "1", "--actor", "bad actor"], "invalid queue name 'bad actor'"),
    (["cancel", "-5"], "argument job_id: must be between 1 and"),
    (["serve", "--port", "70000"], "must be between 0 and 65535"),
    (["dashboard", "--port", "x"], "'x' is not an integer"),
    (["import-pg-cron", "--job", "0"], "must be between 1 and"),
    (["import-pg-cron", "--actor", "x y"], "invalid queue name 'x y'"),
    # 10 MB values: refused with a prefix of them
    ([BIG], "invalid choice: 'xxx"),
    (["--" + BIG], "unrecognized arguments: --xxx"),
    (["enqueue", BIG], "invalid task type 'xxx"),
    (["enqueue", "echo", "--payload", BIG], "not valid JSON"),
    (["enqueue", "echo", "--user-id", BIG], "is not a UUID"),
    (["schedules", "add", BIG, "--cron", "@daily", "--task", "t"], "invalid schedule name"),
    (["schedules", "add", "n", "--cron", "@daily", "--task", "t", "--missed", BIG], "choice"),
    (["show", BIG], "is not an integer"),
]


@pytest.fixture(autouse=True)
def _signals_restored() -> Iterator[None]:
    """cli.main takes SIGTERM and SIGINT over; give them back to pytest."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _id(case: tuple[list[str], str]) -> str:
    return " ".join(arg if len(arg) < 30 else f"<{len(arg)} chars>" for arg in case[0]) or "-"


@pytest.mark.parametrize(("argv", "fragment"), REFUSED, ids=map(_id, REFUSED))
def test_a_refused_argument_is_one_short_line_and_exit_2(
    argv: list[str],
    fragment: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/never_reached")
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err[:500]
    assert err.startswith("error: "), err[:500]
    assert "usage:" not in err
    assert fragment in err, err[:500]
    assert len(err) < 1000


def test_help_still_prints_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["enqueue", "--help"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")
