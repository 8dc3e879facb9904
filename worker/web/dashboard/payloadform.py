"""The enqueue page's payload form, built from a handler's payload model (its JSON schema):
one typed input per top-level field (text, whole number, number, true/false, a choice),
a JSON box for the fields a form input cannot say (lists, objects), and a raw JSON box for
the whole payload instead. Reading the form back gives the payload and, per field, why a
value was refused; the handler's model then has the last word (worker.admin.jobs)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pydantic

from worker import values as values_

FIELD_PREFIX = "p."
"""Form names of payload fields: `p.<field>` (never clashing with queue, priority...)."""
_MAX_FIELD_CHARS = 16_384


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str  # text, integer, number, boolean, choice, json
    required: bool
    title: str
    description: str = ""
    default: str = ""
    choices: tuple[str, ...] = ()

    @property
    def form_name(self) -> str:
        return FIELD_PREFIX + self.name


@dataclass
class Parsed:
    payload: dict[str, Any]
    problems: dict[str, str] = field(default_factory=dict)
    """Form name -> why its value was refused."""


def fields_of(model: type[pydantic.BaseModel]) -> list[Field]:
    """The top-level fields of `model`, in declaration order."""
    schema = model.model_json_schema()
    definitions = schema.get("$defs", {})
    required = set(schema.get("required", []))
    found = []
    for name, spec in schema.get("properties", {}).items():
        kind, choices = _kind(_resolved(spec, definitions), definitions)
        default = spec.get("default")
        shown = "" if default is None else _shown(default, kind)
        found.append(
            Field(
                name=name,
                kind=kind,
                required=name in required,
                title=str(spec.get("title") or name),
                description=str(spec.get("description") or ""),
                default=shown,
                choices=choices,
            )
        )
    return found


def _resolved(spec: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """The schema of a value: through a $ref, and past `null` in an optional's anyOf."""
    if "$ref" in spec:
        return dict(definitions.get(spec["$ref"].rsplit("/", 1)[-1], {}))
    options = [o for o in spec.get("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        return _resolved(options[0], definitions)
    return spec


def _kind(spec: dict[str, Any], definitions: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    if "enum" in spec and all(isinstance(v, str) for v in spec["enum"]):
        return "choice", tuple(spec["enum"])
    if "const" in spec and isinstance(spec["const"], str):
        return "choice", (spec["const"],)
    kind = spec.get("type")
    if kind == "string":
        return "text", ()
    if kind in ("integer", "number", "boolean"):
        return str(kind), ()
    return "json", ()


def _shown(value: Any, kind: str) -> str:
    if kind == "json":
        return json.dumps(value, ensure_ascii=False)
    if kind == "boolean":
        return "true" if value else "false"
    return str(value)


def read(fields: list[Field], form: dict[str, str]) -> Parsed:
    """The payload the form's values say (a field left empty is left out: the model's
    default applies, or it says the field is required)."""
    parsed = Parsed({})
    for spec in fields:
        raw = form.get(spec.form_name, "").strip()
        if raw == "":
            continue
        if len(raw) > _MAX_FIELD_CHARS:
            parsed.problems[spec.form_name] = "longer than 16 KiB"
            continue
        try:
            parsed.payload[spec.name] = _value(spec, raw)
        except ValueError as exc:
            parsed.problems[spec.form_name] = str(exc)
    return parsed


def _value(spec: Field, raw: str) -> Any:
    if spec.kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise ValueError("must be a whole number") from None
    if spec.kind == "number":
        try:
            number = float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    if spec.kind == "boolean":
        if raw not in ("true", "false"):
            raise ValueError("must be true or false")
        return raw == "true"
    if spec.kind == "json":
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        problem = values_.jsonb_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value
    return raw


def problem_field(path: str) -> str | None:
    """The form name a model's problem at `path` (/payload/a/0/b) belongs to."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "payload":
        return FIELD_PREFIX + parts[1]
    return None
