"""The status page (/ui/) on a running daemon: pages over a seeded history, login, buttons.

A daemon runs in the test's loop (real PostgreSQL, its admin API on 127.0.0.1); the history is
written straight into executions (store.write_executions), and the pages are read over real
HTTP as a browser would (a cookie jar, forms) or a script would (the API's header).
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from scheduler_daemon.operation import ui_view as view
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status
from scheduler_daemon.storage import store, ui_queries
from tests.helpers import ADMIN_TOKEN, AUTH, Running, free_port, running_daemon, wait_until

CONFIG = """\
database: {{url: "{dsn}"}}
state_dir: ./state
admin: {{listen: "{listen}", token: "${{ADMIN_TOKEN}}"}}
jobs:
  backup:
    cron: "0 * * * *"
    command: ["true"]
  report:
    every: 1h
    command: ["true"]
  flaky:
    every: 1h
    command: ["sh", "-c", "exit 3"]
  idle:
    every: 1h
    enabled: false
    command: ["true"]
"""
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
SCRIPT = "<script>alert('x')</script>"


def record(
    job: str,
    at: datetime,
    status: Status,
    *,
    drift_ms: float = 12.0,
    duration_ms: float = 41_000.0,
    attempt: int = 1,
    fire_id: uuid.UUID | None = None,
    trigger: FireKind = FireKind.SCHEDULE,
    **extra: Any,
) -> ExecutionRecord:
    started = at + timedelta(milliseconds=drift_ms) if status != Status.MISSED else None
    finished = started + timedelta(milliseconds=duration_ms) if started else at
    return ExecutionRecord(
        fire_id=fire_id or uuid.uuid4(),
        job_name=job,
        scheduled_at=at,
        attempt=attempt,
        trigger=trigger,
        status=status,
        started_at=started,
        finished_at=finished,
        drift_ms=drift_ms if started else None,
        duration_ms=duration_ms if started else None,
        **extra,
    )


def history() -> list[ExecutionRecord]:
    """backup: 70 hourly fires, all succeeded but the newest (failed, 3.2 s late, exit 1) and
    the one before (timed out); flaky: 5 failures after one success; report: one success with
    output that is HTML."""
    hour = timedelta(hours=1)
    rows = [record("backup", NOW - (70 - i) * hour, Status.SUCCEEDED) for i in range(68)]
    rows.append(record("backup", NOW - 2 * hour, Status.TIMED_OUT, error="timed out after 60 s"))
    rows.append(
        record(
            "backup",
            NOW - hour,
            Status.FAILED,
            drift_ms=3_200.0,
            exit_code=1,
            error="disk full\nsecond line",
        )
    )
    rows.append(record("flaky", NOW - 7 * hour, Status.SUCCEEDED, duration_ms=500.0))
    rows += [
        record("flaky", NOW - (6 - i) * hour, Status.FAILED, exit_code=3, error=f"boom {i}")
        for i in range(5)
    ]
    rows.append(record("report", NOW - hour, Status.SUCCEEDED, output=f"{SCRIPT}\nall good"))
    return rows


@pytest.fixture
async def daemon(database_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    listen = f"127.0.0.1:{free_port()}"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(dsn=database_url, listen=listen))
    conn = await asyncpg.connect(database_url)
    try:
        async with running_daemon(config, f"http://{listen}", jobs=4) as running:
            await store.write_executions(conn, history(), events=False)
            yield running
    finally:
        await conn.close()


@pytest.fixture
async def browser(daemon: Running) -> AsyncIterator[aiohttp.ClientSession]:
    """A client with a cookie jar (127.0.0.1 is an IP: the jar must be told to keep its cookies)."""
    async with aiohttp.ClientSession(
        base_url=daemon.base, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as session:
        yield session


async def login(browser: aiohttp.ClientSession, token: str = ADMIN_TOKEN) -> aiohttp.ClientResponse:
    async with browser.post(
        "/ui/login", data={"token": token, "next": "/ui/"}, allow_redirects=False
    ) as response:
        await response.read()
        return response


async def page(client: aiohttp.ClientSession, path: str, **kwargs: Any) -> tuple[int, str]:
    async with client.get(path, allow_redirects=False, **kwargs) as response:
        return response.status, await response.text()


def board_rows(html: str) -> list[str]:
    return re.findall(r'<tr data-job="([^"]+)"', html)


def cells(html: str, job: str) -> list[tuple[str, str]]:
    """A row's strip cells: (data-status, aria-label), oldest first."""
    row = re.search(rf'<tr data-job="{job}".*?</tr>', html, re.S)
    assert row, job
    return [
        (status, unescape(text))
        for status, text in re.findall(
            r'data-status="(\w+)"(?: data-late="1")? aria-label="([^"]*)"', row.group(0)
        )
    ]


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field"
    return found.group(1)


