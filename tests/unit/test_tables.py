from datetime import UTC, datetime

from scheduler_daemon.operation import tables

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_history_shows_when_how_late_and_why() -> None:
    rows = [
        {"scheduled_at": "2026-11-25T11:59:50+00:00", "attempt": 2, "trigger": "schedule",
         "status": "failed", "drift_ms": 0.25, "duration_ms": 12.0, "exit_code": 1,
         "error": "exit code 1", "output": "working\nunlucky second\n", "http_status": None},
        {"scheduled_at": "2026-11-25T10:00:00+00:00", "attempt": 1, "trigger": "manual",
         "status": "failed", "drift_ms": 1500.0, "duration_ms": None, "http_status": 503,
         "exit_code": None, "error": "HTTP 503\nbody follows", "output": None},
    ]  # fmt: skip
    lines = tables.history(rows, now=NOW).splitlines()
    assert lines[0].split() == ["SCHEDULED", "TRY", "TRIGGER", "STATUS", "DRIFT", "DURATION",
                                "DETAIL"]  # fmt: skip
    assert "2026-11-25 11:59:50Z (10s ago)" in lines[1]
    assert (
        lines[1].split()[-7:] == ["0.2", "ms", "12", "ms", "exit", "1;", "unlucky", "second"][-7:]
    )
    assert lines[1].endswith("exit 1; unlucky second")  # the output's last line, not "exit code 1"
    assert (
        "(2h ago)" in lines[2] and "1500 ms" in lines[2] and lines[2].endswith("HTTP 503; HTTP 503")
    )


def test_status_renders_missing_values_as_dashes() -> None:
    job = {"name": "nightly", "state": "paused", "schedule": "At 02:30 (UTC)",
           "next_fire": "2026-11-26T02:30:00+00:00", "last_status": None,
           "last_finished_at": None, "success_rate": None, "p95_drift_ms": None}  # fmt: skip
    line = tables.status([job], now=NOW).splitlines()[1]
    assert line.split("  ")[0] == "nightly"
    assert "(in 14h)" in line and line.rstrip().endswith("-       -")
    assert tables.status([], now=NOW) == "(none)"
