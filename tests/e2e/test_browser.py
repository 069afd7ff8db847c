"""The status page (/ui/) in headless Chromium, against the daemon (this process) and real
PostgreSQL, with a seeded history.

Playwright drives Debian's `chromium` (its own browser download is not used). Without a browser
these tests skip, saying how to enable them; under CI=true they fail instead (.ci/run installs
it). Every page opened must log no console error and raise no uncaught exception.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status, scheduled_fire_id
from scheduler_daemon.storage import store
from tests import e2e_jobs
from tests.helpers import ADMIN_TOKEN, Running, wait_until

try:
    from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright
except ImportError:  # the test extra brings it
    async_playwright = None  # type: ignore[assignment]

CHROMIUM_ENV = "SCHEDULER_TEST_CHROMIUM"
HOW = (
    "install Chromium (`sudo apt-get install chromium`) or set SCHEDULER_TEST_CHROMIUM to a "
    "Chromium binary, and Playwright (`pip install -e '.[test]'`)"
)


def _chromium() -> str | None:
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        return given if Path(given).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _missing(why: str) -> None:
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"browser tests cannot run in CI: {why} ({HOW})")
    pytest.skip(f"browser tests skipped: {why}; to run them, {HOW}")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if async_playwright is None:
        _missing("Playwright for Python is not installed")
    executable = _chromium()
    if executable is None:
        _missing("no Chromium binary found")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable)
        try:
            yield launched
        finally:
            await launched.close()


class Watched:
    """A page whose console errors and uncaught exceptions are collected."""

    def __init__(self, page: Page, base: str) -> None:
        self.page, self.base = page, base
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} at {message.location}")

    async def open(self, path: str) -> None:
        response = await self.page.goto(self.base + path)
        assert response is not None and response.status == 200, (path, response)


@pytest.fixture
async def page(browser: Browser, api: Running) -> AsyncIterator[Watched]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    watched = Watched(await context.new_page(), api.base)
    try:
        yield watched
        assert watched.errors == []
    finally:
        await context.close()


async def _login(page: Watched, token: str = ADMIN_TOKEN) -> None:
    await page.open("/ui/login")
    await page.page.fill("#token", token)
    await page.page.click("#login-form button[type=submit]")
    await page.page.wait_for_load_state()


# -- a seeded history --------------------------------------------------------------------------

NOW = datetime.now(UTC).replace(microsecond=0)
# Each job's fires, oldest first: (status, drift_ms, error).
HISTORY: dict[str, list[tuple[Status, float, str | None]]] = {
    "greet": [(Status.SUCCEEDED, 3.0, None)] * 5 + [(Status.SUCCEEDED, 4200.0, None)],
    "explode": [
        (Status.SUCCEEDED, 2.0, None),
        (Status.TIMED_OUT, 2.0, "timed out after 30s"),
        (Status.FAILED, 2.0, "ValueError: the ledger is locked"),
    ],
    "ping": [
        (Status.MISSED, 0.0, "daemon was down"),
        (Status.SKIPPED, 0.0, "still running"),
        (Status.CANCELLED, 1.0, "cancelled"),
        (Status.ABANDONED, 1.0, "the daemon stopped during the attempt"),
    ],
    "shell": [],
}


async def _seed(api: Running) -> None:
    records = []
    for job, fires in HISTORY.items():
        for n, (status, drift, error) in enumerate(fires):
            at = NOW - timedelta(hours=len(fires) - n)
            started = at + timedelta(milliseconds=drift)
            ran = status not in (Status.MISSED, Status.SKIPPED)
            records.append(
                ExecutionRecord(
                    fire_id=scheduled_fire_id(job, at),
                    job_name=job,
                    scheduled_at=at,
                    attempt=1,
                    trigger=FireKind.SCHEDULE,
                    status=status,
                    started_at=started if ran else None,
                    finished_at=started + timedelta(seconds=2),
                    drift_ms=drift if ran else None,
                    duration_ms=2000.0 if ran else None,
                    exit_code=1 if status is Status.FAILED else None,
                    error=error,
                    node="test",
                )
            )
    pool = api.daemon.recorder.pool
    assert pool is not None
    async with pool.acquire() as conn:
        await store.write_executions(conn, records, events=False)


# -- the tests ---------------------------------------------------------------------------------


async def test_the_board_shows_every_job_with_its_strip_coloured_by_status(
    page: Watched, api: Running
) -> None:
    await _seed(api)
    await _login(page)
    await page.open("/ui/")
    rows = page.page.locator("#board tr[data-job]")
    assert sorted(await rows.evaluate_all("rs => rs.map(r => r.dataset.job)")) == sorted(HISTORY)
    for job, fires in HISTORY.items():
        statuses = await page.page.locator(
            f'#board tr[data-job="{job}"] [data-status]'
        ).evaluate_all("cs => cs.map(c => c.dataset.status)")
        assert statuses == [str(s) for s, _, _ in fires], job
    colours = await page.page.locator("#board [data-status]").evaluate_all(
        "cs => cs.map(c => [c.dataset.status, getComputedStyle(c).backgroundColor])"
    )
    by_status: dict[str, set[str]] = {}
    for status, colour in colours:
        by_status.setdefault(status, set()).add(colour)
    # One colour per status, and the seven statuses all told apart.
    assert all(len(seen) == 1 for seen in by_status.values()), by_status
    assert len({next(iter(c)) for c in by_status.values()}) == len(by_status) == 7
    assert _rgb(by_status["succeeded"])[1] > _rgb(by_status["succeeded"])[0]  # green
    assert _rgb(by_status["failed"])[0] > _rgb(by_status["failed"])[1]  # red
    late = page.page.locator('#board tr[data-job="greet"] [data-late]')
    assert await late.count() == 1
    words = await late.get_attribute("aria-label") or ""
    assert "4.2 s late" in words
    await late.hover()  # the cell's words as its tooltip (CSS, from the aria-label)
    tip = await late.evaluate("c => getComputedStyle(c, '::after').content")
    assert tip == f'"{words}"'


def _rgb(colours: set[str]) -> tuple[int, ...]:
    text = next(iter(colours))
    return tuple(int(float(v)) for v in text[text.index("(") + 1 : -1].split(",")[:3])


async def test_a_failing_job_is_in_the_failures_view_with_its_error(
    page: Watched, api: Running
) -> None:
    await _seed(api)
    await _login(page)
    await page.open("/ui/failures")
    body = page.page.locator("main")
    assert "the ledger is locked" in await body.inner_text()
    entry = page.page.locator('[data-job="explode"]').first
    assert "ValueError: the ledger is locked" in await entry.inner_text()
    assert await page.page.locator('[data-job="greet"]').count() == 0


async def test_trigger_runs_the_job_and_its_cell_appears_live(page: Watched, api: Running) -> None:
    await _login(page)
    await page.open("/ui/")
    board = page.page
    await board.wait_for_function("document.getElementById('live-status').textContent == 'live'")
    before = await board.locator('#board tr[data-job="shell"] [data-status]').count()
    # The job's page has the button; the board (another tab) updates without a reload.
    job = Watched(await board.context.new_page(), api.base)
    await job.open("/ui/jobs/shell")
    await job.page.click("#trigger-form button[type=submit]")
    await job.page.wait_for_load_state()
    cell = board.locator('#board tr[data-job="shell"] [data-status="succeeded"]')
    await cell.nth(before).wait_for()
    assert await board.locator('#board tr[data-job="shell"] [data-status]').count() == before + 1
    href = await cell.nth(before).get_attribute("href")
    assert href is not None and href.startswith("/ui/executions/")
    # A failure counts the job as failing, live too.
    assert await board.locator("#filter-failing b").inner_text() == "0"
    status, _ = await api.call("POST", "/jobs/explode/trigger")
    assert status == 202
    await board.locator('#board tr[data-job="explode"] [data-status="failed"]').wait_for()
    assert await board.locator("#filter-failing b").inner_text() == "1"
    assert job.errors == []


async def test_a_running_attempt_shows_live_and_pausing_live_updates_stops_them(
    page: Watched, api: Running
) -> None:
    # An attempt already running when the page loads: its server-drawn cell turns green.
    early = f"browser-{uuid.uuid4()}"
    status, fired = await api.call("POST", "/jobs/greet/trigger", json={"args": {"hold": early}})
    assert status == 202
    await wait_until(lambda: _has_status(api, fired["fire_id"], "running"))
    await _login(page)
    await page.open("/ui/")
    board = page.page
    await board.wait_for_function("document.getElementById('live-status').textContent == 'live'")
    row = board.locator('#board tr[data-job="greet"]')
    cells = row.locator("[data-status]")
    assert await cells.evaluate_all("cs => cs.map(c => c.dataset.status)") == ["running"]
    assert await row.get_attribute("data-state") == "running"
    e2e_jobs.HELD.setdefault(early, asyncio.Event()).set()
    await row.locator('[data-status="succeeded"]').wait_for()
    assert await cells.count() == 1  # the same fire's cell, not another one
    assert await row.get_attribute("data-state") == "enabled"
    assert await board.locator("#filter-running b").inner_text() == "0"
    # One that starts while the page is open: a new cell, running, then its outcome.
    hold = f"browser-{uuid.uuid4()}"
    status, _ = await api.call("POST", "/jobs/greet/trigger", json={"args": {"hold": hold}})
    assert status == 202
    await row.locator('[data-status="running"]').wait_for()
    assert await row.get_attribute("data-state") == "running"
    assert await board.locator("#filter-running b").inner_text() == "1"
    e2e_jobs.HELD.setdefault(hold, asyncio.Event()).set()
    await row.locator('[data-status="succeeded"]').nth(1).wait_for()
    assert await cells.count() == 2
    assert await row.get_attribute("data-state") == "enabled"
    # Paused: a finish is not shown until the page is resumed (which reloads it).
    await board.click("#live-toggle")
    assert await board.locator("#live-status").inner_text() == "paused"
    status, fired = await api.call("POST", "/jobs/shell/trigger")
    assert status == 202
    await wait_until(lambda: _has_status(api, fired["fire_id"], "succeeded"))
    assert await board.locator('#board tr[data-job="shell"] [data-status]').count() == 0
    await board.click("#live-toggle")
    await board.wait_for_load_state()
    await board.locator('#board tr[data-job="shell"] [data-status="succeeded"]').wait_for()


async def test_the_late_counter_follows_scheduled_fires_live(page: Watched, api: Running) -> None:
    await _seed(api)  # greet's newest fire was 4.2 s late
    await _login(page)
    await page.open("/ui/")
    board = page.page
    await board.wait_for_function("document.getElementById('live-status').textContent == 'live'")
    late = board.locator("#filter-late b")
    assert await late.inner_text() == "1"
    pool = api.daemon.recorder.pool
    assert pool is not None

    async def finished(job: str, drift_ms: float) -> None:
        at = datetime.now(UTC).replace(microsecond=0)
        started = at + timedelta(milliseconds=drift_ms)
        record = ExecutionRecord(
            fire_id=scheduled_fire_id(job, at), job_name=job, scheduled_at=at, attempt=1,
            trigger=FireKind.SCHEDULE, status=Status.SUCCEEDED, started_at=started,
            finished_at=started + timedelta(seconds=1), drift_ms=drift_ms, duration_ms=1000.0,
            node="test",
        )  # fmt: skip
        async with pool.acquire() as conn:  # announced as the recorder's writes are
            await store.write_executions(conn, [record], events=True)

    await finished("greet", 12.0)  # on time: greet no longer counts
    await board.locator('#board tr[data-job="greet"]:not([data-late-now])').wait_for()
    assert await late.inner_text() == "0"
    await finished("explode", 9_950.0)  # late, in the server's words (10 s, not 9.9 s)
    cell = board.locator('#board tr[data-job="explode"] [data-late]')
    await cell.wait_for()
    assert await late.inner_text() == "1"
    assert " · 10 s late · 1.0 s" in (await cell.get_attribute("aria-label") or "")
    assert page.errors == []


async def _has_status(api: Running, fire_id: str, status: str) -> bool:
    _, page = await api.call("GET", f"/executions?fire_id={fire_id}")
    return any(r["status"] == status for r in page["executions"])


async def test_pause_and_resume_change_the_jobs_state(page: Watched, api: Running) -> None:
    await _login(page)
    await page.open("/ui/jobs/greet")
    await page.page.click("#pause-form button[type=submit]")
    await page.page.wait_for_load_state()
    await page.open("/ui/")
    row = page.page.locator('#board tr[data-job="greet"]')
    assert await row.get_attribute("data-state") == "paused"
    assert await page.page.locator("#filter-paused b").inner_text() == "1"
    status, job = await api.call("GET", "/jobs/greet")
    assert status == 200 and job["paused"] is True
    await page.open("/ui/jobs/greet")
    await page.page.click("#resume-form button[type=submit]")
    await page.page.wait_for_load_state()
    status, job = await api.call("GET", "/jobs/greet")
    assert job["paused"] is False


async def test_the_login_form_refuses_a_wrong_token(page: Watched, api: Running) -> None:
    response = await page.page.goto(api.base + "/ui/")
    assert response is not None
    assert page.page.url.startswith(api.base + "/ui/login")  # sent to the form
    await page.page.fill("#token", "not-the-token")
    await page.page.click("#login-form button[type=submit]")
    await page.page.wait_for_load_state()
    assert await page.page.locator("#login-error").is_visible()
    assert await page.page.locator("#board").count() == 0
    cookies = await page.page.context.cookies()
    assert cookies == []
    # A wrong login is answered 401 or so: the browser logs the failed response as an error.
    page.errors[:] = [e for e in page.errors if "401" not in e and "403" not in e]


async def test_pages_open_without_console_errors(page: Watched, api: Running) -> None:
    await _seed(api)
    await _login(page)
    pool = api.daemon.recorder.pool
    assert pool is not None
    execution = await pool.fetchval("SELECT id FROM executions WHERE job_name = 'explode' LIMIT 1")
    for path in ("/ui/", "/ui/failures", "/ui/jobs/explode", f"/ui/executions/{execution}"):
        await page.open(path)
        await page.page.wait_for_load_state()
        assert page.errors == [], path
