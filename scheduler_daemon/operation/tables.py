"""Plain-text tables for the operator commands (`status`, `history`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from scheduler_daemon.storage.nodes import Counts


def status(jobs: Sequence[Mapping[str, Any]], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    rows = [
        [
            job["name"],
            job["state"],
            job["schedule"],
            "-" if job["state"] in ("paused", "disabled") else _when(job["next_fire"], now),
            job["last_status"] or "-",
            _when(job["last_finished_at"], now),
            _percent(job["success_rate"]),
            _ms(job["p95_drift_ms"]),
        ]
        for job in jobs
    ]
    header = ["JOB", "STATE", "SCHEDULE", "NEXT", "LAST", "WHEN", "OK 24H", "P95 DRIFT"]
    return render(header, rows)


def cluster(live: Mapping[str, Counts]) -> str:
    """`status`'s line in cluster mode: the replicas heartbeating now, and the claims each has
    won (and of those, taken over) since it started."""
    replicas = "replica" if len(live) == 1 else "replicas"
    each = [
        f"{node} ({counts.won:,} claimed, {counts.takeovers:,} taken over)"
        for node, counts in live.items()
    ]
    return f"cluster: {len(live)} {replicas} live: {', '.join(each) or '-'}"


def history_size(sizes: Mapping[str, int]) -> str:
    """`status`'s line on the room the history takes in the database, in all and by table."""
    each = ", ".join(f"{table} {size(n)}" for table, n in sizes.items())
    return f"history: {size(sum(sizes.values()))} in the database ({each})"


def size(count: int) -> str:
    """Bytes for humans, in powers of 1024: 512 B, 8.0 KiB, 1.2 GiB."""
    amount = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError


def history(rows: Sequence[Mapping[str, Any]], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    table = [
        [
            _when(r["scheduled_at"], now),
            str(r["attempt"]),
            r["trigger"],
            r["status"],
            _ms(r["drift_ms"]),
            _ms(r["duration_ms"]),
            _detail(r),
        ]
        for r in rows
    ]
    return render(["SCHEDULED", "TRY", "TRIGGER", "STATUS", "DRIFT", "DURATION", "DETAIL"], table)


def render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in (header, *rows)]  # fmt: skip
    return "\n".join(lines)


def _detail(row: Mapping[str, Any]) -> str:
    parts = []
    if row.get("http_status") is not None:
        parts.append(f"HTTP {row['http_status']}")
    if row.get("exit_code") is not None:
        parts.append(f"exit {row['exit_code']}")
    error = str(row.get("error") or "")
    if error and error != f"exit code {row.get('exit_code')}":
        parts.append(error.splitlines()[0][:80])
    elif error and row.get("output"):  # the exit code says little: show the output's last line
        lines = str(row["output"]).strip().splitlines()
        parts.append(lines[-1][:80] if lines else "")
    return "; ".join(p for p in parts if p)


def _when(value: str | datetime | None, now: datetime) -> str:
    if value is None:
        return "-"
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    seconds = (at - now).total_seconds()
    text = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{text} ({_ago(seconds)})"


def _ago(seconds: float) -> str:
    size = abs(seconds)
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if size >= span or unit == "s":
            amount = f"{int(size // span)}{unit}"
            return f"in {amount}" if seconds > 0 else f"{amount} ago"
    raise AssertionError


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if -0.05 < value < 0.05:
        value = 0.0  # a hair early or late (clock resolution): never "-0.0 ms"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def job_list(jobs: Sequence[Mapping[str, Any]], now: datetime | None = None) -> str:
    """`jobs list`: both sources; a version only for the jobs kept in the database."""
    now = now or datetime.now(UTC)
    rows = [
        [
            job["name"],
            job["source"],
            job["kind"] or "-",
            "disabled" if not job["enabled"] else "paused" if job["paused"] else "enabled",
            "-" if job["version"] is None else str(job["version"]),
            _when(job["next_run_at"], now),
        ]
        for job in jobs
    ]
    return render(["JOB", "SOURCE", "KIND", "STATE", "VERSION", "NEXT"], rows)
