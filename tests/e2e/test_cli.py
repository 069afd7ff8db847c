"""The command line as a user runs it: check, next, exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scheduler_daemon.operation.cli import main
from scheduler_daemon.specs import load_config
from tests.helpers import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_check_accepts_the_shipped_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(REPO / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "heartbeat" in out and "every 10" in out and "next:" in out
    assert "prices" in out and "disabled" in out


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "examples").glob("*.yaml")))
def test_check_accepts_every_example(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["check", "-c", str(REPO / "examples" / name)]) == 0


def test_the_shipped_configs_each_have_a_state_dir_of_their_own() -> None:
    # One daemon per state_dir: the examples must run beside the quick start.
    configs = [REPO / "config.yaml", *sorted((REPO / "examples").glob("*.yaml"))]
    states = [load_config(path, environ={}).state_dir for path in configs]
    assert len(set(states)) == len(configs), states


def test_check_lists_every_error_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """\
        jobs:
          a:
            cron: "61 * * * *"
            command: ["true"]
          b:
            every: 10s
            timezone: Mars/Olympus
            command: ["true"]
    """,
    )
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: jobs.a.cron:" in err
    assert f"{path}:7: jobs.b.timezone:" in err
    assert "Traceback" not in err


def test_next_prints_fire_times_in_the_jobs_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """\
        jobs:
          open:
            cron: "0 0 10 * * MON-FRI"
            timezone: America/Sao_Paulo
            command: ["true"]
          tick:
            every: 15m
            command: ["true"]
    """,
    )
    assert main(["next", "-c", str(path), "-n", "2", "--after", "2026-11-27T12:00:00Z"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "open 2026-11-27T10:00:00-03:00",  # a Friday
        "open 2026-11-30T10:00:00-03:00",  # then Monday
        "tick 2026-11-27T12:15:00+00:00",
        "tick 2026-11-27T12:30:00+00:00",
    ]
    assert main(["next", "-c", str(path), "-n", "1", "--after", "2026-11-27T12:00:00", "tick"]) == 0
    assert capsys.readouterr().out.splitlines() == ["tick 2026-11-27T12:15:00+00:00"]


def test_next_rejects_unknown_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'jobs:\n  a: {every: 1s, command: ["true"]}\n')
    assert main(["next", "-c", str(path), "nope"]) == 2
    assert "unknown job(s): nope" in capsys.readouterr().err


def test_missing_config_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", str(tmp_path / "absent.yaml")]) == 1
    assert "absent.yaml" in capsys.readouterr().err


def test_module_entry_point_and_console_script_work() -> None:
    for argv in (
        [sys.executable, "-m", "scheduler_daemon", "--version"],
        [str(Path(sys.executable).with_name("scheduler-daemon")), "--version"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "scheduler-daemon" in done.stdout
