"""`scheduler-daemon jobs list|show|apply|delete|export` in-process, against a real PostgreSQL.

The config file's jobs get their rows as the daemon syncs them (``store.sync_jobs``); the jobs
applied here are ``source = 'api'`` rows. (The installed CLI as a process: tests/e2e.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from scheduler_daemon.operation.cli import main
from scheduler_daemon.specs import load_config
from scheduler_daemon.specs.api_job import ApiJobRules, build_api_job
from scheduler_daemon.storage import job_store, store
from tests.helpers import free_port

ENV = {"JOB_TOKEN": "job-secret-83be21", "GREETING": "hello"}

APPLIED = """\
jobs:
  report:
    every: 10m
    http:
      url: http://127.0.0.1:9/report
      method: POST
      headers: {X-Api-Key: {env: API_TOKEN}, Accept: text/plain}
      json: {day: 2026-11-27}
  tidy:
    cron: "0 3 * * *"
    enabled: false
    command: ["true"]
    env: {COST: "5$"}
"""


def write_config(tmp_path: Path, dsn: str, *, kinds: str = "[command]") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""\
database: {{url: "{dsn}"}}
state_dir: ./state
timezone: Europe/Berlin
admin:
  listen: 127.0.0.1:9
  allow_job_kinds: {kinds}
  allow_env: [API_TOKEN]
jobs:
  ping:
    every: 1h
    timeout: 30s
    http:
      url: http://127.0.0.1:9/ping
      headers: {{Authorization: "Bearer ${{JOB_TOKEN}}", Cookie: "plain-secret"}}
  shell:
    cron: "@reboot"
    shell: "echo $$HOME ${{GREETING}} >> out.txt"
    env: {{WHO: "${{GREETING}} world"}}
    retry: {{attempts: 3}}
"""
    )
    return path


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDULER_DATABASE_URL", raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    path = write_config(tmp_path, database_url)
    # The rows the daemon keeps of the config file's jobs.
    asyncio.run(_sync(database_url, path))
    return path


async def _sync(dsn: str, path: Path) -> None:
    pool = await store.connect(dsn)
    try:
        await store.sync_jobs(pool, load_config(path).jobs, {})
    finally:
        await pool.close()


