"""Markdown tables of the latest results of each scenario: python -m bench.table

Reads bench/results/<scenario>.jsonl (written by python -m bench ...) and prints, per scenario,
the rows of its most recent run — the tables in the README's performance section: the realistic
variant's tables first, then the plain ones. A row holds the medians of its alternating runs
(rows written before runs and variants existed are one plain run).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
Row = dict[str, Any]


VARIANTS = ("realistic", "plain")


def latest(scenario: str, variant: str = "plain") -> list[Row]:
    """The rows of the newest run of ``variant``: the last row of each size."""
    path = RESULTS / f"{scenario}.jsonl"
    if not path.exists():
        return []
    by_size: dict[int, Row] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("variant", "plain") == variant:
            by_size[row["size"]] = row
    return [by_size[size] for size in sorted(by_size)]


def heading(scenario: str, variant: str, rows: list[Row]) -> str:
    first = rows[0]
    runs = sorted({int(row.get("runs", 1)) for row in rows})
    counted = " or ".join(map(str, runs))
    how = "1 run per side" if runs == [1] else f"median of {counted} alternating runs"
    name = f"{scenario} realistic" if variant == "realistic" else scenario
    return f"### {name} ({first.get('machine', '?')}, {first.get('seconds')} s per side, {how})"


def ms(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def drift_table(rows: list[Row], unit: str) -> str:
    out = [
        f"| {unit} | ours drift p50 / p99 / max (ms) | ours fires recorded / expected | ours CPU | "
        "APScheduler drift p50 / p99 / max (ms) | APScheduler fires run / dropped | p99 ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        o, a = row["ours"], row["apscheduler"]
        out.append(
            f"| {row['size']:,} | {ms(o['drift_ms_p50'])} / {ms(o['drift_ms_p99'])} / "
            f"{ms(o['drift_ms_max'])} | {o['fires_recorded']:,} / {o['fires_expected']:,} | "
            f"{o['cpu_s']} s | {ms(a['drift_ms_p50'])} / {ms(a['drift_ms_p99'])} / "
            f"{ms(a['drift_ms_max'])} | {a['fires_recorded']:,} / {a['fires_dropped_misfire']:,} | "
            f"{row['p99_ratio']}x |"
        )
    return "\n".join(out)


def http_table(rows: list[Row]) -> str:
    out = [
        "| HTTP jobs (fires/s asked) | ours succeeded/s | ours p99 drift (ms) | ours recorded / "
        "expected | APScheduler succeeded/s | APScheduler p99 drift (ms) | APScheduler dropped |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        o, a = row["ours"], row["apscheduler"]
        out.append(
            f"| {row['size']:,} | {o['succeeded_per_s']:,} | {ms(o['drift_ms_p99'])} | "
            f"{o['fires_recorded']:,} / {o['fires_expected']:,} | {a['succeeded_per_s']:,} | "
            f"{ms(a['drift_ms_p99'])} | {a['fires_dropped_misfire']:,} |"
        )
    return "\n".join(out)


def scale_table(rows: list[Row]) -> str:
    out = [
        "| jobs | ours: start → scheduling (restart) | start → jobs synced (restart) | RSS "
        "(restart) | idle CPU | one-job reload | one API change | APScheduler: start → "
        "scheduling | RSS | idle CPU | one add_job |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        o, a = row["ours"], row["apscheduler"]
        kind = f" ({o['schedules']})" if "schedules" in o else ""
        api = f"{o['api_change_s'] * 1000:.0f} ms" if "api_change_s" in o else "-"
        start = f"{o['start_to_scheduling_s']} s{_again(o, 'restart_to_scheduling_s', ' s')}"
        synced = f"{o['start_to_jobs_synced_s']} s{_again(o, 'restart_to_jobs_synced_s', ' s')}"
        rss = f"{o['rss_mb']:,.0f} MB{_again(o, 'restart_rss_mb', ' MB', 0)}"
        theirs = f"{a['start_to_scheduling_s']} s | {a['rss_mb']:,.0f} MB"
        out.append(
            f"| {row['size']:,}{kind} | {start} | {synced} | {rss} | {o['idle_cpu_percent']}%"
            f" | {o['one_job_reload_s']} s | {api} | {theirs} | {a['idle_cpu_percent']}%"
            f" | {a['one_job_add_s'] * 1000:.1f} ms |"
        )
    return "\n".join(out)


def _again(figures: Row, key: str, unit: str, digits: int = 2) -> str:
    """`` (restart figure)`` when the run has one (bench.scale since it restarts)."""
    return f" ({figures[key]:,.{digits}f}{unit})" if key in figures else ""


def recorder_table(rows: list[Row]) -> str:
    out = [
        "| load | ours rows/s | ours most rows waiting | ours drain | one INSERT per row: rows/s "
        "| most waiting | drain |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        for label, sides in row.items():
            if not (isinstance(sides, dict) and "ours" in sides):
                continue
            o, b = sides["ours"], sides["per_row_insert"]
            out.append(
                f"| {label} | {o['rows_per_s']:,} | {o['max_lag_rows']:,} | {o['drain_s']} s | "
                f"{b['rows_per_s']:,} | {b['max_lag_rows']:,} | {b['drain_s']} s |"
            )
    return "\n".join(out)


TABLES: dict[str, Callable[[list[Row]], str]] = {
    "burst": lambda rows: drift_table(rows, "jobs due at once"),
    "spread": lambda rows: drift_table(rows, "fires/s"),
    "http": http_table,
    "scale": scale_table,
    "recorder": recorder_table,
}


def main() -> int:
    for variant in VARIANTS:
        for scenario, render in TABLES.items():
            rows = latest(scenario, variant)
            if rows:
                print(heading(scenario, variant, rows) + "\n")
                print(render(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