# -- login and who may see ---------------------------------------------------------------------


async def test_a_page_without_credentials_sends_the_browser_to_the_login_form(
    browser: aiohttp.ClientSession,
) -> None:
    status, _ = await page(browser, "/ui/failures?x=1")
    assert status == 303
    async with browser.get("/ui/failures", allow_redirects=False) as response:
        assert response.headers["Location"] == "/ui/login?next=/ui/failures"


async def test_the_login_form_refuses_a_wrong_token_and_shows_the_form_again(
    browser: aiohttp.ClientSession,
) -> None:
    response = await login(browser, "not-the-token")
    assert response.status == 401
    assert "sd_session" not in response.cookies
    async with browser.post("/ui/login", data={"token": "nope"}) as response:
        html = await response.text()
    assert 'id="login-error"' in html and 'id="login-form"' in html
    assert (await page(browser, "/ui/"))[0] == 303  # still not let in


async def test_login_sets_an_httponly_strict_session_cookie_that_is_not_the_token(
    browser: aiohttp.ClientSession,
) -> None:
    response = await login(browser)
    assert response.status == 303 and response.headers["Location"] == "/ui/"
    cookie = response.cookies["sd_session"]
    assert cookie["httponly"] is True and cookie["samesite"] == "Strict"
    assert cookie["path"] == "/ui/" and not cookie["secure"]  # plain http here
    assert ADMIN_TOKEN not in cookie.value and len(cookie.value) >= 32
    set_cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    status, html = await page(browser, "/ui/")
    assert status == 200 and board_rows(html)
    # Logging out ends the session here, not only in the browser.
    async with browser.post("/ui/logout", data={"csrf": csrf_of(html)}, allow_redirects=False) as r:
        assert r.status == 303
    async with aiohttp.ClientSession(base_url=str(browser._base_url)) as other:
        status, _ = await page(other, "/ui/", cookies={"sd_session": cookie.value})
    assert status == 303


async def test_scripts_use_the_apis_header_on_every_page(daemon: Running) -> None:
    async with aiohttp.ClientSession(base_url=daemon.base) as client:
        for path in ("/ui/", "/ui/failures", "/ui/jobs/backup"):
            assert (await page(client, path, headers=AUTH))[0] == 200, path
            assert (await page(client, path, headers={"X-API-Key": ADMIN_TOKEN}))[0] == 200
        status, html = await page(client, "/ui/", headers={"Authorization": "Bearer wrong"})
    assert status == 401 and "wrong token" in html


async def test_an_unknown_page_is_a_page_saying_so_and_hides_nothing_before_login(
    daemon: Running, browser: aiohttp.ClientSession
) -> None:
    status, _ = await page(browser, "/ui/nothing-here")
    assert status == 303  # to the login form, as for any page: what exists is not told
    await login(browser)
    async with browser.get("/ui/nothing-here") as response:
        assert response.status == 404
        assert response.content_type == "text/html"
        assert "/ui/nothing-here" in await response.text()
    async with browser.delete("/ui/") as response:
        assert response.status == 405 and response.content_type == "text/html"


