from __future__ import annotations

import pytest

from worker import config, errors


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = config.load()
    assert settings.database_url is None
    assert settings.queues == ["default"]
    assert settings.concurrency >= 1


def test_reads_prefixed_and_platform_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db:5432/app")
    monkeypatch.setenv("WORKER_QUEUES", "default, mail ,default")
    monkeypatch.setenv("WORKER_CONCURRENCY", "8")
    settings = config.load()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == "postgresql://u:pw@db:5432/app"
    assert settings.queues == ["default", "mail"]
    assert settings.concurrency == 8


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "WORKER_CONCURRENCY",
            "-1",
            "WORKER_CONCURRENCY: Input should be greater than or equal to 1",
        ),
        ("WORKER_CONCURRENCY", "lots", "WORKER_CONCURRENCY: Input should be a valid integer"),
        ("WORKER_POLL_INTERVAL_S", "0", "WORKER_POLL_INTERVAL_S: Input should be greater than 0"),
        ("WORKER_QUEUES", "ok,bad queue", "WORKER_QUEUES: invalid queue name(s) ['bad queue']"),
        ("WORKER_LOG_FORMAT", "xml", "WORKER_LOG_FORMAT: Input should be 'auto', 'json' or"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL: must start with postgresql://"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(errors.ConfigError) as caught:
        config.load()
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_secret_values_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://user:hunter2@host/db")
    with pytest.raises(errors.ConfigError) as caught:
        config.load()
    assert "hunter2" not in str(caught.value)
    settings_repr = repr(config.load(database_url="postgresql://u:hunter2@h/d"))
    assert "hunter2" not in settings_repr
