"""The status page's board with many jobs: server-side time to answer GET /ui/, run by hand.

    python -m bench.ui --jobs 1000 --fires 60 --requests 15

A real daemon (in this process, its admin API on 127.0.0.1) over a throwaway embedded
PostgreSQL with N hourly jobs, each with F fires of history written by store.write_executions
(mostly succeeded, some failed, timed out, missed or late). The board is asked for R times with
the API's header after one warm-up request; printed: the median and p95 of the whole request
(query, render, transfer over loopback), the first request's (every strip drawn, with the
cells' words), the medians of the parts inside the server (Ui.board_rows: the strips' keys, the
cells of the strips that changed, the rows; the same when every strip changed since the last
request; the template's render), and the page's size. BENCH_PROFILE=1 prints the strips' query
plan and a profile of the render.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from scheduler_daemon.operation import ui_view
from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.operation.ui_pages import UI
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status
from scheduler_daemon.specs import load_config
from scheduler_daemon.storage import store
from scheduler_daemon.storage.embedded import EmbeddedPostgres

TOKEN = "bench-token-0123456789"
OUTCOMES = [Status.SUCCEEDED] * 17 + [Status.FAILED, Status.TIMED_OUT, Status.MISSED]


def write_config(path: Path, dsn: str, port: int, jobs: int) -> None:
    lines = [
        f'database: {{url: "{dsn}"}}',
        "state_dir: ./state",
        f'admin: {{listen: "127.0.0.1:{port}", token: "{TOKEN}"}}',
        "jobs:",
    ]
    lines += [f'  j{i:05d}: {{cron: "{i % 60} * * * *", command: ["true"]}}' for i in range(jobs)]
    path.write_text("\n".join(lines) + "\n")


def history(jobs: int, fires: int) -> list[ExecutionRecord]:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    records = []
    for j in range(jobs):
        for f in range(fires):
            at = now - timedelta(hours=fires - f, minutes=j % 60)
            status = OUTCOMES[(j * 7 + f) % len(OUTCOMES)]
            drift = 2_500.0 if (j + f) % 13 == 0 else 8.0
            started = None if status == Status.MISSED else at + timedelta(milliseconds=drift)
            duration = 1_000.0 + (j * f) % 5_000
            records.append(
                ExecutionRecord(
                    fire_id=uuid.uuid4(),
                    job_name=f"j{j:05d}",
                    scheduled_at=at,
                    attempt=1,
                    trigger=FireKind.SCHEDULE,
                    status=status,
                    started_at=started,
                    finished_at=started + timedelta(milliseconds=duration) if started else at,
                    drift_ms=drift if started else None,
                    duration_ms=duration if started else None,
                    exit_code=1 if status == Status.FAILED else (0 if started else None),
                )
            )
    return records


async def seed(dsn: str, records: list[ExecutionRecord]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(0, len(records), 10_000):
            await store.write_executions(conn, records[start : start + 10_000], events=False)
        await conn.execute("ANALYZE executions")
    finally:
        await conn.close()


async def measure(
    config: Path, dsn: str, port: int, jobs: int, fires: int, requests: int
) -> dict[str, Any]:
    daemon = Daemon(load_config(config, environ={}))
    task = asyncio.create_task(daemon.run())
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession(base_url=base, headers=headers) as http:
            await _ready(http, daemon, task, jobs)  # the schema is there once it is
            await seed(dsn, history(jobs, fires))
            whole, size = [], 0
            for _ in range(requests + 1):  # the first one warms up (template compiled once)
                started = time.perf_counter()
                async with http.get("/ui/") as response:
                    body = await response.read()
                    assert response.status == 200, response.status
                whole.append(time.perf_counter() - started)
                size = len(body)
            inside = await _inside(daemon, requests)
    finally:
        daemon.request_stop("bench")
        await asyncio.wait_for(task, 60)
    first, whole = whole[0], whole[1:]
    return {
        "first_request_ms": round(first * 1000, 1),
        "jobs": jobs,
        "requests": requests,
        "request_median_ms": round(statistics.median(whole) * 1000, 1),
        "request_p95_ms": round(sorted(whole)[int(0.95 * (len(whole) - 1))] * 1000, 1),
        "query_median_ms": inside["query"],
        "every_strip_changed_median_ms": inside["redrawn"],
        "render_median_ms": inside["render"],
        "page_bytes": size,
    }


async def _inside(daemon: Daemon, requests: int) -> dict[str, float]:
    """The server's part alone: the rows (the one query and the words) and the template."""
    runner = daemon._admin
    assert runner is not None
    [ui_app] = [a for a in runner.app._subapps if UI in a]
    ui = ui_app[UI]
    queried, rendered, redrawn = [], [], []
    template = ui.env.get_template("board.html")
    for _ in range(requests):
        started = time.perf_counter()
        rows = await ui.board_rows()
        queried.append(time.perf_counter() - started)
        ui._strips.clear()  # as if every strip had changed since the last request
        started = time.perf_counter()
        await ui.board_rows()
        redrawn.append(time.perf_counter() - started)
        started = time.perf_counter()
        template.render(
            visitor=None, csrf=None, path="/ui/", rows=rows, total=len(rows),
            counters=ui_view.counters(rows), filter=None, row_html=ui.row_html,
        )  # fmt: skip
        rendered.append(time.perf_counter() - started)
    if os.environ.get("BENCH_PROFILE"):
        await _profile(ui)
    return {
        "query": round(statistics.median(queried) * 1000, 1),
        "redrawn": round(statistics.median(redrawn) * 1000, 1),
        "render": round(statistics.median(rendered) * 1000, 1),
    }


