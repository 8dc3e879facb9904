"""Handler settings: HANDLERS_* variables, validated, secrets never echoed."""

from __future__ import annotations

import pytest

from handlers import settings as handler_settings
from worker import errors


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    handler_settings.use(None)
    return monkeypatch


def test_reads_lists_json_and_secrets_from_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("HANDLERS_METRICS_VIEWS", "team_totals, reporting.daily ,")
    env.setenv(
        "HANDLERS_ENDPOINTS",
        '{"adapter_health": {"url": "https://example.test/functions/v1/health", '
        '"secret": "Bearer s3cr3t", "timeout_s": 5}}',
    )
    env.setenv("HANDLERS_WEARABLES_SYNC_FUNCTION", "")
    env.setenv("HANDLERS_GAME_PLATFORM_API_TOKEN", "gp-token")
    conf = handler_settings.get()
    assert conf.metrics_views == ["team_totals", "reporting.daily"]
    endpoint = conf.endpoints["adapter_health"]
    assert (str(endpoint.url), endpoint.timeout_s) == (
        "https://example.test/functions/v1/health",
        5,
    )
    assert conf.wearables_sync_function is None
    assert "s3cr3t" not in repr(conf) and "gp-token" not in repr(conf)
    assert handler_settings.get() is conf  # loaded once


def test_a_bad_value_names_the_variable(env: pytest.MonkeyPatch) -> None:
    env.setenv("HANDLERS_METRICS_VIEWS", "ok,drop table x")
    with pytest.raises(errors.ConfigError, match=r"^HANDLERS_METRICS_VIEWS: String should match"):
        handler_settings.load()


def test_a_bad_secret_setting_is_not_echoed_and_fails_jobs_for_good(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("HANDLERS_ENDPOINTS", '{"x": {"url": "not a url", "secret": "Bearer s3cr3t"}}')
    with pytest.raises(errors.PermanentJobError) as failed:
        handler_settings.get()
    assert str(failed.value).startswith("HANDLERS_ENDPOINTS: ")
    assert "s3cr3t" not in str(failed.value)
