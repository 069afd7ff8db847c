"""Applying a reload plan: a Daemon object, never started (no database, no process)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.specs import JobSpec, load_config
from scheduler_daemon.specs.job_blocks import JobBlocks
from tests.helpers import FakeClock

BEFORE = """\
database: {url: "postgresql:///nowhere"}
node: n1
max_concurrency: 4
jobs:
  kept: {every: 1h, command: ["true"]}
  changed: {every: 1h, command: ["true"]}
  removed: {every: 1h, command: ["true"]}
"""
AFTER = """\
database: {url: "postgresql:///nowhere"}
node: n2
max_concurrency: 8
jobs:
  kept: {every: 1h, command: ["true"]}
  changed: {every: 30m, command: ["true"]}
  added: {every: 1h, command: ["true"]}
"""


async def test_a_reload_applies_the_plan_and_keeps_restart_only_settings(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BEFORE)
    daemon = Daemon(load_config(path), clock=FakeClock())
    daemon.scheduler.set_jobs(daemon.config.jobs)
    kept = daemon.config.job("kept")
    path.write_text(AFTER)
    with capture_logs() as logs:
        assert await daemon.reload() is True
    events = {e["event"]: e for e in logs}
    assert {k: events["reload_succeeded"][k] for k in ("added", "removed", "changed")} == {
        "added": 1,
        "removed": 1,
        "changed": 1,
    }
    assert events["reload_needs_restart"]["settings"] == ["node"]
    assert daemon.config.node == "n1" and daemon.config.max_concurrency == 8
    assert daemon.config.job("kept") is kept
    assert daemon.scheduler.job("removed") is None
    assert daemon.scheduler.job("added") is daemon.config.job("added")
    assert daemon.scheduler.job("changed") is daemon.config.job("changed")
    assert daemon.reload_error is None and daemon.metrics.reloads["succeeded"] == 1


async def test_an_invalid_file_leaves_everything_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BEFORE)
    daemon = Daemon(load_config(path), clock=FakeClock())
    daemon.scheduler.set_jobs(daemon.config.jobs)
    running = daemon.config
    path.write_text(BEFORE.replace("every: 1h", "every: soon", 1))
    with capture_logs() as logs:
        assert await daemon.reload() is False
    assert [e["event"] for e in logs] == ["reload_failed"]
    assert daemon.config is running
    assert daemon.reload_error is not None and "1 error(s)" in daemon.reload_error
    assert daemon.metrics.reloads["failed"] == 1
    assert "last reload FAILED" in daemon.status_line()


async def test_a_reload_digests_only_the_jobs_whose_text_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100k unchanged jobs cost 5 s of digests on every reload before.
    path = tmp_path / "config.yaml"
    jobs = "".join(f'  j{i}: {{every: 1h, command: ["true"]}}\n' for i in range(50))
    path.write_text(BEFORE + jobs)
    blocks = JobBlocks()
    daemon = Daemon(load_config(path, blocks=blocks), clock=FakeClock(), blocks=blocks)
    daemon.scheduler.set_jobs(daemon.config.jobs)
    digested: list[str] = []
    spec_hash = JobSpec.spec_hash

    def counted(job: JobSpec) -> str:
        digested.append(job.name)
        return spec_hash(job)

    monkeypatch.setattr(JobSpec, "spec_hash", counted)
    path.write_text(AFTER + jobs)
    with capture_logs() as logs:
        assert await daemon.reload() is True
    [done] = [e for e in logs if e["event"] == "reload_succeeded"]
    assert (done["changed"], done["jobs_reused"]) == (1, 51)
    assert sorted(set(digested)) == ["changed"]


async def test_api_writes_check_chains_against_the_file_as_last_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BEFORE + '  first: {every: 1h, command: ["true"], then: [kept]}\n')
    daemon = Daemon(load_config(path), clock=FakeClock())
    chains = daemon.jobs._chains_of_file_jobs
    assert chains() == {"first": ("kept",)}
    assert chains() is chains()  # worked out once, not at every API write
    path.write_text(AFTER + '  first: {every: 1h, command: ["true"], then: [changed]}\n')
    assert await daemon.reload() is True
    assert chains() == {"first": ("changed",)}
