"""When a job fires: pure functions of the job's spec and a point in time. (Being written.)"""

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


def validate_cron(expr: str) -> None:
    """Raise ValueError with a readable message if ``expr`` is not a valid cron expression.

    5 fields = minute hour day month weekday; 6 fields = **seconds first**; @aliases allowed.
    """
    expanded = ALIASES.get(expr.strip().lower(), expr)
    fields = expanded.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"expected 5 or 6 fields (6 = seconds first) or an @alias, got {len(fields)}")
    try:
        croniter(expanded, datetime(2000, 1, 1), second_at_beginning=len(fields) == 6)
    except (ValueError, KeyError) as exc:
        raise ValueError(str(exc)) from None


# --- provisional (replaced by the full DST-aware module) ----------------------------------------
from datetime import UTC  # noqa: E402
from typing import Protocol  # noqa: E402


class Trigger(Protocol):
    def next_after(self, t: datetime) -> datetime | None: ...

    def describe(self) -> str: ...


class IntervalTrigger:
    def __init__(self, every: float, offset: float = 0.0) -> None:
        self._every = round(every * 1_000_000)
        self._offset = round(offset * 1_000_000)

    def next_after(self, t: datetime) -> datetime | None:
        micros = round(t.timestamp() * 1_000_000) - self._offset
        k = micros // self._every + 1
        return datetime.fromtimestamp((k * self._every + self._offset) / 1_000_000, UTC)

    def describe(self) -> str:
        return f"every {self._every / 1e6:g}s"


class DateTrigger:
    def __init__(self, at: datetime) -> None:
        self._at = at

    def next_after(self, t: datetime) -> datetime | None:
        return self._at.astimezone(UTC) if self._at > t else None

    def describe(self) -> str:
        return f"once at {self._at.isoformat()}"


def build_trigger(job: object) -> Trigger:
    every = getattr(job, "every", None)
    if every is not None:
        return IntervalTrigger(every, getattr(job, "offset", 0.0))
    at = getattr(job, "at", None)
    if at is not None:
        return DateTrigger(at)
    raise NotImplementedError("cron: being written")
