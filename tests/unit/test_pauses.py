"""Pause state: the database's answer adopted and mirrored in state_dir/paused.json."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.operation.pauses import Pauses

SINCE = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 26, 8, 30, tzinfo=UTC)


class StubDb:
    """What ``queries.set_paused`` needs: an UPDATE … RETURNING paused_at."""

    def __init__(self, rows: dict[str, datetime | None]) -> None:
        self.rows = rows

    async def fetchrow(self, sql: str, job: str, paused: bool) -> dict[str, Any] | None:
        if job not in self.rows:
            return None
        self.rows[job] = (self.rows[job] or LATER) if paused else None
        return {"paused_at": self.rows[job]}


def events(logs: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in logs]


@pytest.mark.parametrize(
    ("text", "loaded", "logged"),
    [
        (None, {}, []),
        ("{}", {}, []),
        (json.dumps({"a": SINCE.isoformat()}), {"a": SINCE}, []),
        ("{not json", {}, ["paused_cache_unreadable"]),
        ("[1, 2]", {}, ["paused_cache_unreadable"]),
        ("null", {}, ["paused_cache_unreadable"]),
        ('{"a": "yesterday"}', {}, ["paused_cache_unreadable"]),
        ('{"a": 5}', {}, ["paused_cache_unreadable"]),
    ],
    ids=["missing", "empty", "one", "not-json", "a-list", "null", "bad-date", "not-a-string"],
)
def test_the_cache_is_read_at_start_and_a_bad_one_ignored(
    tmp_path: Path, text: str | None, loaded: dict[str, datetime], logged: list[str]
) -> None:
    cache = tmp_path / "paused.json"
    if text is not None:
        cache.write_text(text)
    pauses = Pauses(cache=cache)
    with capture_logs() as logs:
        pauses.load_cache()
    assert dict(pauses) == loaded
    assert events(logs) == logged


def test_adopted_state_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    cache = tmp_path / "state" / "paused.json"  # its directory is created
    Pauses(cache=cache).adopt({"a": SINCE, "b": LATER})
    assert [p.name for p in cache.parent.iterdir()] == ["paused.json"]  # no staging file left
    # Job names are the operators' business only: like every file under state_dir.
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    again = Pauses(cache=cache)
    again.load_cache()
    assert dict(again) == {"a": SINCE, "b": LATER}
    assert "a" in again and "c" not in again and len(again) == 2


def test_a_cache_that_cannot_be_written_is_logged_and_the_state_kept(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    pauses = Pauses(cache=tmp_path / "file" / "paused.json")  # its directory is a file
    with capture_logs() as logs:
        pauses.adopt({"a": SINCE})
    assert events(logs) == ["paused_cache_not_written"]
    assert dict(pauses) == {"a": SINCE}


@pytest.mark.parametrize(
    ("before", "after", "logged"),
    [
        ({}, {}, []),
        ({"a": SINCE}, {"a": SINCE}, []),
        ({}, {"a": SINCE}, ["paused_jobs_changed"]),
        ({"a": SINCE}, {}, ["paused_jobs_changed"]),
        ({"a": SINCE}, {"a": LATER}, ["paused_jobs_changed"]),
    ],
    ids=["none", "same", "paused-by-others", "resumed-by-others", "paused-again"],
)
def test_pauses_written_by_others_are_adopted_when_they_differ(
    tmp_path: Path, before: dict[str, datetime], after: dict[str, datetime], logged: list[str]
) -> None:
    pauses = Pauses(cache=tmp_path / "paused.json")
    pauses.adopt(before)
    with capture_logs() as logs:
        pauses.refresh(after)
    assert events(logs) == logged
    assert dict(pauses) == after
    reread = Pauses(cache=tmp_path / "paused.json")
    reread.load_cache()
    assert dict(reread) == after


@pytest.mark.parametrize(
    ("rows", "job", "paused", "since", "state", "logged"),
    [
        ({"a": None}, "a", True, LATER, {"a": LATER}, "job_paused"),
        ({"a": SINCE}, "a", True, SINCE, {"a": SINCE}, "job_paused"),  # pausing twice: same since
        ({"a": SINCE}, "a", False, None, {}, "job_resumed"),
        ({"a": None}, "a", False, None, {}, "job_resumed"),
    ],
    ids=["pause", "pause-again", "resume", "resume-unpaused"],
)
async def test_set_persists_then_applies(
    tmp_path: Path,
    rows: dict[str, datetime | None],
    job: str,
    paused: bool,
    since: datetime | None,
    state: dict[str, datetime],
    logged: str,
) -> None:
    pauses = Pauses(cache=tmp_path / "paused.json")
    pauses.adopt({k: v for k, v in rows.items() if v is not None})
    with capture_logs() as logs:
        assert await pauses.set(StubDb(rows), job, paused) == since  # type: ignore[arg-type]
    assert dict(pauses) == state
    assert events(logs) == [logged]
    assert json.loads((tmp_path / "paused.json").read_text()) == {
        k: v.isoformat() for k, v in state.items()
    }


async def test_a_job_without_a_row_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    pauses = Pauses(cache=tmp_path / "paused.json")
    with pytest.raises(LookupError):
        await pauses.set(StubDb({}), "ghost", True)  # type: ignore[arg-type]
    assert dict(pauses) == {} and not (tmp_path / "paused.json").exists()
