"""The command line as a user runs it: check, next, exit codes and messages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler_daemon.operation.cli import main
from scheduler_daemon.specs import load_config
from tests.helpers import DAEMON, REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_check_accepts_the_shipped_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(REPO / "config.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["JOB", "KIND", "SCHEDULE", "NEXT"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert "Every 10s" in rows["heartbeat"] and "disabled" in rows["prices"]
    # The schedule in words (not the raw cron), in aligned columns.
    assert "At 02:30 (America/Sao_Paulo)" in rows["nightly_vacuum"]
    assert len({line.index(line.split()[2]) for line in lines[1:-1]}) == 1


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
    assert capsys.readouterr().err == (
        f"error: no config file at {tmp_path / 'absent.yaml'}"
        " (give one with -c PATH or $SCHEDULER_CONFIG)\n"
    )


def _run(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DAEMON), "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda d: d / "absent.yaml",
            r"error: no config file at .*absent\.yaml"
            r" \(give one with -c PATH or \$SCHEDULER_CONFIG\)",
        ),
        (lambda d: d, r"error: cannot read config file .*: Is a directory \(as user \w+\)"),
        (
            lambda d: write(d, 'state_dir: f/var\njobs: {a: {every: 1s, command: ["true"]}}\n'),
            r"error: cannot use state_dir .*/f/var: Not a directory \(as user \w+\)",
        ),
    ],
    ids=["missing", "unreadable", "unusable-state-dir"],
)
def test_run_refuses_to_start_in_one_line_with_exit_78(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    """78 (EX_CONFIG): the unit's RestartPreventExitStatus, so systemd does not restart a daemon
    that cannot start until someone fixes its config or state_dir."""
    (tmp_path / "f").write_text("a file where state_dir wants a directory")
    done = _run(make(tmp_path))
    assert done.returncode == 78, done.stderr
    assert re.fullmatch(expected + "\n", done.stderr), done.stderr
    assert done.stdout == ""


def test_run_with_an_invalid_config_lists_the_problems_and_exits_78(tmp_path: Path) -> None:
    done = _run(write(tmp_path, "jobs:\n  a: {every: nope, command: [x]}\n"))
    assert done.returncode == 78
    assert "config.yaml:2: jobs.a.every:" in done.stderr and "Traceback" not in done.stderr


def test_an_unusable_state_dir_under_systemd_says_where_state_belongs(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    config = write(
        tmp_path, 'state_dir: /proc/nope/var\njobs: {a: {every: 1s, command: ["true"]}}\n'
    )
    done = _run(config, {"STATE_DIRECTORY": str(tmp_path / "state")})
    assert done.returncode == 78
    assert done.stderr.endswith(
        f"; under systemd, leave state_dir unset to use $STATE_DIRECTORY ({tmp_path / 'state'})\n"
    )
    assert done.stderr.count("\n") == 1


def test_module_entry_point_and_console_script_work() -> None:
    for argv in (
        [sys.executable, "-m", "scheduler_daemon", "--version"],
        [str(Path(sys.executable).with_name("scheduler-daemon")), "--version"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "scheduler-daemon" in done.stdout


def test_output_cut_short_by_a_closed_pipe_is_not_a_traceback() -> None:
    # `scheduler-daemon status --json | head`: the reader leaves before the writer is done.
    daemon = Path(sys.executable).with_name("scheduler-daemon")
    done = subprocess.run(
        f"'{daemon}' schema | true", shell=True, capture_output=True, text=True, check=False
    )
    assert done.stderr == ""  # `true` is gone long before the schema is written
