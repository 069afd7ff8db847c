"""The README's pictures of the status page: docs/board.png and docs/run.png.

    python -m bench.screenshots [--out docs] [--chromium /usr/bin/chromium] [--dark]

Runs the daemon in this process on a throwaway embedded PostgreSQL, seeds a plausible day of
history (60 fires per job: successes, a failing streak, a timeout, missed and skipped fires, a
late start), opens the board and a failed run's page in headless Chromium (Playwright with
Debian's `chromium`) and saves them. Nothing here is asserted: tests/e2e/test_browser.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from playwright.async_api import async_playwright

from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status, scheduled_fire_id
from scheduler_daemon.specs import load_config
from scheduler_daemon.storage import store

TOKEN = "screenshot-token"
REPO = Path(__file__).resolve().parent.parent
# name: (schedule, command, every minutes, pattern of the last fires: oldest → newest)
JOBS = {
    "backup-db": ('cron: "0 * * * *"', '["true"]', 60, "s" * 60),
    "sync-invoices": ("every: 15m", '["true"]', 15, "s" * 40 + "f" * 3 + "s" * 14 + "fff"),
    "send-digest": ('cron: "*/30 * * * *"', '["true"]', 30, "s" * 25 + "t" + "s" * 34),
    "refresh-rates": ("every: 5m", '["true"]', 5, "s" * 20 + "m" * 4 + "s" * 36),
    "reindex-search": ("every: 10m", '["true"]', 10, "s" * 30 + "k" * 2 + "s" * 27 + "c"),
    "prune-sessions": ("every: 1h", '["true"]', 60, "s" * 50 + "a" + "s" * 9),
    "ping-partner-api": ("every: 1m", '["true"]', 1, "s" * 60),
}
STATUS = {
    "s": Status.SUCCEEDED,
    "f": Status.FAILED,
    "t": Status.TIMED_OUT,
    "m": Status.MISSED,
    "k": Status.SKIPPED,
    "c": Status.CANCELLED,
    "a": Status.ABANDONED,
}
ERRORS = {
    Status.FAILED: "exit status 2: psycopg.OperationalError: connection to ledger refused",
    Status.TIMED_OUT: "timed out after 120s",
    Status.MISSED: "daemon was down at its time (catch-up: skip)",
    Status.SKIPPED: "the previous fire was still running (overlap: skip)",
    Status.CANCELLED: "cancelled: shutdown",
    Status.ABANDONED: "the daemon stopped during the attempt",
}
OUTPUT = """\
sync-invoices 4.2.1: 1,204 invoices to send
batch 1/3: 500 sent
batch 2/3: 500 sent
Traceback (most recent call last):
  File "/srv/billing/sync.py", line 88, in push
    conn = psycopg.connect(LEDGER_DSN)
psycopg.OperationalError: connection to ledger refused
"""


def _config(place: Path, port: int) -> Path:
    lines = [
        f"state_dir: {place / 'state'}",
        "shutdown_grace: 2s",
        f"admin: {{listen: 127.0.0.1:{port}, token: {TOKEN}}}",
        "jobs:",
    ]
    for name, (schedule, command, _, _) in JOBS.items():
        lines.append(f"  {name}: {{{schedule}, command: {command}}}")
    path = place / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _history(now: datetime) -> list[ExecutionRecord]:
    rng = random.Random(7)
    records = []
    for name, (_, _, minutes, pattern) in JOBS.items():
        for n, code in enumerate(pattern):
            status = STATUS[code]
            at = (now - timedelta(minutes=minutes * (len(pattern) - n))).replace(second=0)
            ran = status not in (Status.MISSED, Status.SKIPPED)
            drift = rng.uniform(1, 40) if n != 45 or name != "backup-db" else 6300.0
            took = rng.uniform(200, 3000) * (40 if status is Status.TIMED_OUT else 1)
            failed = status is Status.FAILED
            records.append(
                ExecutionRecord(
                    fire_id=scheduled_fire_id(name, at),
                    job_name=name,
                    scheduled_at=at,
                    attempt=1,
                    trigger=FireKind.SCHEDULE,
                    status=status,
                    started_at=at + timedelta(milliseconds=drift) if ran else None,
                    finished_at=at + timedelta(milliseconds=drift + took),
                    drift_ms=drift if ran else None,
                    duration_ms=took if ran else None,
                    exit_code=(2 if failed else 0) if ran else None,
                    error=ERRORS.get(status),
                    output=OUTPUT if failed else ("ok\n" if ran else None),
                    node="web-1",
                )
            )
    return records


async def _ready(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(base + "/healthz") as r:
                    if r.status == 200 and (await r.json())["database"] == "connected":
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the daemon did not come up")


async def shoot(config: Path, port: int, out: Path, chromium: str, dark: bool) -> None:
    daemon = Daemon(load_config(config))
    task = asyncio.create_task(daemon.run())
    base = f"http://127.0.0.1:{port}"
    try:
        await _ready(base)
        pool = daemon.recorder.pool
        assert pool is not None
        async with pool.acquire() as conn:
            await store.write_executions(conn, _history(datetime.now(UTC)), events=False)
        failed = await pool.fetchval(
            "SELECT id FROM executions WHERE job_name = 'sync-invoices' AND status = 'failed'"
            " ORDER BY scheduled_at DESC LIMIT 1"
        )
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium)
            context = await browser.new_context(
                viewport={"width": 1280, "height": 720},
                color_scheme="dark" if dark else "light",
            )
            page = await context.new_page()
            await page.goto(base + "/ui/login")
            await page.fill("#token", TOKEN)
            await page.click("#login-form button[type=submit]")
            await page.wait_for_load_state()
            await page.goto(base + "/ui/")
            await page.wait_for_function(
                "document.getElementById('live-status').textContent == 'live'"
            )
            # A failed cell's words, as its tooltip shows them.
            await page.hover('#board tr[data-job="sync-invoices"] [data-status=failed] >> nth=-1')
            await page.screenshot(path=str(out / "board.png"), full_page=True)
            await page.goto(f"{base}/ui/executions/{failed}")
            await page.screenshot(path=str(out / "run.png"), full_page=True)
            await browser.close()
    finally:
        daemon.request_stop("screenshots taken")
        await asyncio.wait_for(task, 60)
    print(f"wrote {out / 'board.png'} and {out / 'run.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--dark", action="store_true", help="prefers-color-scheme: dark")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    place = Path(tempfile.mkdtemp(prefix="sd-screenshots-"))
    place.chmod(0o755)  # the embedded server's user must reach its directory when run as root
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot(_config(place, port), port, args.out, args.chromium, args.dark))


if __name__ == "__main__":
    main()
