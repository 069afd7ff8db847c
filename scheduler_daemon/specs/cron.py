"""Cron expression syntax: @aliases, 5 fields (minute first) or 6 (seconds first).

Only syntax lives here (the specs validate with it); what an expression means in time is
``timing.schedules.CronSchedule``.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime

from croniter import croniter

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

REBOOT = "@reboot"  # no recurring schedule: the job fires once at every start


_MONTHS = {
    name: i
    for i, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# One list item that is a plain range, optionally stepped: "5-5", "MON-FRI", "1-7/2".
_RANGE = re.compile(r"^([0-9]+|[a-z]+)-([0-9]+|[a-z]+)(/[0-9]+)?$", re.IGNORECASE)


def expand_cron(expr: str) -> list[str]:
    return ALIASES.get(expr.strip().lower(), expr).split()


def cron_for_croniter(expr: str) -> tuple[str, bool]:
    """``expr`` (valid, not @reboot) rewritten so croniter reads it as Debian cron does.

    Returns the expression for croniter and its ``day_or`` argument. Two croniter defaults differ
    from cron: it reads a range with equal ends ("5-5", "MON-MON", "5-5/2") as the whole field,
    where cron reads the single value; and it ORs day-of-month with day-of-week whenever neither
    is exactly ``*``, where cron ORs them only when neither *starts* with ``*`` ("*/10" counts as
    a star) and otherwise requires both.
    """
    fields = expand_cron(expr)
    first_day = 3 if len(fields) == 6 else 2  # 6 fields: seconds first
    names: list[dict[str, int]] = [{}] * (first_day + 1) + [_MONTHS, _DAYS]
    fields = [_collapse_equal_ranges(f, n) for f, n in zip(fields, names, strict=True)]
    dom, dow = fields[first_day], fields[first_day + 2]
    # "?" is croniter's synonym for "*" (cron has none): it counts as a star too.
    day_or = dom[0] not in "*?" and dow[0] not in "*?"
    return " ".join(fields), day_or


def _collapse_equal_ranges(field: str, names: dict[str, int]) -> str:
    items = []
    for item in field.split(","):
        m = _RANGE.match(item)
        low = None if m is None else _value(m[1], names)
        if m is not None and low is not None and low == _value(m[2], names):
            item = m[1]  # cron: "a-a" and "a-a/s" are both just a
        items.append(item)
    return ",".join(items)


def _value(token: str, names: dict[str, int]) -> int | None:
    return int(token) if token.isdigit() else names.get(token.lower())


def validate_cron(expr: str) -> None:
    """Raise ValueError with a readable message if ``expr`` is not a valid cron expression.

    5 fields = minute hour day month weekday; 6 fields = **seconds first**; @aliases allowed.
    """
    problem = _cron_problem(str(expr))
    if problem is not None:
        raise ValueError(problem)


@functools.lru_cache(maxsize=4096)
def _cron_problem(expr: str) -> str | None:
    """Remembered per expression: croniter takes ~0.1 ms to parse one (11 s for 100k cron jobs),
    and a config's jobs share a few."""
    if expr.strip().lower() == REBOOT:
        return None
    fields = expand_cron(expr)
    if len(fields) not in (5, 6):
        return f"expected 5 or 6 fields (6 = seconds first) or an @alias, got {len(fields)}"
    try:
        croniter(" ".join(fields), datetime(2000, 1, 1), second_at_beginning=len(fields) == 6)
    except (ValueError, KeyError) as exc:
        return f"invalid cron expression {expr!r}: {exc}"
    return None
