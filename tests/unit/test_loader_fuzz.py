"""The loader on random input: a Config or a ConfigError, never any other exception."""

from __future__ import annotations

import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_daemon.errors import ConfigError
from scheduler_daemon.operation.reload import first_fire
from scheduler_daemon.specs import Config, load_config
from scheduler_daemon.specs.models import JobSpec

FUZZ = settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
FRAGMENTS = [
    "jobs:",
    "defaults:",
    "  j:",
    "    every: ",
    "cron: ",
    "at: ",
    "command: [true]",
    "python: m:f",
    "&a ",
    "*a",
    "<<: ",
    "[",
    "]",
    "{",
    "}",
    ": ",
    ", ",
    "\n",
    "  ",
    "- ",
    "${X}",
    "${Y:-1}",
    "2026-02-30",
    "2026-13-01",
    "9999-12-31T23:00:00-05:00",
    ".inf",
    ".nan",
    "~",
    "1e999",
    "3000000d",
    "1h30m",
    "0 5 * * *",
    "!!binary",
    "!!python/name:os.system",
    "'",
    '"',
    "#",
    "? ",
    "|",
    ">",
    "---",
    "...",
    "%YAML 1.1",
    "\t",
    "é",
    "99999999999999999999",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["1h", "0 5 * * *", "@reboot", "${X}", "inf", "-1s", "2026-12-01T00:00:00Z"]),
    st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
KEYS = st.sampled_from([*JobSpec.model_fields, "json", "shell", "bogus", "url", "method"])
JOBS = st.dictionaries(KEYS, VALUES, max_size=6)


# One file for every example (hypothesis cannot use function-scoped fixtures such as tmp_path).
_DIR = tempfile.TemporaryDirectory(prefix="loader-fuzz-")
_FILE = Path(_DIR.name) / "config.yaml"


def _load(text: str) -> None:
    _FILE.write_text(text, encoding="utf-8")
    try:
        config = load_config(_FILE, environ={"X": "x: 1"}, first_fire=first_fire)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems)
    else:
        assert isinstance(config, Config)


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=30))
def test_random_yamlish_text_loads_or_is_refused(parts: list[str]) -> None:
    _load("".join(parts))


@FUZZ
@given(st.dictionaries(st.sampled_from(["j", "k", "."]), JOBS, min_size=1, max_size=2), VALUES)
def test_random_job_mappings_load_or_are_refused(jobs: dict[str, Any], defaults: Any) -> None:
    document = {"database": {"url": "postgresql:///x"}, "defaults": defaults, "jobs": jobs}
    _load(yaml.safe_dump(document, allow_unicode=True))
