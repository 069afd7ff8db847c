from datetime import UTC, datetime

from scheduler_daemon.operation import tables
from scheduler_daemon.operation.control import refusal
from scheduler_daemon.storage.nodes import Counts

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_status_says_which_replicas_are_live_in_cluster_mode_and_what_each_claimed() -> None:
    live = {"a": Counts(1204, 2400, 3), "b": Counts(1190, 2410, 0), "c": Counts()}
    assert tables.cluster(live) == (
        "cluster: 3 replicas live: a (1,204 claimed, 3 taken over), "
        "b (1,190 claimed, 0 taken over), c (0 claimed, 0 taken over)"
    )
    assert tables.cluster({"a": Counts(5)}) == (
        "cluster: 1 replica live: a (5 claimed, 0 taken over)"
    )
    assert tables.cluster({}) == "cluster: 0 replicas live: -"


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
    assert line.split()[-5:] == ["-"] * 5  # paused: no next fire, whatever the schedule says
    running = {**job, "state": "idle", "p95_drift_ms": -0.01}
    line = tables.status([running], now=NOW).splitlines()[1]
    assert "(in 14h)" in line and line.endswith("0.0 ms") and "-0.0" not in line
    assert tables.status([], now=NOW) == "(none)"


def test_a_refused_token_says_which_side_lacks_it() -> None:
    unauthorized = {"error": "unauthorized", "message": "missing or wrong token"}
    assert "this config has no admin.token" in refusal(401, unauthorized, sent_token=False)
    assert "another token" in refusal(401, unauthorized, sent_token=True)
    unset = {"error": "no_token_configured", "message": "no token"}
    assert "the daemon runs without admin.token" in refusal(403, unset, sent_token=True)
    other = {"error": "unknown_job", "message": "no job 'x'"}
    assert refusal(404, other, sent_token=True) == "no job 'x' (404 unknown_job)"


def test_status_says_how_much_room_the_history_takes_in_units_for_humans() -> None:
    assert [tables.size(n) for n in (0, 1023, 1024, 1536 * 1024, 3 * 2**30, 5 * 2**50)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 MiB", "3.0 GiB", "5120.0 TiB",
    ]  # fmt: skip
    line = tables.history_size({"executions": 3 * 2**30, "job_items": 512 * 2**20})
    assert line == "history: 3.5 GiB in the database (executions 3.0 GiB, job_items 512.0 MiB)"
