"""Hostile input: text, JSON, cron strings, timezones and SQL injection attempts."""

from __future__ import annotations

import json
import re
import zoneinfo
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def examples(count: int) -> settings:
    """Hypothesis settings for database-backed properties: `count` examples, no deadline
    (a round trip's time varies with the machine's load), big inputs allowed."""
    return settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # queue names (job_queue_queue_check)
TASK_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")  # job_queue_task_type_check

INJECTIONS = (
    "'; drop table job_queue; --",
    "x' or '1'='1",
    "x'); delete from job_queue where ('1'='1",
    "'); create role pwned superuser login; --",
    "default'; update job_schedules set active = false; --",
    '"; drop table job_runs; --',
    "$$",
    "$$; drop table job_runs; $$",
    "$q$ drop table job_schedules $q$",
    "\\",
    "\\'; drop table job_queue; --",
    "%s",
    "%s'; drop table job_queue; --",
    "%I%L%%",
    "{}",
    "{0}{name}",
    "‘ or ’1’=’1",
    "“x” or “1”=“1",
    "ʼ; drop table job_queue; --",
    "x\x00'; drop table job_queue; --",
    "\x00",
    "/* */ drop table job_queue",
    "--",
    ";",
    "\n; truncate job_queue;\n",
    "E'\\x27'; drop table job_queue; --",
    "U&'\\0027'; drop table job_queue; --",
    "'||(select string_agg(rolname, ',') from pg_roles)||'",
    "'; select pg_terminate_backend(pg_backend_pid()); --",
    "'; alter function job_queue_enqueue security invoker; --",
    "'; set search_path = evil; --",
    "\u202e'; drop table job_queue; --",
)

# Short strings of the characters that trip parsers and terminals.
_NASTY_CHARS = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from("\x00\t\n\r\x0b\x0c\x1b\x7f\x85\xa0\u2028\u2029\u3000\ufeff\u202e'\"\\$%{}"),
    st.characters(categories=["Cs"]),  # lone surrogates (invalid UTF-8 bytes in argv)
)

hostile_text = st.one_of(
    st.sampled_from(INJECTIONS),
    st.text(_NASTY_CHARS, max_size=30),
    st.text(max_size=30),
    st.from_regex(NAME, fullmatch=True),
    st.from_regex(NAME, fullmatch=True).map(lambda s: s + "\n"),
    st.sampled_from(["", " ", "default", "a" * 64, "a" * 65, "a" * 128, "a" * 129, "a" * 513]),
    st.integers(1_000, 100_000).map(lambda n: "x" * n),
)
"""Any text, weighted towards the edges of what the tables accept."""


