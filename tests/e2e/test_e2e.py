"""The installed daemon as a subprocess against real HTTP, commands, Python and PostgreSQL.

These are the few tests that take real seconds: everything time-dependent is covered on the fake
clock elsewhere; here we check the whole wiring, the signals and what lands in the database.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from scheduler_daemon.specs.job_blocks import CACHE_FILE
from tests.helpers import (
    DAEMON,
    REPO,
    DaemonProcess,
    processes_with,
    query_value,
    serve_locally,
    start_daemon,
    wait_until,
)

HUGE_BYTES = 50 * 1024 * 1024
FINISHED = "attempt_finished"
RELOADED = ("reload_succeeded", "reload_failed")


@pytest.fixture
async def target() -> AsyncIterator[str]:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def fail(_: web.Request) -> web.Response:
        return web.Response(status=500, text="server exploded")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="too late")

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"x" * 65536
        for _ in range(HUGE_BYTES // len(chunk)):
            await resp.write(chunk)
        return resp

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    app.router.add_get("/slow", slow)
    app.router.add_get("/huge", huge)
    async with serve_locally(app) as url:
        yield url


def _mixed_config(tmp_path: Path, database_url: str, target: str, marker: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(f"""
        database: {{url: "{database_url}"}}
        state_dir: ./state
        max_concurrency: 8
        shutdown_grace: 1s
        defaults:
          retry: {{attempts: 1}}
        jobs:
          http_ok:     {{every: 1s, http: {{url: "{target}/ok"}}}}
          http_fail:
            every: 2s
            http: {{url: "{target}/fail"}}
            retry: {{attempts: 3, delay: 200ms, backoff: 3}}
          http_slow:   {{every: 2s, timeout: 500ms, http: {{url: "{target}/slow"}}}}
          http_huge:
            {{every: 2s, capture_bytes: 1000, timeout: 20s, http: {{url: "{target}/huge"}}}}
          cmd_ok:      {{every: 1s, command: ["echo", "hi from a command"]}}
          cmd_fail:    {{every: 2s, shell: "echo oops >&2; exit 3"}}
          py_ok:
            {{every: 1s, python: "tests.e2e_jobs:greet", args: {{name: world, times: 2}}}}
          py_fail:     {{every: 2s, python: "tests.e2e_jobs:explode", args: {{reason: kaboom}}}}
          long_cmd:
            every: 1h
            offset: 0s
            shell: "sleep 300 # {marker}"
            enabled: false
          long_sh:     {{every: 1s, overlap: skip, shell: "sh -c 'sleep 300' # {marker}"}}
    """)
    )
    return config


async def test_mixed_jobs_end_to_end(tmp_path: Path, target: str, database_url: str) -> None:
    marker = f"e2e-long-{os.getpid()}"
    config = _mixed_config(tmp_path, database_url, target, marker)
    daemon = await start_daemon(config)
    await daemon.wait_for("scheduler_started")
    await _every_job_has_done_its_part(daemon)
    assert await daemon.stop() == 0
    await daemon.wait_for("daemon_stopped")
    assert processes_with(marker) == [], "a child of a cancelled command survived"

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM executions ORDER BY job_name, scheduled_at, attempt")
        jobs = await conn.fetch("SELECT name, spec FROM jobs ORDER BY name")
    finally:
        await conn.close()
    by_job: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        by_job.setdefault(row["job_name"], []).append(row)

    def statuses(job: str) -> set[str]:
        return {r["status"] for r in by_job.get(job, [])}

    assert {j["name"] for j in jobs} >= {"http_ok", "cmd_ok", "py_ok", "long_cmd"}
    # every-second jobs fired 3 or a few more times, each once per instant, on whole seconds
    for job in ("http_ok", "cmd_ok", "py_ok"):
        runs = by_job[job]
        assert 3 <= len(runs) <= 6, (job, len(runs))
        assert statuses(job) == {"succeeded"}, [dict(r) for r in runs]
        assert all(r["scheduled_at"].microsecond == 0 for r in runs)
        assert len({r["fire_id"] for r in runs}) == len(runs)
        assert all(0 <= r["drift_ms"] < 1000 for r in runs), [r["drift_ms"] for r in runs]
    assert by_job["cmd_ok"][0]["output"].strip() == "hi from a command"
    assert by_job["cmd_ok"][0]["exit_code"] == 0
    assert "hello world hello world" in (by_job["py_ok"][0]["output"] or "")
    assert by_job["http_ok"][0]["http_status"] == 200

    # failures: retried per policy (http 500), not retried beyond attempts
    _assert_retried_per_policy(by_job["http_fail"], daemon)
    assert {r["exit_code"] for r in by_job["cmd_fail"]} == {3}
    assert "oops" in by_job["cmd_fail"][0]["output"]
    assert "kaboom" in by_job["py_fail"][0]["error"]

    # timeouts enforced; huge body capped; a stuck command skipped then cancelled at shutdown
    assert statuses("http_slow") <= {"timed_out", "cancelled"} and "timed_out" in statuses(
        "http_slow"
    )
    assert all(r["duration_ms"] < 1500 for r in by_job["http_slow"] if r["status"] == "timed_out")
    huge_done = [r for r in by_job["http_huge"] if r["status"] == "succeeded"]
    assert huge_done and all(len(r["output"].encode()) <= 1100 for r in huge_done)
    long_rows = by_job["long_sh"]
    assert statuses("long_sh") == {"skipped", "cancelled"}
    assert sum(r["status"] == "cancelled" for r in long_rows) == 1
    assert "long_cmd" not in by_job  # disabled

    # exactly one final row per (fire, attempt)
    keys = [(r["fire_id"], r["attempt"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert all(r["status"] != "running" for r in rows)


async def _every_job_has_done_its_part(daemon: DaemonProcess) -> None:
    """What test_mixed_jobs_end_to_end checks has happened (each job's first fire is due within
    2 s of the start)."""
    for job in ("http_ok", "cmd_ok", "py_ok"):
        await daemon.wait_for(FINISHED, count=3, job=job)
    await daemon.wait_for(FINISHED, job="http_fail", attempt=3)  # a whole fire, retries included
    for job in ("cmd_fail", "py_fail"):
        await daemon.wait_for(FINISHED, job=job)
    await daemon.wait_for(FINISHED, job="http_slow", status="timed_out")
    await daemon.wait_for(FINISHED, job="http_huge", status="succeeded")
    await daemon.wait_for("fire_skipped", job="long_sh")


def _assert_retried_per_policy(rows: list[asyncpg.Record], daemon: DaemonProcess) -> None:
    """``retry: {attempts: 3, delay: 200ms, backoff: 3}``: attempts 1, 2, 3 of each fire, the
    second 0.2 s after the first failed, the third 0.6 s after the second (a fire that shutdown
    cut short has fewer; never more, never one skipped)."""
    assert {r["status"] for r in rows} == {"failed"}
    assert all(r["http_status"] == 500 for r in rows)
    fires: dict[object, list[int]] = {}
    for row in sorted(rows, key=lambda r: (r["scheduled_at"], r["attempt"])):
        fires.setdefault(row["fire_id"], []).append(row["attempt"])
    assert fires and all(a == list(range(1, len(a) + 1)) and len(a) <= 3 for a in fires.values())
    first = min(rows, key=lambda r: r["scheduled_at"])["fire_id"]
    attempts = sorted((r for r in rows if r["fire_id"] == first), key=lambda r: r["attempt"])
    assert [r["attempt"] for r in attempts] == [1, 2, 3]  # the fire waited for before the stop
    planned = [e["delay_s"] for e in daemon.matching("retry_scheduled", fire_id=str(first))]
    assert planned == [0.2, 0.6]  # delay, then delay x backoff
    waited = [
        (after["started_at"] - before["finished_at"]).total_seconds()
        for before, after in itertools.pairwise(attempts)
    ]
    assert all(0.9 * p <= w < p + 0.8 for p, w in zip(planned, waited, strict=True)), waited


async def test_sighup_reload_applies_a_valid_file_and_keeps_the_old_on_a_broken_one(
    tmp_path: Path, database_url: str
) -> None:
    config = tmp_path / "config.yaml"
    base = f'database: {{url: "{database_url}"}}\nstate_dir: ./state\nshutdown_grace: 1s\njobs:\n'
    config.write_text(
        base + '  keep: {every: 1s, command: ["true"]}\n  drop: {every: 1s, command: ["true"]}\n'
        '  change: {every: 1s, command: ["echo", "old"]}\n'
    )
    daemon = await start_daemon(config)
    for job in ("keep", "drop", "change"):
        await daemon.wait_for(FINISHED, job=job)  # each has run on the first file

    config.write_text(
        base + '  keep: {every: 1s, command: ["true"]}\n  added: {every: 1s, command: ["true"]}\n'
        '  change: {every: 1s, command: ["echo", "new"]}\n'
    )
    daemon.proc.send_signal(signal.SIGHUP)
    reloaded = await daemon.wait_for("reload_succeeded", timeout=10)
    assert (reloaded["added"], reloaded["removed"], reloaded["changed"]) == (1, 1, 1)
    assert reloaded["jobs_reused"] == 1  # `keep`, its text unchanged, was not validated again
    await daemon.wait_for(FINISHED, job="added", since=daemon.after(reloaded))
    await wait_until(lambda: _last_output_of_change_is(database_url, "new"))

    config.write_text(base + '  keep: {every: 1s, command: ["true"], bogus: 1}\n')
    daemon.proc.send_signal(signal.SIGHUP)
    failed = await daemon.wait_for("reload_failed", timeout=10)
    assert any("jobs.keep.bogus" in p for p in failed["problems"])
    after_failure = daemon.after(failed)
    for job in ("keep", "added"):  # the running schedule goes on
        await daemon.wait_for(FINISHED, job=job, since=after_failure)
    await daemon.wait_for(FINISHED, count=4, job="keep")
    assert await daemon.stop() == 0
    # The jobs as last loaded, for the next start: the daemon's own file.
    assert (tmp_path / "state" / CACHE_FILE).stat().st_mode & 0o777 == 0o600

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT job_name, count(*) AS n, max(scheduled_at) AS last FROM executions GROUP BY 1"
        )
        outputs = await conn.fetch(
            "SELECT output, scheduled_at FROM executions WHERE job_name = 'change' ORDER BY 2"
        )
    finally:
        await conn.close()
    counts = {r["job_name"]: r for r in rows}
    said = [r["output"].strip() for r in outputs]
    assert said[0] == "old" and said[-1] == "new"  # the changed job runs its new spec
    assert said == sorted(said, key=lambda w: w == "new")  # never old again after the reload
    assert counts["keep"]["n"] >= 4  # kept firing through both reloads
    assert counts["added"]["n"] >= 2  # the broken file did not stop the running schedule
    assert counts["drop"]["last"] < counts["added"]["last"]


async def _last_output_of_change_is(dsn: str, word: str) -> bool:
    sql = "SELECT output FROM executions WHERE job_name = 'change' ORDER BY scheduled_at DESC"
    return await query_value(dsn, sql) == f"{word}\n"


async def test_a_burst_of_sighups_ends_in_the_last_file_with_no_gap(
    tmp_path: Path, database_url: str
) -> None:
    config = tmp_path / "config.yaml"
    base = f'database: {{url: "{database_url}"}}\nstate_dir: ./state\nshutdown_grace: 1s\njobs:\n'
    keep = '  keep: {every: 1s, command: ["true"]}\n'
    config.write_text(base + keep)
    daemon = await start_daemon(config)
    await daemon.wait_for(FINISHED, job="keep")  # the schedule runs before the burst
    burst = daemon.mark()
    for i in range(50):
        config.write_text(base + keep + f'  v{i}: {{every: 1h, command: ["true"]}}\n')
        daemon.proc.send_signal(signal.SIGHUP)
        if i % 10 == 9:  # reloads land in the middle of the burst too, not only after it
            await daemon.wait_for(RELOADED, count=i // 10 + 1, since=burst)
    config.write_text(base + keep + '  final: {every: 1s, command: ["true"]}\n')
    daemon.proc.send_signal(signal.SIGHUP)
    await daemon.wait_for(FINISHED, job="final")
    await daemon.wait_for(FINISHED, count=2, job="keep", since=burst)
    await daemon.wait_for(FINISHED, count=4, job="keep")
    assert await daemon.stop() == 0
    assert sum(e["event"] == "reload_succeeded" for e in daemon.events) >= 1

    conn = await asyncpg.connect(database_url)
    try:
        # Jobs that left the config keep their row, marked removed (README: Database).
        configured = "SELECT name FROM jobs WHERE removed_at IS NULL"
        jobs = {r["name"] for r in await conn.fetch(configured)}
        keep_fires = [
            r["scheduled_at"]
            for r in await conn.fetch(
                "SELECT scheduled_at FROM executions WHERE job_name = 'keep' ORDER BY 1"
            )
        ]
        final = await conn.fetchval("SELECT count(*) FROM executions WHERE job_name = 'final'")
    finally:
        await conn.close()
    assert jobs == {"keep", "final"}  # the state of the last file
    assert final >= 1
    # the unchanged job kept its schedule through 51 reloads: one fire per second, no gap
    assert len(keep_fires) >= 4
    assert all((b - a).total_seconds() == 1 for a, b in itertools.pairwise(keep_fires))


async def test_sigterm_lets_attempts_finish_within_the_grace_and_cancels_the_rest(
    tmp_path: Path, database_url: str
) -> None:
    marker = f"e2e-grace-{os.getpid()}"
    inside = f"e2e-inside-{os.getpid()}"
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(f"""
        database: {{url: "{database_url}"}}
        shutdown_grace: 2s
        jobs:
          inside: {{every: 1h, run_on_start: true, shell: "sleep 1; echo done # {inside}"}}
          outside: {{every: 1h, run_on_start: true, shell: "sleep 300 # {marker}"}}
    """)
    )
    daemon = await start_daemon(config)
    await daemon.wait_for("database_connected")

    async def both_running() -> bool:
        return bool(processes_with(inside)) and bool(processes_with(marker))

    await wait_until(both_running)
    began = asyncio.get_running_loop().time()
    assert await daemon.stop() == 0
    took = asyncio.get_running_loop().time() - began
    assert 1.5 <= took < 12, took  # waited for the grace, not for `sleep 300`
    assert processes_with(marker) == []
    conn = await asyncpg.connect(database_url)
    try:
        rows = {r["job_name"]: r for r in await conn.fetch("SELECT * FROM executions")}
    finally:
        await conn.close()
    assert rows["inside"]["status"] == "succeeded" and rows["inside"]["output"] == "done\n"
    assert rows["outside"]["status"] == "cancelled"
    assert "grace" in rows["outside"]["error"]


async def test_a_plain_function_still_running_at_stop_does_not_keep_the_daemon_alive(
    tmp_path: Path, database_url: str
) -> None:
    """A thread cannot be stopped, and the interpreter waits for its executors' threads at exit:
    the daemon leaves the hung call behind instead of waiting for it."""
    started = tmp_path / "started"
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(f"""
        database: {{url: "{database_url}"}}
        state_dir: ./state
        shutdown_grace: 1s
        jobs:
          hung: {{every: 1h, run_on_start: true, python: "tests.e2e_jobs:hang",
                  args: {{path: "{started}"}}}}
    """)
    )
    daemon = await start_daemon(config)

    async def running() -> bool:
        return started.exists()

    await wait_until(running, timeout=60)
    assert await daemon.stop(timeout=60) == 0  # the function sleeps for 600 s
    assert daemon.matching("job_threads_abandoned", running=1)
    assert await query_value(database_url, "SELECT status FROM executions") == "cancelled"


async def test_sigterm_stops_the_daemon_even_when_its_log_reader_is_gone(
    tmp_path: Path, database_url: str
) -> None:
    # Regression: with stdout a pipe nobody reads any more (a supervisor or a shell pipeline
    # that died), logging raised BrokenPipeError inside the SIGTERM handler before the stop event
    # was set, and the daemon never stopped.
    config = tmp_path / "config.yaml"
    config.write_text(
        f'database: {{url: "{database_url}"}}\nshutdown_grace: 1s\n'
        'jobs:\n  tick: {every: 1s, command: ["true"]}\n'
    )
    read_end, write_end = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(REPO), "SCHEDULER_LOG_LEVEL": "info"}
    proc = await asyncio.create_subprocess_exec(
        str(DAEMON), "run", "-c", str(config), stdout=write_end, stderr=write_end, env=env
    )
    os.close(write_end)
    try:
        reader = os.fdopen(read_end, "rb", buffering=0)
        seen = b""
        while b"scheduler_started" not in seen:
            chunk = await asyncio.to_thread(reader.read, 4096)
            assert chunk, "daemon exited early"
            seen += chunk
        reader.close()  # nobody reads the daemon's logs any more
        before = await _ticks(database_url)
        # a few fires log into the broken pipe
        await wait_until(lambda: _ticks_beyond(database_url, before + 2))
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _ticks(dsn: str) -> int:
    return int(await query_value(dsn, "SELECT count(*) FROM executions WHERE job_name = 'tick'"))


async def _ticks_beyond(dsn: str, count: int) -> bool:
    return await _ticks(dsn) >= count
