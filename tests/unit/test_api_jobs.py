"""The database's jobs in the daemon, without a database: building, adopting, the copy on disk,
and their changes applied to the schedule like a reload (a Daemon object, never started)."""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import Collection
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from scheduler_daemon.errors import ConfigError
from scheduler_daemon.operation.api_jobs import RECONNECT_EVERY, follow_changes
from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.operation.job_handlers import merge_patch
from scheduler_daemon.specs import load_config
from scheduler_daemon.specs.api_job import ApiJobRules, JobProblems, build_api_job
from scheduler_daemon.storage.job_store import StoredJob
from tests.helpers import FakeClock

CONFIG = """\
database: {url: "postgresql:///nowhere"}
timezone: Europe/Paris
admin:
  listen: 127.0.0.1:9
  allow_env: [HOOK_TOKEN]
jobs:
  filed: {every: 1h, command: ["true"]}
"""
T = datetime(2026, 1, 1, tzinfo=UTC)
RULES = ApiJobRules(kinds=frozenset(), env=frozenset({"HOOK_TOKEN"}), timezone="UTC")


def stored(name: str, version: int = 1, **fields: Any) -> StoredJob:
    definition = fields or {"every": "1h", "http": {"url": "http://127.0.0.1:9/"}}
    return StoredJob(name=name, definition=definition, version=version, created_at=T, updated_at=T)


def daemon_of(tmp_path: Path) -> Daemon:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("jobs:", f"state_dir: {tmp_path / 'state'}\njobs:"))
    daemon = Daemon(load_config(path), clock=FakeClock())
    daemon.scheduler.set_jobs(daemon.config.jobs)
    return daemon


# -- building a job from its body ------------------------------------------------------------------


def test_the_stored_definition_keeps_references_and_gets_the_configs_zone() -> None:
    rules = ApiJobRules(kinds=frozenset(), env=frozenset({"HOOK_TOKEN"}), timezone="Asia/Tokyo")
    body = {
        "cron": "0 9 * * *",
        "http": {"url": "http://127.0.0.1:9/", "headers": {"Authorization": {"env": "HOOK_TOKEN"}}},
    }
    job, definition = build_api_job("hook", body, rules, environ={"HOOK_TOKEN": "s3cret"})
    assert job.timezone == "Asia/Tokyo" and definition["timezone"] == "Asia/Tokyo"
    assert definition["http"]["headers"] == {"Authorization": {"env": "HOOK_TOKEN"}}
    assert job.action.headers == {"Authorization": "s3cret"}  # type: ignore[union-attr]
    assert "s3cret" not in str(job.redacted())


def test_a_date_from_a_yaml_file_is_stored_as_text() -> None:
    fields = {"at": datetime(2030, 1, 2, 3, 4, tzinfo=UTC), "http": {"url": "http://h/"}}
    job, definition = build_api_job("once", fields, RULES, environ={})
    assert definition["at"] == "2030-01-02T03:04:00+00:00" and job.at == fields["at"]
    _, definition = build_api_job(
        "day", {"at": date(2030, 1, 2), "http": {"url": "http://h/"}}, RULES, environ={}
    )
    assert definition["at"] == "2030-01-02"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"API_KEY": "in-clear"}, "'API_KEY' looks like a secret"),
        ({"X": {"env": "HOOK_TOKEN", "default": "x"}}, 'expected a string or {"env": "NAME"}'),
        ({"X": {"env": "HOME"}}, "'HOME' is not in admin.allow_env"),
        ({"X": {"env": "HOOK_TOKEN"}}, "'HOOK_TOKEN' is not set in the daemon's environment"),
    ],
)
def test_a_commands_environment_takes_secrets_only_as_allowed_references(
    env: dict[str, Any], problem: str
) -> None:
    rules = ApiJobRules(kinds=frozenset({"command"}), env=frozenset({"HOOK_TOKEN"}), timezone="UTC")
    with pytest.raises(JobProblems) as refused:
        build_api_job("c", {"every": "1h", "command": ["true"], "env": env}, rules, environ={})
    [(path, message)] = refused.value.problems
    assert path == ("env", next(iter(env))) and problem in message


def test_a_process_without_the_daemons_environment_checks_only_the_allowance() -> None:
    body = {"every": "1h", "http": {"url": "http://h/", "headers": {"X": {"env": "HOOK_TOKEN"}}}}
    build_api_job("cli", body, RULES, environ=None)  # the CLI: no value to resolve