def jobs(capsys: pytest.CaptureFixture[str], config: Path, *command: str) -> tuple[int, str, str]:
    code = main(["jobs", *command, "-c", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def apply(
    capsys: pytest.CaptureFixture[str], config: Path, text: str, *options: str
) -> tuple[int, str, str]:
    file = config.parent / "jobs.yaml"
    file.write_text(text)
    return jobs(capsys, config, "apply", "-f", str(file), *options)


def rows(dsn: str) -> dict[str, dict[str, Any]]:
    async def read() -> dict[str, dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            found = await conn.fetch("SELECT * FROM jobs WHERE removed_at IS NULL")
        finally:
            await conn.close()
        return {row["name"]: dict(row) for row in found}

    return asyncio.run(read())


def test_apply_creates_then_leaves_unchanged_then_updates(
    config: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = apply(capsys, config, APPLIED)
    assert (code, err) == (0, "")
    assert out == "created report (version 1)\ncreated tidy (version 1)\n"
    stored = rows(database_url)
    assert stored["report"]["source"] == "api" and stored["report"]["enabled"] is True
    assert stored["tidy"]["enabled"] is False
    definition = json.loads(stored["report"]["definition"])
    assert definition["http"]["headers"]["X-Api-Key"] == {"env": "API_TOKEN"}
    assert definition["timezone"] == "Europe/Berlin"  # the config's zone, made explicit
    rules = ApiJobRules.of(load_config(config))
    job, _ = build_api_job("report", definition, rules, environ=None)
    assert json.loads(stored["report"]["spec"]) == job.redacted()

    code, out, _ = apply(capsys, config, APPLIED)
    assert (code, out) == (0, "unchanged report\nunchanged tidy\n")
    again = rows(database_url)
    assert [again[n]["version"] for n in ("report", "tidy")] == [1, 1]
    assert again["report"]["updated_at"] == stored["report"]["updated_at"]

    code, out, _ = apply(capsys, config, APPLIED.replace("every: 10m", "every: 15m"))
    assert (code, out) == (0, "updated report (version 2)\nunchanged tidy\n")
    assert json.loads(rows(database_url)["report"]["definition"])["every"] == "15m"


def test_apply_reads_json_from_stdin(
    config: Path, database_url: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    body = {"jobs": {"hook": {"every": "5m", "http": {"url": "http://127.0.0.1:9/hook"}}}}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(body)))
    code, out, err = jobs(capsys, config, "apply", "-f", "-")
    assert (code, out, err) == (0, "created hook (version 1)\n", "")
    assert rows(database_url)["hook"]["version"] == 1


def test_apply_refuses_a_kind_the_config_does_not_allow(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, database_url, kinds="[command]")
    shell_job = "jobs:\n  sh: {every: 1h, shell: 'echo hi'}\n"
    code, out, err = apply(capsys, config, shell_job)
    assert (code, out) == (1, "")
    assert "jobs.sh.shell: `shell` jobs cannot be created" in err
    assert "admin.allow_job_kinds" in err
    assert "sh" not in rows(database_url)

    config = write_config(tmp_path, database_url, kinds="[command, shell]")
    code, out, _ = apply(capsys, config, shell_job)
    assert (code, out) == (0, "created sh (version 1)\n")


def test_apply_of_a_name_in_the_config_file_is_refused_and_writes_nothing(
    config: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = APPLIED + "  ping: {every: 1m, http: {url: 'http://127.0.0.1:9/other'}}\n"
    code, out, err = apply(capsys, config, text)
    assert (code, out) == (1, "")
    assert f"defined in the config file {config}: ping" in err
    assert "Nothing written" in err
    assert set(rows(database_url)) == {"ping", "shell"}
    assert rows(database_url)["ping"]["source"] == "config"


def test_an_invalid_file_reports_every_problem_at_its_line_and_writes_nothing(
    config: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = """\
jobs:
  fine:
    every: 1h
    http: {url: "http://127.0.0.1:9/"}
  broken:
    every: often
    http:
      url: ftp://nowhere
  secret:
    every: 1h
    http:
      url: http://127.0.0.1:9/
      headers: {Authorization: "Bearer abc", X-Token: "${JOB_TOKEN}"}
  nokind:
    every: 1h
defaults: {timeout: 5s}
"""
    code, out, err = apply(capsys, config, text)
    assert (code, out) == (1, "")
    file = config.parent / "jobs.yaml"
    lines = err.splitlines()
    assert lines[-1] == f"6 error(s) in {file}: nothing written"
    assert f"{file}:6: jobs.broken.every: " in err
    assert f"{file}:8: jobs.broken.http.url: " in err
    assert f"{file}:13: jobs.secret.http.headers.Authorization: 'Authorization' looks like" in err
    assert f"{file}:13: jobs.secret.http.headers.X-Token: ${{...}} is not expanded" in err
    assert f"{file}:14: jobs.nokind: expected exactly one action" in err
    assert f"{file}:16: defaults: `defaults:` is not taken by `jobs apply`" in err
    assert set(rows(database_url)) == {"ping", "shell"}  # not even `fine`


def test_prune_deletes_the_api_jobs_the_file_lacks(
    config: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    apply(capsys, config, APPLIED)
    only_report = APPLIED.split("  tidy:")[0]
    code, out, _ = apply(capsys, config, only_report, "--prune")
    assert (code, out) == (0, "unchanged report\ndeleted tidy\n")
    assert set(rows(database_url)) == {"ping", "shell", "report"}  # config jobs stay


def test_delete_an_api_job_prints_it_and_refuses_config_and_unknown_ones(
    config: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    apply(capsys, config, APPLIED)
    code, out, err = jobs(capsys, config, "delete", "tidy")
    assert (code, err) == (0, "")
    assert out.startswith("# deleted tidy (was version 1)")
    assert "tidy" not in rows(database_url)
    # What it printed restores the job.
    code, out, _ = apply(capsys, config, out)
    assert (code, out) == (0, "created tidy (version 3)\n")  # a version past the deleted one's

    code, out, err = jobs(capsys, config, "delete", "ping")
    assert (code, out) == (1, "")
    assert err == (
        f"error: job 'ping' is defined in the config file {config}: remove it there (and "
        "reload); `jobs delete` deletes only the jobs kept in the database\n"
    )
    code, _, err = jobs(capsys, config, "delete", "nope")
    assert (code, err) == (1, "error: no job named 'nope'\n")
    assert {"ping", "report", "tidy"} <= set(rows(database_url))


def test_list_and_show_both_sources(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    apply(capsys, config, APPLIED)
    code, out, _ = jobs(capsys, config, "list")
    assert code == 0
    table = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split() == ["JOB", "SOURCE", "KIND", "STATE", "VERSION", "NEXT"]
    assert table["report"][:5] == ["report", "api", "http", "enabled", "1"]
    assert table["tidy"][:5] == ["tidy", "api", "command", "disabled", "1"]
    assert table["shell"][:5] == ["shell", "config", "shell", "enabled", "-"]
    code, out, _ = jobs(capsys, config, "list", "--json")
    listed = {job["name"]: job for job in json.loads(out)}
    assert listed["ping"] == {
        "name": "ping", "source": "config", "kind": "http", "enabled": True, "paused": False,
        "version": None, "next_run_at": None,
    }  # fmt: skip
    assert listed["report"]["version"] == 1

    code, out, _ = jobs(capsys, config, "show", "report")
    assert code == 0 and out.startswith("# source: api, version 1\n# created ")
    assert "X-Api-Key:\n          env: API_TOKEN" in out  # the reference, as written
    code, again, _ = apply(capsys, config, out)  # what `show` prints, `apply` takes
    assert again == "unchanged report\n"

    code, out, _ = jobs(capsys, config, "show", "ping")
    assert out.startswith(f"# source: config, defined in {config} (secrets redacted)\n")
    assert "Bearer ${JOB_TOKEN}" in out and "plain-secret" not in out
    assert ENV["JOB_TOKEN"] not in out
    code, out, _ = jobs(capsys, config, "show", "ping", "--json")
    assert json.loads(out)["spec"]["action"]["url"] == "http://127.0.0.1:9/ping"
    code, _, err = jobs(capsys, config, "show", "nope")
    assert (code, err) == (1, "error: no job named 'nope'\n")


def test_export_round_trips_through_check(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    apply(capsys, config, APPLIED)
    code, out, err = jobs(capsys, config, "export")
    assert (code, err) == (0, "")
    assert ENV["JOB_TOKEN"] not in out and ENV["GREETING"] not in out and "plain-secret" not in out
    assert "  # source: config\n  ping:\n" in out
    assert "  # source: api, version 1\n  report:\n" in out
    exported = tmp_path / "exported.yaml"
    exported.write_text(out)
    monkeypatch.setenv("API_TOKEN", "api-secret")
    code, checked, err = main(["check", "-c", str(exported)]), *capsys.readouterr()
    assert (code, err) == (0, "")
    assert checked.endswith(f"{exported}: OK, 4 job(s)\n")

    original, back = load_config(config), load_config(exported)
    for job in original.jobs:  # the same jobs: the masked Cookie apart
        again = back.job(job.name)
        assert again is not None
        if job.name == "ping":
            assert again.http is not None and again.http.headers["Cookie"] == "***"
            assert again.http.headers["Authorization"] == f"Bearer {ENV['JOB_TOKEN']}"
            again = again.model_copy(update={"http": job.http})
        assert again == job
    tidy = back.job("tidy")
    assert tidy is not None and tidy.env == {"COST": "5$"} and not tidy.enabled
    report = back.job("report")
    assert report is not None and report.http is not None
    assert report.http.headers["X-Api-Key"] == "api-secret"  # ${API_TOKEN}, as a config writes it


def test_a_job_changed_meanwhile_fails_the_whole_apply(
    config: Path, database_url: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    apply(capsys, config, APPLIED.split("  tidy:")[0])  # report, version 1
    read = job_store.api_jobs

    async def stale(db: Any) -> list[job_store.StoredJob]:
        # What apply read is one version behind: someone wrote report since.
        return [dataclasses.replace(job, version=job.version - 1) for job in await read(db)]

    monkeypatch.setattr(job_store, "api_jobs", stale)
    report, tidy = APPLIED.removeprefix("jobs:\n").split("  tidy:")
    tidy_first = f"jobs:\n  tidy:{tidy}{report}".replace("every: 10m", "every: 1m")
    code, out, err = apply(capsys, config, tidy_first)
    assert (code, out) == (1, "")
    assert "job 'report' is at version 1, not 0: someone changed it meanwhile" in err
    assert "Nothing written" in err
    assert "tidy" not in rows(database_url)  # created before the refusal: rolled back
    assert json.loads(rows(database_url)["report"]["definition"])["every"] == "10m"


def test_an_unreachable_database_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = write_config(tmp_path, f"postgresql://bob:s3cr3t@127.0.0.1:{port}/jobs")
    code, out, err = jobs(capsys, config, "list")
    assert (code, out) == (1, "")
    assert err == (
        f"error: cannot connect to postgresql://bob@127.0.0.1:{port}/jobs: connection refused\n"
    )