# -- the board -----------------------------------------------------------------------------------


async def test_the_board_shows_every_job_with_its_strip_coloured_by_status(
    daemon: Running, browser: aiohttp.ClientSession
) -> None:
    await login(browser)
    status, html = await page(browser, "/ui/")
    assert status == 200
    assert '<tbody id="board">' in html
    assert board_rows(html) == ["backup", "report", "flaky", "idle"]
    strip = cells(html, "backup")
    assert len(strip) == 60  # the newest 60 of its 70 fires
    assert [s for s, _ in strip[:-2]] == ["succeeded"] * 58
    assert [s for s, _ in strip[-2:]] == ["timed_out", "failed"]
    newest = strip[-1][1]
    at = NOW - timedelta(hours=1)
    assert newest == f"{at:%Y-%m-%d %H:%M} · failed · 3.2 s late · 41 s · exit 1"
    assert re.search(r'data-status="failed" data-late="1"', html)
    assert [s for s, _ in cells(html, "flaky")] == ["succeeded"] + ["failed"] * 5
    assert cells(html, "idle") == []
    assert re.search(r'data-job="idle" data-state="disabled"', html)
    assert 'data-field="success-rate">97 %' in html  # backup: 58 of its last 60


async def test_the_counters_count_and_filter_the_board(
    daemon: Running, browser: aiohttp.ClientSession
) -> None:
    await login(browser)
    assert (await daemon.call("POST", "/jobs/report/pause"))[0] == 200
    _, html = await page(browser, "/ui/")
    counts = dict(re.findall(r'id="filter-(\w+)" data-count="(\d+)"', html))
    assert counts == {"failing": "2", "late": "1", "running": "0", "paused": "1"}
    for wanted, jobs in (
        ("failing", ["backup", "flaky"]),
        ("late", ["backup"]),
        ("paused", ["report"]),
        ("running", []),
    ):
        status, html = await page(browser, f"/ui/?filter={wanted}")
        assert status == 200 and board_rows(html) == jobs, wanted
    assert (await page(browser, "/ui/?filter=nonsense"))[0] == 400


# -- a job, an attempt, the failures -------------------------------------------------------------


async def test_a_jobs_page_has_its_strip_chart_next_fires_and_paginated_filtered_history(
    browser: aiohttp.ClientSession,
) -> None:
    await login(browser)
    status, html = await page(browser, "/ui/jobs/backup")
    assert status == 200
    assert len(re.findall(r'<li><a href="/ui/executions/\d+" data-status', html)) == 70
    assert '<svg class="chart" id="chart"' in html and html.count("<circle") == 2 * 70
    assert len(re.findall(r"<li><time", html.split('id="next-fires"')[1].split("</ol>")[0])) == 10
    rows = re.findall(r'<tr data-execution="(\d+)" data-status="(\w+)"', html)
    assert len(rows) == 50 and rows[0][1] == "failed"
    older = re.search(r'href="([^"]+)" id="next-page"', html)
    assert older and older.group(1)
    _, html = await page(browser, unescape(older.group(1)))
    rest = re.findall(r'<tr data-execution="(\d+)" data-status="(\w+)"', html)
    assert len(rest) == 20 and not {i for i, _ in rest} & {i for i, _ in rows}
    assert 'id="next-page"' not in html
    _, html = await page(browser, "/ui/jobs/backup?status=timed_out")
    assert [s for _, s in re.findall(r'<tr data-execution="(\d+)" data-status="(\w+)"', html)] == [
        "timed_out"
    ]
    assert (await page(browser, "/ui/jobs/backup?status=bogus"))[0] == 400
    assert (await page(browser, "/ui/jobs/nope"))[0] == 404


