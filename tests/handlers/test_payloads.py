"""Every bundled payload accepts the apps' camelCase keys beside snake_case, and nothing else."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from pydantic.alias_generators import to_camel

from handlers import payloads
from worker import errors, executor
from worker.registry import REGISTRY

BUNDLED = [h for h in REGISTRY if h.func.__module__.startswith("handlers.")]
# One valid value per multi-word field, to parse under both spellings.
SAMPLES: dict[str, Any] = {
    "dry_run": True,
    "coach_id": "00000000-0000-4000-8000-0000000000c1",
    "user_id": "00000000-0000-4000-8000-000000000001",
    "max_pages": 3,
    "max_orders": 7,
    "batch_size": 5,
    "as_of": "2026-01-15T13:00:00Z",
    "delay_s": 0.5,
    "fail_times": 2,
    "retry_in_s": 1.0,
    "from_parents": True,
}
REQUIRED: dict[str, dict[str, Any]] = {
    "echo": {"message": "hi"},
    "call_endpoint": {"endpoint": "adapter_health"},
    "call_function": {"function": "refresh_issuer_stats_cache"},
}
MULTI_WORD = [
    h for h in BUNDLED if h.name != "noop" and any("_" in f for f in h.payload.model_fields)
]


def test_every_bundled_payload_but_noops_is_a_payload() -> None:
    assert len(BUNDLED) >= 15
    models = {h.name: h.payload for h in BUNDLED}
    assert all(issubclass(m, payloads.Payload) for n, m in models.items() if n != "noop"), models


@pytest.mark.parametrize("handler", MULTI_WORD, ids=lambda h: h.name)
def test_camel_case_and_snake_case_parse_alike(handler: Any) -> None:
    base = REQUIRED.get(handler.name, {})
    for field in [f for f in handler.payload.model_fields if "_" in f]:
        value = SAMPLES[field]  # a new multi-word field needs a sample here
        snake = executor.parse_payload(handler, {**base, field: value})
        camel = executor.parse_payload(handler, {**base, to_camel(field): value})
        assert camel == snake != executor.parse_payload(handler, base), field
        with pytest.raises(errors.PermanentJobError, match=f"{field} is given twice"):
            executor.parse_payload(handler, {**base, field: value, to_camel(field): value})


def test_unknown_keys_are_refused_and_errors_name_the_field_as_sent() -> None:
    sync = REGISTRY.get("game_platform_sync")
    with pytest.raises(errors.PermanentJobError, match="dryRun: Input should be a valid boolean"):
        executor.parse_payload(sync, {"dryRun": "maybe"})
    with pytest.raises(errors.PermanentJobError, match="dry_run: Input should be a valid boolean"):
        executor.parse_payload(sync, {"dry_run": "maybe"})
    with pytest.raises(errors.PermanentJobError, match="DryRun: Extra inputs are not permitted"):
        executor.parse_payload(sync, {"DryRun": True})


def test_models_dump_and_document_themselves_in_snake_case() -> None:
    model = REGISTRY.get("game_platform_sync").payload
    parsed = model.model_validate({"dryRun": True})
    assert parsed.model_dump() == {"dry_run": True, "coach_id": None}
    assert set(model.model_json_schema()["properties"]) == {"dry_run", "coach_id"}
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({"dryRun": True, "extra": 1})
