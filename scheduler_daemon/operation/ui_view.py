"""What the status page shows, as plain data: strip cells and their labels, board rows, counters.

Kept apart from the HTTP side (ui_pages.py) so the words and figures are tested without a
server. Times are shown in UTC.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from markupsafe import Markup, escape

from scheduler_daemon.storage.queries import FAILED
from scheduler_daemon.storage.store import Row
from scheduler_daemon.storage.ui_queries import LATE_MS

STRIP = 60  # attempts on the board's strips
LONG_STRIP = 240  # on a job's page
FILTERS = ("failing", "late", "running", "paused")
_LATE_ATTR = ' data-late="1"'
_UNSAFE = re.compile(r"[<>&\"']")


@dataclass(slots=True)
class BoardRow:
    name: str
    schedule: str
    state: str  # enabled, paused, running, disabled
    source: str  # config, api
    strip: Markup  # the cells, oldest first, as a strip reads left to right
    fires: int  # how many cells
    last_run: datetime | None
    next_fires: list[datetime]
    success_rate: float | None
    p95_ms: float | None
    running: int = 0
    flags: set[str] = field(default_factory=set)


_NOT_FINAL = frozenset(("running", "skipped"))  # not counted in success rates (as the API's stats)


@dataclass(frozen=True, slots=True)
class StripFigures:
    """A board row's figures over its strip's fires."""

    success_rate: float | None  # of the finished fires, skipped ones apart
    p95_ms: float | None  # their p95 duration (PostgreSQL's percentile_cont, interpolated)
    failing: bool  # the newest finished fire failed
    late: bool  # the newest scheduled fire to start started late


NO_FIGURES = StripFigures(None, None, failing=False, late=False)


def strip(found: Row | None, cls: str = "strip") -> tuple[Markup, int]:
    """A strip's HTML and cell count, oldest first, from a row of ui_queries.strips (arrays
    newest first; None: no history). Built here rather than in a template: the board's 60,000
    cells in one join. Labels and statuses are PostgreSQL's own words (digits, status and
    trigger names, a CHECK list), so they are escaped only if one ever holds a character HTML
    would read."""
    if found is None:
        return Markup(f'<ol class="{cls}"></ol>'), 0
    ids, statuses, texts = found["ids"][::-1], found["statuses"][::-1], found["labels"][::-1]
    if _UNSAFE.search("".join(statuses)) or _UNSAFE.search("".join(texts)):
        statuses, texts = [escape(s) for s in statuses], [escape(t) for t in texts]
    cells = [
        f'<li><a href="/ui/executions/{ident:d}" data-status="{status}"'
        f'{_LATE_ATTR if late else ""} aria-label="{text}"></a></li>'
        for ident, status, late, text in zip(
            ids, statuses, found["lates"][::-1], texts, strict=True
        )
    ]
    return Markup(f'<ol class="{cls}">{"".join(cells)}</ol>'), len(cells)


def figures(found: Row | None) -> StripFigures:
    """The figures of a row of ui_queries.strips (arrays newest first; None: no history)."""
    if found is None:
        return NO_FIGURES
    final = [
        (status, ms)
        for status, ms in zip(found["statuses"], found["durations"], strict=True)
        if status not in _NOT_FINAL
    ]
    succeeded = sum(status == "succeeded" for status, _ in final)
    return StripFigures(
        success_rate=succeeded / len(final) if final else None,
        p95_ms=percentile(sorted(ms for _, ms in final if ms is not None), 0.95),
        failing=bool(final) and final[0][0] in FAILED,
        late=next((late for late in found["lates"] if late is not None), False),
    )


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: interpolated between the two nearest of ``ordered``."""
    if not ordered:
        return None
    at = fraction * (len(ordered) - 1)
    below = int(at)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (at - below)


def duration(ms: float | None) -> str:
    """`350 ms`, `3.2 s`, `41 s`, `2 min 5 s`, `3 h 4 min`; rounded half up as floor(x + 0.5),
    the float arithmetic the SQL that writes the strips' labels does (ui_queries.duration_sql)."""
    if ms is None:
        return ""
    if ms < 999.5:
        return f"{math.floor(ms + 0.5)} ms"
    if ms < 9950:
        tenths = math.floor(ms / 100 + 0.5)
        return f"{tenths // 10}.{tenths % 10} s"
    whole = math.floor(ms / 1000 + 0.5)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def clock(at: datetime | None) -> str:
    """`08:00`, or `08:00:30` when the seconds are not zero (UTC)."""
    if at is None:
        return ""
    at = at.astimezone(UTC)
    return at.strftime("%H:%M:%S" if at.second or at.microsecond else "%H:%M")


def instant(at: datetime | None) -> str:
    """`2026-11-27 08:00:00 UTC`."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else ""


def is_late(row: Row) -> bool:
    drift = row["drift_ms"]
    return row["trigger"] == "schedule" and drift is not None and drift > LATE_MS


def state(enabled: bool, paused: bool, running: int) -> str:
    if not enabled:
        return "disabled"
    if paused:
        return "paused"
    return "running" if running else "enabled"


def flags(row: BoardRow, figures: StripFigures) -> set[str]:
    """Which counters a row counts in: `failing` (its newest finished fire failed), `late` (its
    newest scheduled fire to start started late), `running`, `paused`."""
    found_flags = set()
    if figures.failing:
        found_flags.add("failing")
    if figures.late:
        found_flags.add("late")
    if row.running:
        found_flags.add("running")
    if row.state == "paused":
        found_flags.add("paused")
    return found_flags


def counters(rows: Iterable[BoardRow]) -> dict[str, int]:
    counts = dict.fromkeys(FILTERS, 0)
    for row in rows:
        for flag in row.flags:
            counts[flag] += 1
    return counts