def test_merge_patch_follows_rfc_7396() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"a": ["b"]}, {"a": ["c"]}) == {"a": ["c"]}  # arrays are replaced
    assert merge_patch({"a": "b"}, {"b": {"c": None}}) == {"a": "b", "b": {}}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}}  # untouched


# -- adopting the database's view ------------------------------------------------------------------


async def test_a_change_is_applied_like_a_reload_and_an_unchanged_job_keeps_its_entry(
    tmp_path: Path,
) -> None:
    daemon = daemon_of(tmp_path)
    filed = daemon.scheduler.job("filed")
    api = daemon.api_jobs
    assert api.adopt([stored("a"), stored("b")], taken=daemon.jobs.file_names)
    await daemon.jobs._api_jobs_changed()
    entry_a = daemon.scheduler.job("a")
    assert [job.name for job in daemon.all_jobs] == ["filed", "a", "b"]
    # Same versions: nothing rebuilt, nothing rescheduled.
    assert not api.adopt([stored("a"), stored("b")], taken=daemon.jobs.file_names)
    # b changes, a is deleted.
    assert api.adopt([stored("b", 2, every="2h", http={"url": "http://h/"})], taken=())
    await daemon.jobs._api_jobs_changed()
    assert daemon.scheduler.job("a") is None and entry_a is not None
    assert daemon.job("b").every == 7200.0  # type: ignore[union-attr]
    assert daemon.job("a") is None and daemon.job("filed") is filed
    assert daemon.scheduler.job("filed") is filed
    assert [job.name for job in daemon.all_jobs] == ["filed", "b"]
    assert [job.name for job in daemon.config.jobs] == ["filed"]  # the file's, untouched


def test_a_stored_job_this_daemon_may_not_run_is_refused_with_its_reason(tmp_path: Path) -> None:
    daemon = daemon_of(tmp_path)
    api = daemon.api_jobs
    shell = stored("sh", every="1h", shell="id")
    assert not api.adopt([shell, stored("filed")], taken=daemon.jobs.file_names)
    assert set(api.refused) == {"sh", "filed"}
    assert "admin.allow_job_kinds" in api.refused["sh"]
    assert "the config file defines a job of this name" in api.refused["filed"]
    assert api.specs == {}


async def test_a_start_reads_the_copy_when_the_database_is_away(tmp_path: Path) -> None:
    first = daemon_of(tmp_path)
    first.api_jobs.adopt([stored("kept")])
    cache = first.api_jobs.cache
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    second = daemon_of(tmp_path)
    await second.jobs.start(database_reached=False)
    assert [job.name for job in second.all_jobs] == ["filed", "kept"]
    assert second.api_jobs.stored["kept"].version == 1


async def test_a_start_refuses_a_stored_job_the_file_defines_too(tmp_path: Path) -> None:
    daemon_of(tmp_path).api_jobs.adopt([stored("filed")])
    with pytest.raises(ConfigError) as refused:
        await daemon_of(tmp_path).jobs.start(database_reached=False)
    assert "jobs.filed: the name is taken by a job created through the API" in str(refused.value)
    assert "config.yaml" in str(refused.value)


async def test_nothing_is_read_before_the_first_connection_settles_then_every_job() -> None:
    clock = FakeClock()
    settled = asyncio.Event()
    rereads: list[Collection[str] | None] = []

    def unreachable() -> str:
        raise RuntimeError("the embedded PostgreSQL is not started")

    async def reread(names: Collection[str] | None) -> None:
        rereads.append(names)

    loop = asyncio.create_task(
        follow_changes(clock=clock, dsn=unreachable, ready=settled.is_set, reread=reread)
    )
    try:
        await clock.advance(RECONNECT_EVERY * 5 + 0.01)
        assert rereads == []
        settled.set()
        await clock.advance(RECONNECT_EVERY * 2 + 0.01)
        assert rereads and all(names is None for names in rereads)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


async def test_without_notifications_the_jobs_are_still_reread_periodically() -> None:
    clock = FakeClock()
    rereads: list[float] = []

    def unreachable() -> str:
        raise RuntimeError("the embedded PostgreSQL is not started")

    async def reread(names: Collection[str] | None) -> None:
        assert names is None  # nobody listens: every job
        rereads.append(clock.monotonic())

    loop = asyncio.create_task(
        follow_changes(clock=clock, dsn=unreachable, ready=lambda: True, reread=reread)
    )
    try:
        await clock.advance(RECONNECT_EVERY * 3 + 0.01)
        assert len(rereads) == 3  # each attempt to listen that failed was followed by a re-read
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
