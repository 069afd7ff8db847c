"""What the status page shows, as plain data: strip cells and their labels, board rows, counters.

Kept apart from the HTTP side (ui_pages.py) so the words and figures are tested without a
server. Times are shown in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from markupsafe import Markup, escape

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


StripKey = tuple[tuple[int, ...], tuple[str, ...]]


def strip_key(found: Row) -> StripKey:
    """What a strip's HTML depends on: its attempts and their statuses (an attempt's other
    columns are written with its status: at its start, at its end)."""
    return tuple(found["ids"]), tuple(found["statuses"])


def strip(found: Row | None, labels: Mapping[int, str], cls: str = "strip") -> tuple[Markup, int]:
    """A strip's HTML and cell count, oldest first, from a row of ui_queries.strips (arrays
    newest first; None: no history) and its cells' words. Built here rather than in a
    template: the board's 60,000 cells in one join. Labels and statuses are PostgreSQL's own
    words (digits, status and trigger names, a CHECK list), so they are escaped only if one ever
    holds a character HTML would read."""
    if found is None:
        return Markup(f'<ol class="{cls}"></ol>'), 0
    ids, statuses = found["ids"][::-1], found["statuses"][::-1]
    texts = [labels.get(i, "") for i in ids]
    if _UNSAFE.search("".join(statuses)) or _UNSAFE.search("".join(texts)):
        statuses, texts = [escape(s) for s in statuses], [escape(t) for t in texts]
    cells = [
        f'<li><a href="/ui/executions/{ident:d}" data-status="{status}"'
        f'{_LATE_ATTR if late else ""} aria-label="{text}" title="{text}"></a></li>'
        for ident, status, late, text in zip(
            ids, statuses, found["lates"][::-1], texts, strict=True
        )
    ]
    return Markup(f'<ol class="{cls}">{"".join(cells)}</ol>'), len(cells)


def duration(ms: float | None) -> str:
    """`350 ms`, `3.2 s`, `41 s`, `2 min 5 s`, `3 h 4 min`; rounded half up, as the SQL
    that writes the strips' labels (ui_queries.duration_sql)."""
    if ms is None:
        return ""
    if ms < 999.5:
        return f"{_half_up(ms, '1')} ms"
    seconds = ms / 1000
    if ms < 9950:
        return f"{_half_up(seconds, '0.1')} s"
    whole = int(_half_up(seconds, "1"))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _half_up(value: float, step: str) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal(step), ROUND_HALF_UP)


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


def flags(row: BoardRow, found: Row | None) -> set[str]:
    """Which counters a row counts in: `failing` (its newest finished fire failed), `late` (its
    newest scheduled fire to start started late), `running`, `paused`."""
    found_flags = set()
    if found is not None and found["failing"]:
        found_flags.add("failing")
    if found is not None and found["late"]:
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
