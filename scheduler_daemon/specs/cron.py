"""Cron expression syntax: @aliases, 5 fields (minute first) or 6 (seconds first).

Only syntax lives here (the specs validate with it); what an expression means in time is
``timing.schedules.CronSchedule``.
"""

from __future__ import annotations

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


def expand_cron(expr: str) -> list[str]:
    return ALIASES.get(expr.strip().lower(), expr).split()


def validate_cron(expr: str) -> None:
    """Raise ValueError with a readable message if ``expr`` is not a valid cron expression.

    5 fields = minute hour day month weekday; 6 fields = **seconds first**; @aliases allowed.
    """
    if expr.strip().lower() == REBOOT:
        return
    fields = expand_cron(expr)
    if len(fields) not in (5, 6):
        raise ValueError(
            f"expected 5 or 6 fields (6 = seconds first) or an @alias, got {len(fields)}"
        )
    try:
        croniter(" ".join(fields), datetime(2000, 1, 1), second_at_beginning=len(fields) == 6)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from None
