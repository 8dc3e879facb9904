"""Any value in any WORKER_* variable: the worker starts, or stops with one line naming the
variable (exit code 2), never a traceback, and never shows a secret."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.property import inprocess, strategies
from tests.support.proc import run_cli
from worker import config, errors

DB_PASSWORD = "canary-db-pw-4821"
SENTRY_KEY = "canarysentrykey0123456789abcdef"
SECRETS = {
    "DATABASE_URL": f"postgresql://worker:{DB_PASSWORD}@127.0.0.1:1/none",
    "SENTRY_DSN": f"https://{SENTRY_KEY}@o1.ingest.sentry.example/42",
}
# Importing arbitrary module names could run anything: WORKER_HANDLER_MODULES gets a list.
VARIABLES = sorted(
    {config._variable(name) for name in config.Settings.model_fields} - {"WORKER_HANDLER_MODULES"}
)


def _env_safe(text: str) -> bool:
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


values = st.one_of(
    strategies.hostile_text,
    st.sampled_from(["-1", "0", "1e309", "nan", "inf", "-inf", "1e300", "99999999999999999999"]),
    st.sampled_from(["true", "off", "", " ", "1,2", "a,,b", "json", "DEBUG", "65536", "0.0"]),
    st.integers().map(str),
    st.floats().map(str),
).filter(_env_safe)


def _assert_one_clean_line(message: str, variable: str) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{variable}: "), message
    assert DB_PASSWORD not in message and SENTRY_KEY not in message, message


@strategies.examples(300)
@given(variable=st.sampled_from(VARIABLES), value=values)
def test_load_returns_settings_or_one_line_naming_the_variable(variable: str, value: str) -> None:
    if variable in SECRETS:  # a broken secret must not be shown either
        value = value + SECRETS[variable]
    with inprocess.environment({**SECRETS, variable: value}):
        try:
            config.load()
        except errors.ConfigError as exc:
            _assert_one_clean_line(str(exc), variable)


@strategies.examples(40)
@given(variable=st.sampled_from(VARIABLES), value=values)
def test_a_command_with_any_setting_exits_2_with_one_line_and_no_secret(
    variable: str, value: str
) -> None:
    """`enqueue` of a task no handler serves refuses before touching the database: exit 2
    either way, with the setting's error or the unknown task's."""
    if variable in SECRETS:
        value = value + SECRETS[variable]
    run = inprocess.run_cli(
        ["enqueue", "no_such_task_here"],
        None,
        **{**SECRETS, variable: value, "WORKER_HANDLER_MODULES": "handlers.bundled"},
    )
    line = run.assert_one_line_refusal()
    assert DB_PASSWORD not in run.stderr and SENTRY_KEY not in run.stderr
    assert run.stdout == ""
    assert line.startswith((f"error: {variable}: ", "error: no handler for task type")), line


@pytest.mark.parametrize("modules", ["..x", ".", "os;rm -rf /", "a b", "1abc", "x-" * 500, "a.-b"])
def test_handler_modules_that_are_not_module_names_are_refused(modules: str) -> None:
    environment = inprocess.environment({"WORKER_HANDLER_MODULES": modules})
    with environment, pytest.raises(errors.ConfigError) as refused:
        config.load()
    _assert_one_clean_line(str(refused.value), "WORKER_HANDLER_MODULES")


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "env", "code", "variable"),
    [
        # --help reads no setting: it works whatever they say
        (["--help"], {"WORKER_CONCURRENCY": "many", "WORKER_LOG_LEVEL": "\x1b[31m"}, 0, None),
        (["status"], {"WORKER_RETAIN_RUNS_DAYS": "1e300"}, 2, "WORKER_RETAIN_RUNS_DAYS"),
        (
            ["status"],
            {"DATABASE_URL": f"postgresql://worker:{DB_PASSWORD}@127.0.0.1:notaport/x"},
            2,
            "DATABASE_URL",
        ),
        (["status"], {"SENTRY_DSN": f"{SENTRY_KEY} is no dsn"}, 2, "SENTRY_DSN"),
    ],
)
def test_worker_process_with_hostile_settings(
    args: list[str], env: dict[str, str], code: int, variable: str | None
) -> None:
    done = run_cli(*args, dsn=SECRETS["DATABASE_URL"], **env)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert DB_PASSWORD not in done.stderr + done.stdout
    assert SENTRY_KEY not in done.stderr + done.stdout
    if variable is None:
        assert done.stdout.startswith("usage: python -m worker")
    else:
        assert done.stderr.startswith(f"error: {variable}: ")
        assert done.stderr.count("\n") == 1
