"""The generated reference (docs/gen_reference.py) covers everything and lacks nothing.

Every setting has a description, every command and option a help text, and each page names
every setting, command, SQL function and API operation it is generated from.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from handlers import settings as handler_settings
from worker import cli, config, migrations

GENERATOR = Path(__file__).resolve().parents[2] / "docs" / "gen_reference.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_gen_reference", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


gen = _load()

MODELS = [
    (config.Settings, "WORKER_"),
    (handler_settings.HandlerSettings, "HANDLERS_"),
    (handler_settings.Endpoint, ""),
    (handler_settings.TableMap, ""),
]


@pytest.mark.parametrize(("model", "prefix"), MODELS, ids=lambda m: getattr(m, "__name__", m))
def test_every_setting_has_a_description(model: type, prefix: str) -> None:
    missing = [s.env for s in gen.settings_of(model, prefix) if not s.description.strip()]
    assert missing == [], f"give these fields a docstring: {missing}"


def test_the_settings_page_names_every_setting_with_its_variable() -> None:
    page = gen.settings_page()
    for model, prefix in MODELS:
        for setting in gen.settings_of(model, prefix):
            assert f"| `{setting.env}` |" in page
    assert "| `DATABASE_URL` |" in page and "| `WORKER_CONCURRENCY` |" in page
    assert "| `HANDLERS_ENDPOINTS` |" in page


def test_every_command_and_option_has_help_text() -> None:
    root = gen.commands(cli.build_parser())
    missing: list[str] = []
    for node in gen.walk(root):
        if node.path and not node.help.strip():
            missing.append(" ".join(node.path))
        missing += [
            f"{' '.join(node.path) or '(top level)'} {gen._flags(a)}"
            for a in node.options
            if not (a.help or "").strip() and a.help != argparse.SUPPRESS
        ]
    assert missing == [], f"give these a help text: {missing}"


def test_the_cli_page_lists_every_command_and_option() -> None:
    page = gen.cli_page()
    root = gen.commands(cli.build_parser())
    nodes = list(gen.walk(root))
    assert len(nodes) > 20
    for node in nodes:
        title = " ".join(["python -m worker", *node.path])
        assert f"## `{title}` {{#{gen._anchor(node)}}}" in page
        for action in node.options:
            assert f"`{gen._cell(gen._flags(action))}`" in page
    assert "## `python -m worker schedules add`" in page
    assert "## `python -m worker import-pg-cron`" in page


@pytest.mark.parametrize("migration_set", migrations.SETS)
def test_the_sql_page_lists_every_function_the_migrations_create(migration_set: str) -> None:
    found = gen.functions(migration_set)
    # Counted independently of the parser: each CREATE FUNCTION names one function.
    names: set[str] = set()
    for migration in migrations.discover(migration_set):
        for line in migration.sql.lower().splitlines():
            words = line.replace("(", " (").split()
            if words[:4] == ["create", "or", "replace", "function"] or words[:2] == [
                "create",
                "function",
            ]:
                names.add(words[4 if words[1] == "or" else 2].removeprefix("public."))
    assert {f.name for f in found} == names
    page = gen.sql_page()
    for function in found:
        assert f"### {function.key} " in page


def test_every_function_has_its_privileges_recorded() -> None:
    privileges = gen.load_privileges()
    keys = {f.key for s in migrations.SETS for f in gen.functions(s)}
    assert sorted(keys - set(privileges)) == [], "refresh docs/sql_privileges.json"
    assert sorted(set(privileges) - keys) == [], "functions the migrations no longer create"


def test_definers_and_grants_read_from_the_migrations() -> None:
    by_key = {f.key: f for f in gen.functions("core")}
    # 0014_workflows.sql drops the 7-argument signature and creates this one
    assert (
        "job_queue_enqueue(text, jsonb, timestamp with time zone, text, integer, integer, text)"
        not in by_key
    )
    enqueue = by_key[
        "job_queue_enqueue(text, jsonb, timestamp with time zone, text, integer, integer, text,"
        " bigint[], text, text, jsonb)"
    ]
    assert enqueue.security_definer
    assert enqueue.search_path == "pg_catalog, pg_temp"
    toggle = by_key["job_schedule_toggle(text, boolean)"]
    assert toggle.search_path == "pg_catalog, pg_temp"
    assert not by_key["job_queue_notify()"].security_definer
    assert gen._who(enqueue.key, gen.load_privileges()) == "`service_role`"


def test_the_http_page_lists_every_operation_of_the_openapi_document() -> None:
    document = gen.openapi_document()
    operations = list(gen.operations(document))
    assert len(operations) >= 15
    page = gen.http_page()
    for method, path, operation in operations:
        assert f"## {method} {path} {{#{operation['operationId']}}}" in page