async def test_the_run_page_escapes_captured_output_and_shows_the_timeline(
    browser: aiohttp.ClientSession, database_url: str
) -> None:
    await login(browser)
    conn = await asyncpg.connect(database_url)
    try:
        report = await conn.fetchval("SELECT id FROM executions WHERE job_name = 'report'")
        failed = await conn.fetchval(
            "SELECT id FROM executions WHERE job_name = 'backup' AND status = 'failed'"
        )
    finally:
        await conn.close()
    status, html = await page(browser, f"/ui/executions/{report}")
    assert status == 200
    assert SCRIPT not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    async with browser.get(f"/ui/executions/{report}/output") as response:
        assert response.content_type == "text/plain"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert await response.text() == f"{SCRIPT}\nall good"
    _, html = await page(browser, f"/ui/executions/{failed}")
    assert 'id="run-status">failed<' in html and 'id="exit-code">1<' in html
    assert "3.2 s later (late)" in html and "41 s" in html and "disk full" in html
    assert (await page(browser, "/ui/executions/999999999"))[0] == 404
    assert (await page(browser, "/ui/executions/abc"))[0] == 404


async def test_the_failures_page_lists_failed_attempts_newest_first_with_their_streak(
    browser: aiohttp.ClientSession,
) -> None:
    await login(browser)
    status, html = await page(browser, "/ui/failures")
    assert status == 200
    rows = re.findall(
        r'<tr data-execution="\d+" data-job="(\w+)" data-status="(\w+)">.*?'
        r'class="first-error">([^<]*)<.*?data-count="(\d+)"',
        html,
        re.S,
    )
    assert rows[0] == ("backup", "failed", "disk full", "2")
    assert rows[1] == ("flaky", "failed", "boom 4", "5")
    assert len(rows) == 7  # backup's 2, flaky's 5
    assert "failing for 5 fires" in html


# -- the buttons -----------------------------------------------------------------------------------


async def test_trigger_pause_and_resume_through_the_forms_change_the_job(
    daemon: Running, browser: aiohttp.ClientSession, database_url: str
) -> None:
    await login(browser)
    _, html = await page(browser, "/ui/jobs/report")
    csrf = csrf_of(html)
    assert 'id="trigger-form"' in html and 'id="pause-form"' in html
    async with browser.post(
        "/ui/jobs/report/pause", data={"csrf": csrf}, allow_redirects=False
    ) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/ui/jobs/report?done=paused"
    _, html = await page(browser, "/ui/jobs/report?done=paused")
    assert 'id="job-state" data-state="paused"' in html and 'id="resume-form"' in html
    assert (await daemon.call("GET", "/jobs/report"))[1]["paused"] is True
    async with browser.post("/ui/jobs/report/resume", data={"csrf": csrf}) as response:
        assert response.status == 200 and 'id="pause-form"' in await response.text()
    assert (await daemon.call("GET", "/jobs/report"))[1]["paused"] is False

    async def manual_runs() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM executions WHERE job_name = 'report'"
                    " AND trigger = 'manual' AND status = 'succeeded'"
                )
            )
        finally:
            await conn.close()

    async with browser.post(
        "/ui/jobs/report/trigger", data={"csrf": csrf}, allow_redirects=False
    ) as response:
        assert response.status == 303
    await wait_until(lambda: _equals(manual_runs, 1))


async def _equals(count: Any, wanted: int) -> bool:
    return bool(await count() == wanted)


async def test_a_form_without_its_csrf_token_is_refused(
    daemon: Running, browser: aiohttp.ClientSession
) -> None:
    await login(browser)
    for data in ({}, {"csrf": "forged"}):
        async with browser.post("/ui/jobs/report/pause", data=data) as response:
            assert response.status == 403
            assert 'data-code="bad_csrf"' in await response.text()
    assert (await daemon.call("GET", "/jobs/report"))[1]["paused"] is False
    # A script with the header needs no CSRF token: no browser sends that header by itself.
    async with (
        aiohttp.ClientSession(base_url=daemon.base) as client,
        client.post("/ui/jobs/report/pause", headers=AUTH, allow_redirects=False) as r,
    ):
        assert r.status == 303
    assert (await daemon.call("GET", "/jobs/report"))[1]["paused"] is True


