"""Input that once escaped validation: each is a config error with its line, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.errors import ConfigError
from scheduler_daemon.operation import cli
from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.specs import JobSpec, load_config
from tests.helpers import FakeClock

GOOD = """\
database: {url: "postgresql:///nowhere"}
jobs:
  kept: {every: 1h, command: ["true"]}
"""
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(6)
)

# (what the file says, the path the error must name)
CMD, PY = "command: ['true']", "python: 'm:f'"
BAD = {
    "invalid_date_in_args": (f"every: 1h, {PY}, args: {{day: 2026-02-30}}", "jobs.j.args.day"),
    "invalid_month_in_at": (f"at: 2026-13-01, {CMD}", "jobs.j.at"),
    "infinite_every": (f"every: .inf, {CMD}", "jobs.j.every"),
    "infinite_every_text": (f"every: inf, {CMD}", "jobs.j.every"),
    "huge_every": (f"every: 3000000d, {CMD}", "jobs.j.every"),
    "huge_timeout": (f"every: 1h, timeout: 400d, {CMD}", "jobs.j.timeout"),
    "tiny_every": (f"every: 0.0000000001, {CMD}", "jobs.j.every"),
    "nan_backoff": (f"every: 1h, retry: {{backoff: .nan}}, {CMD}", "jobs.j.retry.backoff"),
    "at_near_year_10000": (f"at: '9999-12-31T23:00:00-05:00', {CMD}", "jobs.j.at"),
    "huge_integer": (f"every: 1h, max_instances: {'9' * 5000}, {CMD}", "jobs.j"),
    "alias_loop": (f"every: 1h, {PY}, args: {{x: &a [*a]}}", "jobs.j.args.x"),
    "merge_loop": (f"every: 1h, {PY}, args: &m {{<<: *m}}", "jobs.j.args"),
}


def _text(job: str) -> str:
    return 'database: {url: "postgresql:///nowhere"}\njobs:\n' + _job(job) + "\n"


def _job(fields: str) -> str:
    return "  j: {" + fields + "}"


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_a_config_error_naming_its_place(tmp_path: Path, name: str) -> None:
    job, place = BAD[name]
    path = tmp_path / "config.yaml"
    path.write_text(_text(job))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert any(f"{path}:3: {place}" in problem for problem in caught.value.problems), (
        caught.value.problems
    )


def test_an_alias_bomb_is_refused_quickly_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BOMB + _text(f"every: 1h, {CMD}"))
    assert len(path.read_bytes()) < 500  # expands to 10**7 values
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}:") and "alias" in problem


def test_deep_nesting_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(_text(f"every: 1h, {PY}, args: {{x: {'[' * 100}{']' * 100}}}"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert any("nested" in p for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize("name", sorted(BAD))
def test_check_prints_each_bad_input_as_an_error_line(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(_text(BAD[name][0]))
    assert cli.main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: " in err and "Traceback" not in err


@pytest.mark.parametrize("name", sorted(BAD))
async def test_a_reload_with_bad_input_keeps_the_old_schedule(tmp_path: Path, name: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD)
    daemon = Daemon(load_config(path), clock=FakeClock())
    daemon.scheduler.set_jobs(daemon.config.jobs)
    running, next_fire = daemon.config, daemon.scheduler.next_fire("kept")
    path.write_text(GOOD + _job(BAD[name][0]) + "\n")
    with capture_logs() as logs:
        assert await daemon.reload() is False
    assert [e["event"] for e in logs] == ["reload_failed"]
    assert daemon.config is running and daemon.scheduler.next_fire("kept") == next_fire
    assert daemon.scheduler.job("j") is None
    assert daemon.reload_error is not None and daemon.metrics.reloads["failed"] == 1


async def test_any_exception_while_loading_is_a_failed_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD)
    daemon = Daemon(load_config(path), clock=FakeClock())
    daemon.scheduler.set_jobs(daemon.config.jobs)
    running = daemon.config

    def broken(path: Path, blocks: object, running: object, jobs: object) -> None:
        raise ValueError("day is out of range for month")

    monkeypatch.setattr("scheduler_daemon.operation.job_set.load_for_reload", broken)
    with capture_logs() as logs:
        assert await daemon.reload() is False
    [failed] = [e for e in logs if e["event"] == "reload_failed"]
    assert "ValueError" in str(failed) and daemon.config is running
    assert daemon.reload_error is not None


async def test_an_exception_while_applying_restores_the_old_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD + "  other: {every: 1h, command: ['true']}\n")
    daemon = Daemon(load_config(path), clock=FakeClock())
    daemon.scheduler.set_jobs(daemon.config.jobs)
    running = daemon.config
    before = {name: daemon.scheduler.job(name) for name in ("kept", "other")}
    path.write_text(GOOD.replace("1h", "2h") + "  new: {every: 1h, command: ['true']}\n")
    add = daemon.scheduler.add

    def failing_add(job, *, after=None):  # type: ignore[no-untyped-def]
        if job.name == "new":
            raise RuntimeError("boom")
        return add(job, after=after)

    monkeypatch.setattr(daemon.scheduler, "add", failing_add)
    with capture_logs() as logs:
        assert await daemon.reload() is False
    assert "reload_failed" in [e["event"] for e in logs]
    monkeypatch.undo()
    assert daemon.config is running
    assert {name: daemon.scheduler.job(name) for name in ("kept", "other")} == before
    assert daemon.scheduler.job("new") is None


def test_a_schedule_that_cannot_compute_its_first_fire_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(_text(f"every: 1h, {CMD}") + "  k:\n    cron: '0 5 * * *'\n    " + CMD + "\n")

    def first_fire(job: JobSpec) -> None:
        if job.name == "k":
            raise OverflowError("date value out of range")

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={}, first_fire=first_fire)
    assert caught.value.problems == [
        f"{path}:5: jobs.k.cron: expected a schedule whose next fire can be computed, "
        "got OverflowError"
    ]


@pytest.mark.parametrize("name", [".", ".."])
def test_a_job_cannot_be_named_dot_or_dot_dot(tmp_path: Path, name: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(_text(f"every: 1h, {CMD}").replace("  j:", f"  '{name}':"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems == [
        f"{path}:3: jobs.{name}: expected a job name other than '.' and '..', got {name!r}"
    ]


@pytest.mark.parametrize("key", ["every", "cron", "at", "command", "shell", "http", "python"])
def test_a_schedule_or_action_under_defaults_is_refused(tmp_path: Path, key: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("defaults:\n  timeout: 1m\n  " + key + ": x\n" + _text(f"every: 1h, {CMD}"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems == [
        f"{path}:3: defaults.{key}: `{key}` cannot be a default: write it on each job"
    ]
