"""import-pg-cron without a database: reading commands, planning, the dry-run table.

The commands are the apps' own (their documents 002, 003 and 004): pasted here verbatim where
their documents give a `cron.schedule(...)` command, and in the shape the game-platform
app's `create_cron_job()` writes for its `job_queue_enqueue` jobs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker import errors
from worker.admin import pgcron

# seed 002 (trading app): its stats refresh, run by pg_cron every 5 minutes.
STATS_REFRESH = "SELECT refresh_issuer_stats_cache();"
# seed 003 (TTS app), verbatim: the weekly health check and the daily usage rollup.
ADAPTER_CHECK = """
  SELECT net.http_post(
    url:='<YOUR_SUPABASE_FUNCTIONS_URL>/adapter-health',
    headers:='{"Content-Type": "application/json", "Authorization": "Bearer <YOUR_SUPABASE_SERVICE_ROLE_KEY>"}', -- Securely call the function
    body:='{}'::jsonb
  );
  """  # noqa: E501
USAGE_ROLLUP = " SELECT public.rollup_daily_usage(); "
# seed 004 (game platform), verbatim: the hourly sync, its URL and key read from Vault.
VAULT_SYNC = """
         select
           net.http_post(
             url := (select decrypted_secret from vault.decrypted_secrets where name = 'project_url') || '/functions/v1/sync',
             headers := jsonb_build_object(
               'Content-Type','application/json',
               'Authorization','Bearer ' || (select decrypted_secret from vault.decrypted_secrets where name = 'service_role_key')
             ),
             timeout_milliseconds := 10000
           );
       """  # noqa: E501
# seed 004: what its create_cron_job(job_name, schedule, task_type, payload, max_attempts)
# schedules.
GAME_SYNC = (
    "select public.job_queue_enqueue('game_platform_sync', "
    '\'{"dryRun": false, "coachId": null}\'::jsonb, max_attempts => 3)'
)

PROJECT_URL = "https://abcdefgh.supabase.co"
SERVICE_KEY = "eyJhbGciOiJIUzI1NiJ9.service-role-test-value"


def job(jobid: int, command: str, **fields: Any) -> pgcron.CronJob:
    values: dict[str, Any] = {
        "jobname": f"job-{jobid}",
        "schedule": "0 * * * *",
        "database": "app",
        "username": "postgres",
        "active": True,
    }
    values.update(fields)
    return pgcron.CronJob(jobid=jobid, command=command, **values)


def context(**fields: Any) -> pgcron.Context:
    values: dict[str, Any] = {
        "database": "app",
        "role": "postgres",
        "timezone": "GMT",
        "secrets": {"project_url": PROJECT_URL, "service_role_key": SERVICE_KEY},
    }
    values.update(fields)
    return pgcron.Context(**values)


def only_step(command: str, ctx: pgcron.Context | None = None, **fields: Any) -> pgcron.Step:
    plan = pgcron.build_plan(ctx or context(), [job(1, command, **fields)])
    assert len(plan.steps) == 1
    return plan.steps[0]


def converted(command: str, **fields: Any) -> pgcron.Conversion:
    step = only_step(command, **fields)
    assert isinstance(step, pgcron.Conversion), step
    return step


def refused(command: str, ctx: pgcron.Context | None = None, **fields: Any) -> str:
    step = only_step(command, ctx, **fields)
    assert isinstance(step, pgcron.Refusal), step
    return step.reason


# -- reading commands ------------------------------------------------------------------------


def test_the_seed_function_calls_read_as_call_function() -> None:
    assert pgcron.read_command(STATS_REFRESH) == pgcron.CallFunction("refresh_issuer_stats_cache")
    assert pgcron.read_command(USAGE_ROLLUP) == pgcron.CallFunction("public.rollup_daily_usage")
    # Unquoted names fold to lower case, as PostgreSQL reads them.
    assert pgcron.read_command("select Public.Refresh_Metric_Views()") == pgcron.CallFunction(
        "public.refresh_metric_views"
    )


def test_the_vault_form_reads_its_url_and_headers_by_secret_name() -> None:
    command = pgcron.read_command(VAULT_SYNC)
    assert isinstance(command, pgcron.HttpPost)
    assert command.url == pgcron.Text((pgcron.Vault("project_url"), "/functions/v1/sync"))
    assert command.headers == (
        ("Content-Type", pgcron.Text(("application/json",))),
        ("Authorization", pgcron.Text(("Bearer ", pgcron.Vault("service_role_key")))),
    )
    assert (command.body, command.params, command.timeout_ms) == ({}, (), 10000)
    assert command.vaults() == ("project_url", "service_role_key")


def test_a_headers_literal_is_read_as_json() -> None:
    command = pgcron.read_command(ADAPTER_CHECK)
    assert isinstance(command, pgcron.HttpPost)
    assert command.url.constant() == "<YOUR_SUPABASE_FUNCTIONS_URL>/adapter-health"
    assert dict(command.headers)["Authorization"].constant() == (
        "Bearer <YOUR_SUPABASE_SERVICE_ROLE_KEY>"
    )


@pytest.mark.parametrize(
    "command",
    [
        GAME_SYNC,
        # positionally, with `=>` or `:=`, and with jsonb_build_object for the payload
        "select job_queue_enqueue('game_platform_sync', '{\"dryRun\": false, \"coachId\": null}',"
        " null, 'default', 0, 3)",
        "select job_queue_enqueue(task_type := 'game_platform_sync', max_attempts := 3,"
        " payload := jsonb_build_object('dryRun', false, 'coachId', null))",
        "SELECT public.job_queue_enqueue('game_' || 'platform_sync',"
        " pg_catalog.jsonb_build_object('dryRun', false, 'coachId', null), max_attempts => 3);",
    ],
)
def test_job_queue_enqueue_reads_in_every_argument_style(command: str) -> None:
    assert pgcron.read_command(command) == pgcron.Enqueue(
        task_type="game_platform_sync",
        payload={"dryRun": False, "coachId": None},
        queue="default",
        priority=0,
        max_attempts=3,
        dropped=(),
    )


def test_job_queue_enqueue_keeps_queue_and_priority_and_says_what_it_drops() -> None:
    command = pgcron.read_command(
        "select job_queue_enqueue('refresh_metrics', '{\"views\": [\"a\"]}'::jsonb, now(),"
        " 'reports', -5, dedupe_key => 'pg_cron:refresh_metrics')"
    )
    assert isinstance(command, pgcron.Enqueue)
    assert (command.task_type, command.payload, command.queue, command.priority) == (
        "refresh_metrics",
        {"views": ["a"]},
        "reports",
        -5,
    )
    assert [note.split(":")[0] for note in command.dropped] == [
        "run_at now() dropped",
        "dedupe_key 'pg_cron",
    ]
    assert "deduplicates each tick" in command.dropped[1]


def test_jsonb_build_object_values_keep_their_types() -> None:
    command = pgcron.read_command(
        "select job_queue_enqueue('t', jsonb_build_object('n', 5, 'x', 1.5, 'big',"
        " 12345678901234567890, 'on', true, 'none', null, 'text', 'a' || 'b',"
        " 'nested', jsonb_build_object('list', '[1, 2]'::jsonb)))"
    )
    assert isinstance(command, pgcron.Enqueue)
    assert command.payload == {
        "n": 5,
        "x": 1.5,
        "big": 12345678901234567890,
        "on": True,
        "none": None,
        "text": "ab",
        "nested": {"list": [1, 2]},
    }


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("", "an empty command"),
        ("-- nothing but a comment", "an empty command"),
        ("select a(); select b();", "2 statements, not one"),
        ("delete from job_queue where status = 'succeeded'", "a DELETE, not a select"),
        ("refresh materialized view concurrently stats", "a REFRESH MATERIALIZED VIEW"),
        ("call do_things()", "a CALL (a procedure)"),
        ("vacuum analyze job_queue", "a VACUUM"),
        ("select 1", "a select of a constant, not of a function"),
        ("select a(), b()", "a select of 2 values"),
        ("select f() from t", "a select with FROM"),
        ("select f() where true", "a select with WHERE"),
        ("with x as (select 1) select f()", "a select with WITH"),
        ("select count(*)", "the function count() with (*)"),
        ("select refresh_stats(7)", "refresh_stats() with arguments"),
        ('select "RefreshStats"()', 'quoted function name "RefreshStats"'),
        ("select net.http_get('https://x.test')", "only net.http_post converts"),
        ("select cron.schedule('x', '* * * * *', 'select 1')", "cron.schedule(): a pg_cron"),
        ("select job_queue_enqueue()", "without a task type"),
        ("select job_queue_enqueue(null)", "with a null task type"),
        ("select job_queue_enqueue('t', colour => 'red')", "has no parameter 'colour'"),
        ("select job_queue_enqueue(task_type => 't', '{}')", "a positional argument after a named"),
        ("select job_queue_enqueue('t', task_type => 'u')", "task_type given twice"),
        ("select job_queue_enqueue('t', '{}', null, 'q', 0, 1, 'k', 'extra')", "at most 7"),
        ("select job_queue_enqueue('t', '[1]')", "payload is not a JSON object"),
        ("select job_queue_enqueue('t', '{nope')", "a JSON literal that does not parse"),
        ("select job_queue_enqueue('t', run_at => now() + interval '5 minutes')", "run_at other"),
        ("select job_queue_enqueue('t', priority => '5')", "text where a number is expected"),
        ("select job_queue_enqueue('t', queue => 5)", "a constant of the wrong type"),
        ("select job_queue_enqueue('t', '{}'::jsonb || '{}'::jsonb)", "an operator where only"),
        ("select job_queue_enqueue('t', '{}'::xml)", "a cast to xml where jsonb"),
        (
            "select job_queue_enqueue('t', jsonb_build_object('k', (select decrypted_secret"
            " from vault.decrypted_secrets where name = 'k')))",
            "a Vault secret in payload",
        ),
        ("select job_queue_enqueue('t', jsonb_build_object('k'))", "key, value pairs"),
        ("select job_queue_enqueue('t', jsonb_build_object(1, 2))", "a constant of the wrong"),
        ("select job_queue_enqueue('t', to_jsonb(now()))", "only jsonb_build_object converts"),
        ("select job_queue_enqueue(current_setting('app.task'))", "the function current_setting"),
        ("select job_queue_enqueue('a' || null)", "|| with a null"),
        ("select net.http_post(body := '{}')", "without a url"),
        ("select net.http_post(url := current_setting('app.url'))", "current_setting()"),
        ("select net.http_post('https://x.test', '[1]')", "body is not a JSON object"),
        (
            "select net.http_post('https://x.test', jsonb_build_object('key', (select"
            " decrypted_secret from vault.decrypted_secrets where name = 'k')))",
            "a Vault secret in body",
        ),
        ("select net.http_post('https://x.test', params := '{\"a\": 1}')", "params are not"),
        ("select net.http_post('https://x.test', headers := '[]')", "headers are not a JSON"),
        ("select net.http_post('https://x.test', headers := '{\"a\": 1}')", "header 'a' is not"),
        (
            "select net.http_post('https://x.test', timeout_milliseconds := '5000')",
            "text where a number",
        ),
        (
            "select net.http_post((select secret from vault.secrets where name = 'u'))",
            "something other than vault.decrypted_secrets",
        ),
        (
            "select net.http_post((select decrypted_secret from vault.decrypted_secrets"
            " where name like 'u%'))",
            "not by name = '<literal>'",
        ),
        (
            "select net.http_post((select decrypted_secret from vault.decrypted_secrets"
            " where name = 'u' order by 1))",
            "a select with ORDER BY",
        ),
        (
            "select net.http_post((select description from vault.decrypted_secrets"
            " where name = 'u'))",
            "something other than decrypted_secret",
        ),
        (
            "select net.http_post((select decrypted_secret from vault.decrypted_secrets"
            " where name = current_user))",
            "not by name = '<literal>'",
        ),
        (
            "select net.http_post(url := 'https://x.test' || (select decrypted_secret from"
            " vault.decrypted_secrets s, pg_class where name = 'u'))",
            "something other than vault.decrypted_secrets",
        ),
    ],
)
def test_other_shapes_are_refused_with_the_reason(command: str, reason: str) -> None:
    with pytest.raises(errors.ScheduleError) as refusal:
        pgcron.read_command(command)
    assert reason in str(refusal.value)


def test_a_vault_lookup_may_name_its_table() -> None:
    command = pgcron.read_command(
        "select net.http_post((select s.decrypted_secret from vault.decrypted_secrets s"
        " where s.name = 'url'))"
    )
    assert isinstance(command, pgcron.HttpPost)
    assert command.url == pgcron.Text((pgcron.Vault("url"),))


def test_refusals_never_quote_the_command() -> None:
    # Commands holding a key, broken or in a shape that does not convert: the plan says
    # where the problem is, never what the command says.
    commands = [
        "select net.http_post('https://x.test', headers := '{\"Authorization\": \"sk-live-9f8e7d)",
        "select net.http_post('https://x.test', headers := '{\"Authorization\": sk-live-9f8e7d}')",
        "select f(sk-live-9f8e7d)",
        "select net.http_post('https://x.test', headers := jsonb_build_object('Authorization',"
        " 'Bearer sk-live-9f8e7d', 'X-Api-Key', 'sk-live-9f8e7d'))",
    ]
    plan = pgcron.build_plan(context(), [job(n, c) for n, c in enumerate(commands, 1)])
    assert len(plan.refusals) == len(commands)
    assert "9f8e7d" not in pgcron.format_plan(plan)


# -- converting jobs -------------------------------------------------------------------------


def test_a_function_job_becomes_a_call_function_schedule() -> None:
    step = converted(USAGE_ROLLUP, jobname="daily-usage-rollup", schedule="5 0 * * *")
    assert step.schedule == pgcron.Schedule(
        name="daily-usage-rollup",
        cron="5 0 * * *",
        timezone="GMT",
        task_type="call_function",
        payload={"function": "public.rollup_daily_usage"},
    )
    assert step.function == "public.rollup_daily_usage"
    assert step.notes == ("allow public.rollup_daily_usage in HANDLERS_CALL_FUNCTIONS",)


def test_a_function_the_database_lacks_is_not_convertible() -> None:
    ctx = context(function_problems={"refresh_issuer_stats_cache": "there is no function x"})
    assert refused(STATS_REFRESH, ctx) == "there is no function x"


def test_an_enqueue_job_keeps_its_task_and_options() -> None:
    step = converted(GAME_SYNC, jobname="game_platform_sync_incremental", schedule="*/30 * * * *")
    assert step.schedule == pgcron.Schedule(
        name="game_platform_sync_incremental",
        cron="*/30 * * * *",
        timezone="GMT",
        task_type="game_platform_sync",
        payload={"dryRun": False, "coachId": None},
        max_attempts=3,
    )
    assert (step.endpoint, step.function, step.notes) == (None, None, ())


def test_the_vault_form_becomes_call_endpoint_and_an_endpoint_entry() -> None:
    step = converted(VAULT_SYNC, jobname="sync_game_platform_stats")
    assert step.schedule.task_type == "call_endpoint"
    assert step.schedule.payload == {"endpoint": "sync_game_platform_stats"}
    assert step.endpoint is not None
    assert step.endpoint.setting() == {
        "url": f"{PROJECT_URL}/functions/v1/sync",
        "secret": f"Bearer {SERVICE_KEY}",
        "secret_header": "Authorization",
        "timeout_s": 10.0,
    }
    assert step.endpoint.url_shown == "{vault:project_url}/functions/v1/sync"
    assert step.endpoint.secret_shown == "'Bearer ' || vault:service_role_key"


def test_a_secret_written_in_the_command_moves_to_the_endpoint_and_is_flagged() -> None:
    command = ADAPTER_CHECK.replace("<YOUR_SUPABASE_FUNCTIONS_URL>", f"{PROJECT_URL}/functions/v1")
    command = command.replace("<YOUR_SUPABASE_SERVICE_ROLE_KEY>", SERVICE_KEY)
    step = converted(command, jobname="weekly-adapter-check", schedule="0 3 * * SUN")
    assert step.schedule.payload == {"endpoint": "weekly-adapter-check"}
    assert step.schedule.cron == "0 3 * * SUN"
    assert step.endpoint is not None
    assert step.endpoint.setting() == {
        "url": f"{PROJECT_URL}/functions/v1/adapter-health",
        "secret": f"Bearer {SERVICE_KEY}",
        "secret_header": "Authorization",
    }
    assert step.endpoint.secret_shown == "written in the command"
    assert any("rotate it" in note for note in step.notes)


def test_the_verbatim_placeholder_url_is_not_convertible() -> None:
    assert refused(ADAPTER_CHECK) == (
        "net.http_post() url '<YOUR_SUPABASE_FUNCTIONS_URL>/adapter-health' is not an http(s) URL"
    )


def test_an_endpoint_body_goes_into_the_payload_and_params_into_the_url() -> None:
    step = converted(
        "select net.http_post('https://hooks.example.test/run?src=cron',"
        " jsonb_build_object('user_id', null, 'full', true), '{\"token\": \"abc def\"}')"
    )
    assert step.schedule.payload == {"endpoint": "job-1", "body": {"user_id": None, "full": True}}
    assert step.endpoint is not None
    assert step.endpoint.url == "https://hooks.example.test/run?src=cron&token=abc+def"
    assert step.endpoint.url_shown == "https://hooks.example.test/run?…"
    assert step.endpoint.secret_header is None


@pytest.mark.parametrize(
    ("headers", "header"),
    [
        ('\'{"apikey": "k"}\'', "apikey"),
        ('\'{"X-Webhook-Secret": "k"}\'', "X-Webhook-Secret"),
        ("jsonb_build_object('X-Run', 'Token abc')", "X-Run"),
        (
            "jsonb_build_object('X-Anything', (select decrypted_secret"
            " from vault.decrypted_secrets where name = 'service_role_key'))",
            "X-Anything",
        ),
    ],
)
def test_the_secret_header_is_the_credential_looking_one(headers: str, header: str) -> None:
    step = converted(f"select net.http_post('https://x.test/f', headers := {headers})")
    assert step.endpoint is not None and step.endpoint.secret_header == header
    assert "headers" not in json.dumps(step.schedule.payload)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ('\'{"Content-Type": "text/plain"}\'', "Content-Type 'text/plain': call_endpoint posts"),
        ('\'{"X-Client": "cron"}\'', "header 'X-Client': an endpoint entry carries one secret"),
        ('\'{"apikey": "a", "Authorization": "Bearer a"}\'', "secret headers apikey, Auth"),
        ('\'{"bad header": "a"}\'', "header name 'bad header' is not valid"),
    ],
)
def test_headers_an_endpoint_cannot_carry_are_not_convertible(headers: str, reason: str) -> None:
    assert reason in refused(f"select net.http_post('https://x.test/f', headers := {headers})")


def test_a_timeout_beyond_call_endpoints_limit_is_capped() -> None:
    step = converted("select net.http_post('https://x.test/f', timeout_milliseconds := 900000)")
    assert step.endpoint is not None and step.endpoint.timeout_s == 600
    assert "timeout capped at 600 s (call_endpoint's most)" in step.notes
    assert "not positive" in refused(
        "select net.http_post('https://x.test/f', timeout_milliseconds := 0)"
    )


def test_a_vault_secret_that_could_not_be_read_makes_the_job_not_convertible() -> None:
    ctx = context(secrets={}, secret_problems={"project_url": "vault secret 'project_url': none"})
    assert refused(VAULT_SYNC, ctx) == "vault secret 'project_url': none"


def test_jobs_posting_to_the_same_target_share_one_endpoint() -> None:
    other = VAULT_SYNC.replace("10000", "5000")
    plan = pgcron.build_plan(
        context(),
        [job(1, VAULT_SYNC, jobname="a"), job(2, VAULT_SYNC, jobname="b"), job(3, other)],
    )
    names = [step.endpoint.name for step in plan.conversions if step.endpoint is not None]
    assert names == ["a", "a", "job-3"]
    report = pgcron.ApplyReport(plan, plan.conversions, ())
    assert sorted(json.loads(pgcron.endpoint_settings(report))) == ["a", "job-3"]


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("30 seconds", "pg_cron's interval '30 seconds': schedules tick at most once a minute"),
        ("0 12 $ * *", "cron '0 12 $ * *': '$' (pg_cron's last day of the month) has no"),
        ("0 0 30 2 *", "cron '0 0 30 2 *': day-of-month 30 never occurs in the months listed"),
        ("@reboot", "cron '@reboot': unknown alias '@reboot'"),
    ],
)
def test_what_the_cron_grammar_refuses_is_not_convertible(cron: str, reason: str) -> None:
    assert refused(STATS_REFRESH, schedule=cron).startswith(reason)


def test_name_timezone_and_state_are_kept() -> None:
    ctx = context(timezone="America/New_York")
    plan = pgcron.build_plan(
        ctx,
        [
            job(7, STATS_REFRESH, jobname=None),
            job(8, USAGE_ROLLUP, jobname="Daily usage rollup", active=False),
            job(9, GAME_SYNC, jobname="@hourly sync", schedule=" @hourly "),
        ],
    )
    schedules = [step.schedule for step in plan.conversions]
    assert [(s.name, s.cron, s.timezone, s.active) for s in schedules] == [
        ("pg_cron_7", "0 * * * *", "America/New_York", True),
        ("Daily_usage_rollup", "0 * * * *", "America/New_York", False),
        ("_hourly_sync", "@hourly", "America/New_York", True),
    ]
    notes = [step.notes for step in plan.conversions]
    assert notes[0][0] == "unnamed in pg_cron"
    assert notes[1][0].startswith("renamed from 'Daily usage rollup'")
    assert "inactive in pg_cron: imported paused" in notes[1]


def test_a_timezone_the_schedules_refuse_is_not_convertible() -> None:
    assert refused(STATS_REFRESH, context(timezone="EST5")).startswith(
        "pg_cron's timezone: unknown timezone 'EST5'"
    )


def test_jobs_of_another_database_are_reported() -> None:
    assert refused(STATS_REFRESH, database="billing").startswith(
        "runs in database 'billing', not 'app'"
    )


def test_a_taken_name_is_not_convertible_and_a_duplicate_task_is_flagged() -> None:
    ctx = context(
        schedules={
            "job-1": ("refresh_metrics", {}),
            "game_platform_sync": ("game_platform_sync", {"dryRun": False, "coachId": None}),
        }
    )
    plan = pgcron.build_plan(
        ctx,
        [job(1, STATS_REFRESH), job(2, GAME_SYNC, jobname="x"), job(3, USAGE_ROLLUP, jobname="x")],
    )
    first, second, third = plan.steps
    assert isinstance(first, pgcron.Refusal)
    assert first.reason == "a schedule named 'job-1' already exists"
    assert isinstance(second, pgcron.Conversion)
    assert "schedule 'game_platform_sync' already runs this task: keep one of the two" in (
        second.notes
    )
    assert isinstance(third, pgcron.Refusal)
    assert third.reason == "job 2 becomes a schedule named 'x' too"


def test_another_role_is_noted() -> None:
    step = converted(STATS_REFRESH, username="app_owner")
    assert "pg_cron ran it as 'app_owner'; the worker runs it as its own role" in step.notes


def test_values_the_schedule_checks_refuse_are_not_convertible() -> None:
    assert refused("select job_queue_enqueue('t', priority => 5000)") == (
        "priority must be between -1000 and 1000"
    )
    assert refused("select job_queue_enqueue('has space')").startswith("invalid task type")


# -- the dry-run table -----------------------------------------------------------------------

SEED_JOBS = [
    job(1, STATS_REFRESH, jobname="refresh-issuer-stats-cache", schedule="*/5 * * * *"),
    job(2, ADAPTER_CHECK, jobname="weekly-adapter-check", schedule="0 3 * * SUN"),
    job(3, USAGE_ROLLUP, jobname="daily-usage-rollup", schedule="5 0 * * *"),
    job(4, VAULT_SYNC, jobname="sync_game_platform_stats", schedule="0 * * * *"),
    job(5, GAME_SYNC, jobname="game_platform_sync_incremental", schedule="*/30 * * * *"),
]


def test_the_plan_table() -> None:
    table = pgcron.format_plan(pgcron.build_plan(context(), SEED_JOBS))
    assert table == "\n".join(
        [
            "pg_cron jobs in database app (timezone GMT): 4 to convert, 1 not convertible",
            "",
            "job  schedule                        cron          becomes",
            "1    refresh-issuer-stats-cache      */5 * * * *   call_function"
            ' {"function": "refresh_issuer_stats_cache"}',
            "     - allow refresh_issuer_stats_cache in HANDLERS_CALL_FUNCTIONS",
            "2    weekly-adapter-check            0 3 * * SUN   not convertible: net.http_post()"
            " url '<YOUR_SUPABASE_FUNCTIONS_URL>/adapter-health' is not an http(s) URL",
            "3    daily-usage-rollup              5 0 * * *     call_function"
            ' {"function": "public.rollup_daily_usage"}',
            "     - allow public.rollup_daily_usage in HANDLERS_CALL_FUNCTIONS",
            "4    sync_game_platform_stats        0 * * * *     call_endpoint"
            ' {"endpoint": "sync_game_platform_stats"}',
            "     - endpoint sync_game_platform_stats: POST {vault:project_url}/functions/v1/sync,"
            " timeout 10 s",
            "     - secret header Authorization: 'Bearer ' || vault:service_role_key",
            "     - add endpoint sync_game_platform_stats to HANDLERS_ENDPOINTS (printed by"
            " --apply)",
            "5    game_platform_sync_incremental  */30 * * * *  game_platform_sync"
            ' {"dryRun": false, "coachId": null} max_attempts=3',
        ]
    )


def test_secrets_appear_only_in_the_endpoint_settings() -> None:
    inline = ADAPTER_CHECK.replace("<YOUR_SUPABASE_FUNCTIONS_URL>", "https://fn.example.test")
    inline = inline.replace("<YOUR_SUPABASE_SERVICE_ROLE_KEY>", "inline-key-4c3b2a")
    plan = pgcron.build_plan(context(), [*SEED_JOBS, job(6, inline)])
    report = pgcron.ApplyReport(plan, plan.conversions, ())
    hidden = [
        pgcron.format_plan(plan),
        pgcron.format_report(report),
        repr(plan),
        repr(report),
        json.dumps([step.schedule.payload for step in plan.conversions]),
    ]
    for secret in (SERVICE_KEY, PROJECT_URL, "inline-key-4c3b2a"):
        assert all(secret not in text for text in hidden), secret
    settings = json.loads(pgcron.endpoint_settings(report))
    assert settings["sync_game_platform_stats"]["secret"] == f"Bearer {SERVICE_KEY}"
    assert settings["job-6"]["secret"] == "Bearer inline-key-4c3b2a"


def test_the_apply_report_lists_what_stayed_in_pg_cron() -> None:
    plan = pgcron.build_plan(context(), SEED_JOBS)
    first, *rest = plan.conversions
    report = pgcron.ApplyReport(plan, tuple(rest), ((first, "a schedule named 'x' exists"),))
    assert pgcron.format_report(report).splitlines() == [
        "imported 3 of 5 pg_cron jobs in database app",
        "  job 3 -> schedule daily-usage-rollup (call_function)",
        "  job 4 -> schedule sync_game_platform_stats (call_endpoint)",
        "  job 5 -> schedule game_platform_sync_incremental (game_platform_sync)",
        "left in pg_cron (2):",
        "  job 1 refresh-issuer-stats-cache: not imported: a schedule named 'x' exists",
        "  job 2 weekly-adapter-check: not convertible: net.http_post() url"
        " '<YOUR_SUPABASE_FUNCTIONS_URL>/adapter-health' is not an http(s) URL",
        "allow in HANDLERS_CALL_FUNCTIONS: public.rollup_daily_usage",
    ]
    assert pgcron.call_functions_setting(report) == "public.rollup_daily_usage"


def test_an_empty_plan() -> None:
    plan = pgcron.build_plan(context(), [])
    assert pgcron.format_plan(plan) == "pg_cron jobs in database app: none"
    assert pgcron.endpoint_settings(pgcron.ApplyReport(plan, (), ())) == "{}"
