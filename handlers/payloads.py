"""The base of every bundled handler's payload model.

The apps enqueue jobs from TypeScript, with camelCase keys (`{"dryRun": false, "coachId":
null}`); Python and SQL callers use snake_case. Each field accepts both spellings; an
unknown key is still refused, and so is a field given in both spellings at once. Errors
name the field as the payload spelled it (`dryRun: Input should be a valid boolean`).
Models dump, and document themselves, in snake_case.
"""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic.alias_generators import to_camel


def _both_spellings(name: str) -> pydantic.AliasChoices:
    return pydantic.AliasChoices(name, to_camel(name))


class Payload(pydantic.BaseModel):
    """A handler's payload: snake_case or camelCase keys, nothing unknown."""

    model_config = pydantic.ConfigDict(
        extra="forbid",
        alias_generator=pydantic.AliasGenerator(validation_alias=_both_spellings),
    )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _one_spelling_per_field(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in cls.model_fields:
                camel = to_camel(name)
                if camel != name and name in data and camel in data:
                    raise ValueError(f"{name} is given twice (as {name} and {camel})")
        return data
