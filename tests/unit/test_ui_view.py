"""The status page's words and figures (ui_view.py), its sessions (ui_auth.py), its templates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

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


def test_a_cells_label_says_when_what_how_late_how_long_and_the_exit() -> None:
    late = row(status="failed", drift_ms=3_200.0, exit_code=1)
    assert view.label(late) == "2026-11-27 08:00 · failed · 3.2 s late · 41 s · exit 1"
    retried = row(trigger="manual", attempt=2, duration_ms=350.0, http_status=503)
    assert (
        view.label(retried)
        == "2026-11-27 08:00 · succeeded · manual · attempt 2 · 350 ms · HTTP 503"
    )
    missed = row(
        status="missed", drift_ms=None, duration_ms=None, scheduled_at=AT.replace(second=30)
    )
    assert view.label(missed) == "2026-11-27 08:00:30 · missed"


def test_only_a_scheduled_fire_over_a_second_late_is_marked_late() -> None:
    assert view.is_late(row(drift_ms=1_001.0))
    assert not view.is_late(row(drift_ms=1_000.0))
    assert not view.is_late(row(drift_ms=60_000.0, trigger="catchup"))  # late by design
    assert not view.is_late(row(drift_ms=None))


def test_a_strip_shows_each_fire_once_by_its_newest_attempt_oldest_first() -> None:
    fire = uuid.uuid4()
    rows = [  # newest first, as the query returns them
        row(id=4, status="running"),
        row(id=3, fire_id=fire, attempt=2, status="succeeded"),
        row(id=2, fire_id=fire, attempt=1, status="failed"),
        row(id=1, status="missed"),
    ]
    cells = view.cells(rows, 60)
    assert [(c.id, c.status) for c in cells] == [(1, "missed"), (3, "succeeded"), (4, "running")]
    assert [c.id for c in view.cells(rows, 2)] == [3, 4]


def test_figures_leave_out_running_and_skipped_fires_and_p95_interpolates() -> None:
    rows = [row(duration_ms=float(ms)) for ms in range(1, 21)]
    rows += [row(status="failed", duration_ms=None), row(status="skipped"), row(status="running")]
    rate, p95 = view.figures(rows)
    assert rate == 20 / 21
    assert p95 == pytest.approx(19.05)  # percentile_cont(0.95) of 1..20
    assert view.figures([row(status="skipped")]) == (None, None)


def test_counters_count_failing_late_running_and_paused_rows() -> None:
    board = []
    for name, state, running, rows in (
        ("a", "enabled", 0, [row(status="failed")]),
        ("b", "running", 1, [row(status="running", drift_ms=5_000.0), row()]),
        (
            "c",
            "paused",
            0,
            [row(status="skipped", drift_ms=None), row(status="timed_out", drift_ms=2_000.0)],
        ),
        ("d", "enabled", 0, [row(status="succeeded"), row(status="failed")]),
    ):
        board_row = view.BoardRow(
            name, "", state, "config", [], None, [], None, None, running=running
        )
        board_row.flags = view.flags(board_row, rows)
        board.append(board_row)
    assert [sorted(r.flags) for r in board] == [
        ["failing"],
        ["late", "running"],
        ["failing", "late", "paused"],
        [],
    ]
    assert view.counters(board) == {"failing": 2, "late": 2, "running": 1, "paused": 1}


def test_the_chart_escapes_its_labels_and_draws_both_panels() -> None:
    rows = [row(id=i, duration_ms=1000.0 * i, drift_ms=float(i)) for i in range(1, 4)]
    svg = str(chart(rows))
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 6
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
