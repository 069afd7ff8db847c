"""The status page's words and figures (ui_view.py), its sessions (ui_auth.py), its templates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from markupsafe import Markup

from scheduler_daemon.operation import ui_auth, ui_pages
from scheduler_daemon.operation import ui_view as view
from scheduler_daemon.operation.ui_chart import chart

AT = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def row(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 1,
        "fire_id": uuid.uuid4(),
        "scheduled_at": AT,
        "status": "succeeded",
        "trigger": "schedule",
        "attempt": 1,
        "drift_ms": 4.0,
        "duration_ms": 41_000.0,
        "exit_code": None,
        "http_status": None,
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("ms", "words"),
    [
        (None, ""),
        (0.4, "0 ms"),
        (999.4, "999 ms"),
        (999.5, "1.0 s"),
        (3_250, "3.3 s"),  # half up, as PostgreSQL rounds
        (9_949, "9.9 s"),
        (9_950, "10 s"),
        (59_499, "59 s"),
        (59_500, "1 min"),
        (350, "350 ms"),
        (3_200, "3.2 s"),
        (41_000, "41 s"),
        (125_000, "2 min 5 s"),
        (120_000, "2 min"),
        (3 * 3_600_000 + 240_000, "3 h 4 min"),
    ],
)
def test_durations_read_as_people_say_them(ms: float | None, words: str) -> None:
    assert view.duration(ms) == words


def test_only_a_scheduled_fire_over_a_second_late_is_marked_late() -> None:
    assert view.is_late(row(drift_ms=1_001.0))
    assert not view.is_late(row(drift_ms=1_000.0))
    assert not view.is_late(row(drift_ms=60_000.0, trigger="catchup"))  # late by design
    assert not view.is_late(row(drift_ms=None))


def test_a_strip_is_a_list_of_links_with_escaped_labels_oldest_first() -> None:
    found = {  # newest first, as ui_queries.strips returns them
        "ids": [4, 3],
        "statuses": ["succeeded", "failed"],
        "lates": [False, True],
        "labels": ["09:00 · succeeded", "08:00 · failed <b>"],
    }
    html, count = view.strip(found)
    assert count == 2
    assert str(html) == (
        '<ol class="strip">'
        '<li><a href="/ui/executions/3" data-status="failed" data-late="1" '
        'aria-label="08:00 · failed &lt;b&gt;"></a></li>'
        '<li><a href="/ui/executions/4" data-status="succeeded" '
        'aria-label="09:00 · succeeded"></a></li></ol>'
    )
    assert view.strip(None) == ('<ol class="strip"></ol>', 0)


def test_a_strips_figures_count_finished_fires_and_read_the_newest_that_applies() -> None:
    found = {  # newest first
        "statuses": ["running", "skipped", "timed_out", "succeeded", "succeeded", "failed"],
        "durations": [None, None, 30_000.0, 1_000.0, 2_000.0, 4_000.0],
        "lates": [None, None, None, True, False, False],
    }
    figures = view.figures(found)
    assert figures.success_rate == 0.5  # 2 of the 4 finished: running and skipped apart
    assert figures.p95_ms == pytest.approx(4_000.0 + 0.85 * 26_000.0)  # as percentile_cont
    assert figures.failing  # the newest finished fire timed out
    assert figures.late  # the newest that started on schedule was late
    assert view.figures({**found, "statuses": ["succeeded"] * 6}).failing is False
    assert view.figures(None) == view.NO_FIGURES
    only_running = {"statuses": ["running"], "durations": [None], "lates": [None]}
    assert view.figures(only_running) == view.NO_FIGURES


def test_counters_count_failing_late_running_and_paused_rows() -> None:
    board = []
    for name, state, running, failing, late in (
        ("a", "enabled", 0, True, False),
        ("b", "running", 1, False, True),
        ("c", "paused", 0, True, True),
        ("d", "enabled", 0, False, False),
    ):
        board_row = view.BoardRow(
            name, "", state, "config", Markup(), 0, None, [], None, None, running=running
        )
        board_row.flags = view.flags(board_row, view.StripFigures(None, None, failing, late))
        board.append(board_row)
    assert [sorted(r.flags) for r in board] == [
        ["failing"],
        ["late", "running"],
        ["failing", "late", "paused"],
        [],
    ]
    assert view.counters(board) == {"failing": 2, "late": 2, "running": 1, "paused": 1}


def test_the_chart_escapes_its_labels_and_draws_both_panels() -> None:
    rows = [row(id=i, duration_ms=1000.0 * i, drift_ms=float(i), label="<x>") for i in range(1, 4)]
    svg = str(chart(rows))
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 6
    assert "<title>&lt;x&gt;</title>" in svg and "<x>" not in svg
    assert "No finished attempts" in str(chart([row(duration_ms=None, drift_ms=None)]))


def test_every_template_compiles() -> None:
    env = ui_pages.environment()
    names = env.list_templates()
    assert {"base.html", "board.html", "job.html", "run.html", "failures.html"} <= set(names)
    for name in names:
        env.get_template(name)


# -- sessions ------------------------------------------------------------------------------------


def test_a_session_ends_when_the_token_changes_or_at_logout() -> None:
    sessions = ui_auth.Sessions()
    sid, session = sessions.open("secret")
    assert "secret" not in sid and "secret" not in session.csrf
    assert sessions.find(sid, "secret") is session
    assert sessions.find("forged", "secret") is None
    assert sessions.find(sid, "rotated") is None  # a reload with a new token
    assert sessions.find(sid, "secret") is None  # ... ended it for good
    sid, _ = sessions.open("secret")
    sessions.close(sid)
    assert sessions.find(sid, "secret") is None


def test_sessions_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_auth, "MAX_SESSIONS", 3)
    sessions = ui_auth.Sessions()
    first, _ = sessions.open("t")
    for _ in range(5):
        sessions.open("t")
    assert len(sessions) == 3 and sessions.find(first, "t") is None


def test_the_csrf_check_wants_the_sessions_own_token() -> None:
    who = ui_auth.Visitor("session", "abc")
    assert ui_auth.csrf_ok(who, "abc")
    assert not ui_auth.csrf_ok(who, "abd") and not ui_auth.csrf_ok(who, None)
    assert ui_auth.csrf_ok(ui_auth.Visitor("token"), None)  # a header: no browser forges it
    assert not ui_auth.csrf_ok(ui_auth.Visitor("open"), None)


def test_the_cookie_is_secure_behind_https() -> None:
    from aiohttp import web

    request = make_mocked_request("POST", "/ui/login", headers={"X-Forwarded-Proto": "https"})
    response = web.Response()
    ui_auth.set_cookie(request, response, "sid")
    cookie = response.cookies[ui_auth.COOKIE]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"


@pytest.mark.parametrize(
    ("wanted", "went"),
    [
        ("/ui/jobs/a", "/ui/jobs/a"),
        ("//evil.example/ui/", "/ui/"),
        ("/ui/\\evil", "/ui/"),
        ("https://evil.example/", "/ui/"),
        ("", "/ui/"),
    ],
)
def test_login_only_sends_back_to_our_own_pages(wanted: str, went: str) -> None:
    assert ui_pages._safe_next(wanted) == went