async def _profile(ui: Any) -> None:
    import cProfile
    import pstats

    from scheduler_daemon.storage import ui_queries

    pool = ui.pool_or_none()
    names = [j.name for j in ui.api.t.config.jobs]
    plan = await pool.fetch("EXPLAIN (ANALYZE, BUFFERS) " + ui_queries.STRIPS, names, 60)
    print("\n".join(r[0] for r in plan), file=sys.stderr)
    await ui.board_rows()
    started = time.perf_counter()
    await ui_queries.strips(pool, names, 60)
    print(f"strips alone: {(time.perf_counter() - started) * 1000:.1f} ms", file=sys.stderr)
    profiler = cProfile.Profile()
    profiler.enable()
    rows = await ui.board_rows()
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(12)
    profiler = cProfile.Profile()
    profiler.enable()
    ui.env.get_template("board.html").render(
        visitor=None, csrf=None, path="/ui/", rows=rows, total=len(rows),
        counters=ui_view.counters(rows), filter=None, row_html=ui.row_html,
    )  # fmt: skip
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(20)


async def _ready(
    http: aiohttp.ClientSession, daemon: Daemon, task: asyncio.Task[int], jobs: int
) -> None:
    for _ in range(1200):
        if task.done():
            task.result()
        try:
            async with http.get("/healthz") as response:
                if response.status == 200 and (await response.json())["database"] == "connected":
                    pool = daemon.recorder.pool
                    if (
                        pool is not None
                        and await pool.fetchval("SELECT count(*) FROM jobs") >= jobs
                    ):
                        return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError("the daemon did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--fires", type=int, default=60)
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--port", type=int, default=18089)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sd-bench-ui-") as tmp:
        work = Path(tmp)
        server = EmbeddedPostgres(work / "pg")
        dsn = server.start()
        try:
            config = work / "config.yaml"
            write_config(config, dsn, args.port, args.jobs)
            result = asyncio.run(
                measure(config, dsn, args.port, args.jobs, args.fires, args.requests)
            )
        finally:
            server.remove()
    print(json.dumps({**result, "fires_per_job": args.fires}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