DURATIONS = (0.4, 350, 999.4, 999.5, 3_200, 3_250, 9_949, 9_950, 41_000, 59_499, 59_500)
DURATIONS += (120_000, 125_000, 3_599_400, 3_599_500, 3 * 3_600_000 + 240_000, 86_400_000)


async def test_postgresql_writes_durations_in_the_same_words_as_the_page(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        rng = random.Random(15)
        values = [*DURATIONS, *(rng.uniform(0, 4e7) for _ in range(3000))]
        values += [rng.randrange(0, 100_000) + 0.5 for _ in range(1000)]  # on the halves
        values += [rng.randrange(0, 1_000_000) / 10 + 0.05 for _ in range(1000)]
        said = await conn.fetch(
            f"SELECT ms, {ui_queries.duration_sql('ms')} AS words FROM unnest($1::float8[]) AS ms",
            values,
        )
        assert [(r["ms"], r["words"]) for r in said] == [(ms, view.duration(ms)) for ms in values]
        assert await conn.fetchval(f"SELECT {ui_queries.duration_sql('NULL::float8')}") is None
    finally:
        await conn.close()


async def test_a_retried_fire_shows_once_by_its_newest_attempt_and_the_figures_match_sql(
    database_url: str,
) -> None:
    """70 hourly fires, every third retried (attempt 1 failed, attempt 2 succeeded), the
    newest skipped, the one before still running (2.5 s late): the strip holds the newest 60
    fires, not attempts."""
    hour = timedelta(hours=1)
    rows = []
    for i in range(70):
        at, fire = NOW - (70 - i) * hour, uuid.uuid4()
        ms = 100.0 * (i * 37 % 50 + 1)
        if i == 69:
            skipped = record("retry", at, Status.SKIPPED, fire_id=fire)
            rows.append(replace(skipped, started_at=None, drift_ms=None, duration_ms=None))
        elif i == 68:
            running = record("retry", at, Status.RUNNING, fire_id=fire, drift_ms=2_500.0)
            rows.append(running)
        elif i % 3 == 1:
            rows.append(record("retry", at, Status.FAILED, fire_id=fire, duration_ms=ms))
            rows.append(record("retry", at, Status.SUCCEEDED, fire_id=fire, attempt=2))
        else:
            rows.append(record("retry", at, Status.FAILED, fire_id=fire, duration_ms=ms))
    conn = await asyncpg.connect(database_url)
    try:
        await store.write_executions(conn, rows, events=False)
        [found] = await ui_queries.strips(conn, ["retry"], view.STRIP)
        newest = rows[-60 * 4 // 3 - 1 :]  # enough attempts to hold the newest 60 fires
        by_fire = {r.fire_id: r for r in newest}  # the last attempt written wins
        wanted = sorted(by_fire.values(), key=lambda r: r.scheduled_at, reverse=True)[:60]
        assert list(found["statuses"]) == [r.status.value for r in wanted]
        expected = await conn.fetchrow(
            """SELECT (count(*) FILTER (WHERE status = 'succeeded'))::float8 / count(*) AS rate,
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95
               FROM executions WHERE id = ANY($1) AND status NOT IN ('running', 'skipped')""",
            found["ids"],
        )
    finally:
        await conn.close()
    figures = view.figures(found)
    assert figures.success_rate == pytest.approx(expected["rate"])
    assert figures.p95_ms == pytest.approx(expected["p95"])
    assert figures.failing is False  # the newest finished fire (67) succeeded at attempt 2
    assert figures.late is True  # the newest to start on schedule (68) was late


async def test_a_strip_is_drawn_again_when_an_attempt_is_written_or_finishes(
    browser: aiohttp.ClientSession, database_url: str
) -> None:
    await login(browser)
    _, html = await page(browser, "/ui/")  # the strips drawn once, and kept
    assert [s for s, _ in cells(html, "report")] == ["succeeded"]
    fire = uuid.uuid4()
    conn = await asyncpg.connect(database_url)
    try:
        started = record("report", NOW, Status.RUNNING, fire_id=fire, duration_ms=0.0)
        await store.write_executions(conn, [started], events=False)
        _, html = await page(browser, "/ui/")
        assert [s for s, _ in cells(html, "report")] == ["succeeded", "running"]
        done = record("report", NOW, Status.FAILED, fire_id=fire, duration_ms=2_000.0, exit_code=2)
        await store.write_executions(conn, [done], events=False)
    finally:
        await conn.close()
    _, html = await page(browser, "/ui/")
    assert cells(html, "report")[-1] == (
        "failed",
        f"{NOW:%Y-%m-%d %H:%M} · failed · 2.0 s · exit 2",
    )


# -- without a token -----------------------------------------------------------------------------


@pytest.mark.parametrize("open_reads", [True, False])
async def test_without_a_token_the_page_follows_the_apis_reads_and_has_no_buttons(
    database_url: str, tmp_path: Path, open_reads: bool
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    config = tmp_path / "config.yaml"
    admin = f'admin: {{listen: "{listen}", open_reads: {str(open_reads).lower()}}}'
    text = CONFIG.format(dsn=database_url, listen=listen)
    config.write_text(text.replace(text.splitlines()[2], admin))
    async with (
        running_daemon(config, f"http://{listen}", jobs=4) as running,
        aiohttp.ClientSession(base_url=running.base) as client,
    ):
        status, html = await page(client, "/ui/jobs/report")
        api_status, _ = await running.call("GET", "/jobs", auth=False)
        assert (status == 200) == (api_status == 200) == open_reads
        if open_reads:
            assert 'id="trigger-form"' not in html and 'id="pause-form"' not in html
        else:
            assert 'data-code="unauthorized"' in html
        async with client.post("/ui/jobs/report/pause", data={"csrf": "x"}) as response:
            assert response.status == (403 if open_reads else 401)
        async with client.post("/ui/login", data={"token": "anything"}) as response:
            assert response.status == 403


async def test_the_run_page_shows_the_result_escaped_and_the_fires_of_a_chain(
    browser: aiohttp.ClientSession, database_url: str
) -> None:
    await login(browser)
    parent = record("report", NOW - timedelta(minutes=5), Status.SUCCEEDED, result='{"a": "<b>"}')
    child = record(
        "flaky",
        NOW - timedelta(minutes=4),
        Status.FAILED,
        trigger=FireKind.CHAIN,
        parent_fire_id=parent.fire_id,
        error="boom",
    )
    conn = await asyncpg.connect(database_url)
    try:
        await store.write_executions(conn, [parent, child], events=False)
        ids = {
            r["fire_id"]: r["id"]
            for r in await conn.fetch(
                "SELECT id, fire_id FROM executions WHERE fire_id = ANY($1::uuid[])",
                [parent.fire_id, child.fire_id],
            )
        }
        parent_id, child_id = ids[parent.fire_id], ids[child.fire_id]
    finally:
        await conn.close()
    _, html = await page(browser, f"/ui/executions/{parent_id}")
    assert '<pre class="output" id="result">{\n  &#34;a&#34;: &#34;&lt;b&gt;&#34;\n}</pre>' in html
    assert re.search(rf'id="children"><li><a href="/ui/executions/{child_id}">flaky</a>', html)
    async with browser.get(f"/ui/executions/{parent_id}/result") as response:
        assert await response.json() == {"a": "<b>"}
    _, html = await page(browser, f"/ui/executions/{child_id}")
    assert re.search(rf'id="parents"><li><a href="/ui/executions/{parent_id}">report</a>', html)
