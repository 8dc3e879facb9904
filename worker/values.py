"""What PostgreSQL can store, checked before sending: text without NUL characters or lone
surrogates, JSON without NaN or infinities. Input is refused with a reason rather than
silently changed (the payload is what the caller asked to run), and a refused value is
echoed only as a short prefix."""

from __future__ import annotations

import math
from typing import Any

SHOWN_CHARS = 60
CUT_CHARS = 64
"""What the SQL functions keep of a value they refuse (schema/0013_cut_echoes.sql)."""


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` for an error message: quoted, cut to `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def cut(text: str, limit: int = CUT_CHARS) -> str:
    """`text` as the SQL functions echo it: its first `limit` characters, then '...'."""
    return text if len(text) <= limit else text[:limit] + "..."


def text_problem(text: str) -> str | None:
    """Why PostgreSQL's text cannot hold `text` (None: it can)."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate, which is not valid Unicode"
    return None


def jsonb_problem(value: Any) -> str | None:
    """Why PostgreSQL's jsonb cannot store `value` as it is (None: it can)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return f"JSON string {shown(item)} {problem}"
        elif isinstance(item, float) and not math.isfinite(item):
            return "a JSON number is too large for this worker (it reads numbers as floats)"
    return None
