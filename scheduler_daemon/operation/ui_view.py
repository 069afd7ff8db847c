"""What the status page shows, as plain data: strip cells and their labels, board rows, counters.

Kept apart from the HTTP side (ui_pages.py) so the words and figures are tested without a
server. Times are shown in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scheduler_daemon.storage.queries import FAILED
from scheduler_daemon.storage.store import Row

# A scheduled fire that started this much after its time is marked late (README: the status
# page). Catch-up fires are late by design, manual and chained ones have no time to be late for.
LATE_MS = 1000.0
LATE_TRIGGERS = frozenset({"schedule"})
STRIP = 60  # fires on the board's strips
LONG_STRIP = 240  # on a job's page
FILTERS = ("failing", "late", "running", "paused")


@dataclass(frozen=True, slots=True)
class Cell:
    """One fire of a strip: its last attempt so far."""

    id: int
    status: str
    late: bool
    label: str


@dataclass(slots=True)
class BoardRow:
    name: str
    schedule: str
    state: str  # enabled, paused, running, disabled
    source: str  # config, api
    cells: list[Cell]  # oldest first, as a strip reads left to right
    last_run: datetime | None
    next_fires: list[datetime]
    success_rate: float | None
    p95_ms: float | None
    running: int = 0
    flags: set[str] = field(default_factory=set)


def duration(ms: float | None) -> str:
    """`350 ms`, `3.2 s`, `41 s`, `2 min 5 s`, `3 h 4 min`."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
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
    return row["trigger"] in LATE_TRIGGERS and drift is not None and drift > LATE_MS


def label(row: Row) -> str:
    """A cell's words, for screen readers, tooltips and tests:
    `08:00 · failed · 3.2 s late · 41 s · exit 1`."""
    parts = [f"{instant(row['scheduled_at'])[:10]} {clock(row['scheduled_at'])}", row["status"]]
    if is_late(row):
        parts.append(f"{duration(row['drift_ms'])} late")
    if row["trigger"] != "schedule":
        parts.append(row["trigger"])
    if row["attempt"] > 1:
        parts.append(f"attempt {row['attempt']}")
    if row["duration_ms"] is not None:
        parts.append(duration(row["duration_ms"]))
    if row["exit_code"] is not None:
        parts.append(f"exit {row['exit_code']}")
    if row["http_status"] is not None:
        parts.append(f"HTTP {row['http_status']}")
    return " · ".join(parts)


def cells(rows: Iterable[Row], limit: int) -> list[Cell]:
    """A strip from a job's attempts, newest first: one cell per fire (its newest attempt),
    at most ``limit``, returned oldest first."""
    seen: set[Any] = set()
    out: list[Cell] = []
    for row in rows:
        if row["fire_id"] in seen:
            continue  # an earlier attempt of a fire already shown
        seen.add(row["fire_id"])
        out.append(Cell(row["id"], row["status"], is_late(row), label(row)))
        if len(out) == limit:
            break
    out.reverse()
    return out


def p95(values: Sequence[float]) -> float | None:
    """The 95th percentile, interpolated as PostgreSQL's percentile_cont (the API's figure)."""
    if not values:
        return None
    ordered = sorted(values)
    position = 0.95 * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def figures(rows: Sequence[Row]) -> tuple[float | None, float | None]:
    """Success rate and p95 duration over a strip's final attempts (skipped fires and running
    ones apart, as in the API's statistics)."""
    final = [r for r in rows if r["status"] not in ("running", "skipped")]
    if not final:
        return None, None
    succeeded = sum(1 for r in final if r["status"] == "succeeded")
    durations = [r["duration_ms"] for r in final if r["duration_ms"] is not None]
    return succeeded / len(final), p95(durations)


def state(enabled: bool, paused: bool, running: int) -> str:
    if not enabled:
        return "disabled"
    if paused:
        return "paused"
    return "running" if running else "enabled"


def flags(row: BoardRow, rows: Sequence[Row]) -> set[str]:
    """Which counters a row counts in: `failing` (its newest finished fire failed), `late` (its
    newest scheduled fire to start started late), `running`, `paused`."""
    found = set()
    final = next((r for r in rows if r["status"] not in ("running", "skipped")), None)
    if final is not None and final["status"] in FAILED:
        found.add("failing")
    scheduled = next(
        (r for r in rows if r["trigger"] in LATE_TRIGGERS and r["drift_ms"] is not None), None
    )
    if scheduled is not None and is_late(scheduled):
        found.add("late")
    if row.running:
        found.add("running")
    if row.state == "paused":
        found.add("paused")
    return found


def counters(rows: Iterable[BoardRow]) -> dict[str, int]:
    counts = dict.fromkeys(FILTERS, 0)
    for row in rows:
        for flag in row.flags:
            counts[flag] += 1
    return counts
