"""Load the named SQL statements of queries.sql: `-- name: x` starts statement x."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")


def parse(text: str) -> dict[str, str]:
    """Split a query file into {name: sql}; comment lines inside a statement are dropped."""
    statements: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _NAME.match(line.strip())
        if match:
            name = match.group(1)
            if name in statements:
                raise ValueError(f"query {name!r} is defined twice")
            current = statements[name] = []
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    parsed = {name: "\n".join(lines).strip() for name, lines in statements.items()}
    empty = [name for name, sql in parsed.items() if not sql]
    if empty:
        raise ValueError(f"queries without SQL: {', '.join(empty)}")
    return parsed


def load(package: str, filename: str) -> dict[str, str]:
    """Named statements from a .sql file shipped inside `package` (handlers keep theirs)."""
    return parse(resources.files(package).joinpath(filename).read_text(encoding="utf-8"))


QUERIES: dict[str, str] = load("worker", "queries.sql")