def storable(text: str) -> bool:
    """PostgreSQL can receive `text`: no NUL character, no lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


storable_text = hostile_text.filter(storable)


def unsendable(exc: BaseException) -> bool:
    """asyncpg refused to send an argument it cannot encode (a lone surrogate), so nothing
    reached SQL. It raises UnicodeEncodeError on some paths and, on others, DataError
    (22000, "invalid input for query argument") caused by one."""
    return isinstance(exc, UnicodeEncodeError) or isinstance(exc.__cause__, UnicodeEncodeError)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(-(10**40), 10**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(_NASTY_CHARS, max_size=12),
        st.sampled_from(INJECTIONS),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text(_NASTY_CHARS, max_size=8), inner, max_size=4),
        ),
        max_leaves=12,
    )


json_values = _json_values()


def _dumped(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


def deep(levels: int, kind: str = "array") -> str:
    if kind == "array":
        return "[" * levels + "]" * levels
    return '{"a":' * levels + "1" + "}" * levels


_SPECIAL_JSON = (
    '{"a": NaN}',
    "[Infinity]",
    "-Infinity",
    '{"a": 1e400}',
    "1e999",
    '{"a": "\\u0000"}',
    '"\\u0000"',
    '{"\\u0000": 1}',
    '"\\ud800"',
    '{"a": "\\udfff"}',
    '"\\ud83d\\ude00"',
    "1" + "0" * 5000,
    '{"message": 5}',
    '{"message": null}',
    '{"message": ["x"]}',
    '{"message": "hi", "extra": {"deep": [1, 2, {"x": null}]}}',
    "[]",
    '"just a string"',
    "123",
    "null",
    "true",
    "{",
    "",
    "undefined",
    "{'a': 1}",
    "[1,]",
    '{"a": 1, "a": 2}',
)

json_text = st.one_of(
    st.builds(_dumped, json_values, st.booleans()),
    st.sampled_from(_SPECIAL_JSON),
    st.builds(deep, st.integers(1, 12_000), st.sampled_from(["array", "object"])),
    st.integers(0, 3_000_000).map(lambda n: json.dumps({"message": "x" * n})),
    st.integers(0, 200_000).map(lambda n: "[" + ",".join(["1"] * n) + "]"),
)
"""Payload text as a user would type it: valid JSON of every shape and size (up to a few
MB, 12,000 levels deep), JSON with NUL characters, lone surrogates, NaN and Infinity, and
text that is not JSON at all."""


# -- cron and timezones --------------------------------------------------------------------

_CRON_WORDS = ["*", "0", "1", "7", "12", "23", "24", "31", "32", "59", "60", "99", "jan", "dec"]
_CRON_WORDS += ["sun", "sat", "mon-fri", "L", "W", "?", "#", "H", "1-5", "5-1", "*/0", "*/61"]
_CRON_WORDS += ["0-59/60", "1-31/31", "*/7", "30", "29", "2", "2,4", "4,6", "abc", "1,", ",1"]


def _fields(words: list[str]) -> str:
    return " ".join(words)


cron_text = st.one_of(
    st.builds(_fields, st.lists(st.sampled_from(_CRON_WORDS), min_size=0, max_size=7)),
    st.builds(
        str.format,
        st.sampled_from(["{}", " {}\t", "{}x", "@{}"]),
        st.sampled_from(["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"]),
    ),
    st.sampled_from(["@midnight", "@HOURLY", "@Daily", "@", "@reboot", "@every 5m"]),
    st.text(st.sampled_from("0123456789*,/-@ \tabcdefjlmnorstuvwyLW#?H\n\xa0\u3000"), max_size=24),
    st.builds(lambda w, pad: pad + w + pad, st.just("* * * * *"), st.sampled_from(["", " ", "\t"])),
    st.integers(195, 210).map(lambda n: ("* * * * *" + " " * n)[:n]),
    hostile_text,
)

_ZONES = sorted(zoneinfo.available_timezones())
_TRICKY_ZONES = [
    "UTC", "utc", "Etc/UTC", "UCT", "Zulu", "GMT", "GMT0", "GMT+0", "GMT-0", "gmt0", "Etc/GMT+5",
    "etc/gmt+5", "Etc/GMT-14", "Etc/GMT+15", "EST5EDT", "est5edt", "EST5", "UTC+3", "FOO/BAR5",
    "Foo/Bar5", "ABC/DEF+3", "X/Y-1", "Europe/London5", "EUROPE/LONDON", "europe/london",
    "Europe/London", "Europe/London/", "/Europe/London", "Europe//London", "Europe/../Europe/Paris",
    "posix/Europe/London", "right/UTC", "localtime", "posixrules", "Factory", "DEFAULT", "local",
    "US/Pacific-New", "Asia/Calcutta", "America/Ciudad_Juarez", "Europe/Kyiv", "<+03>-3", "A",
]  # fmt: skip

timezone_text = st.one_of(
    st.sampled_from(_ZONES),
    st.sampled_from(_TRICKY_ZONES),
    st.sampled_from(_ZONES).map(str.lower),
    st.sampled_from(_ZONES).map(str.upper),
    st.tuples(st.sampled_from(_ZONES), st.sampled_from(["5", "+3", "-1", "0", "x", "/"])).map(
        "".join
    ),
    st.from_regex(r"[A-Za-z][A-Za-z0-9_+-]{0,6}(/[A-Za-z0-9_+-]{1,6}){0,2}", fullmatch=True),
    hostile_text,
)
