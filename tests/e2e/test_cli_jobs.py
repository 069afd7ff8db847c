"""`scheduler-daemon jobs ...`: the installed CLI, a process per command, on a real database.

The paths in detail run in-process in tests/pg/test_jobs_cli.py; here, the workflow as an
operator meets it: apply a file (and again), change it, read it back, export every job into a
config that `check` accepts, delete.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.helpers import REPO, free_port, start_daemon

CLI = Path(sys.executable).with_name("scheduler-daemon")
SECRETS = {"JOB_TOKEN": "job-secret-83be21", "API_TOKEN": "api-secret-0c4f"}


async def cli(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SCHEDULER_DATABASE_URL"}
    proc = await asyncio.create_subprocess_exec(
        str(CLI), *args,
        env={**env, **SECRETS, "PYTHONPATH": str(REPO)},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
    return await proc.wait(), out.decode(), err.decode()


def write_config(tmp_path: Path, dsn: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""\
database: {{url: "{dsn}"}}
state_dir: ./state
admin:
  listen: 127.0.0.1:9
  allow_env: [API_TOKEN]
jobs:
  ping:
    every: 1h
    http:
      url: http://127.0.0.1:9/ping
      headers: {{Authorization: "Bearer ${{JOB_TOKEN}}"}}
"""
    )
    return path


JOBS = """\
jobs:
  report:
    cron: "*/10 * * * *"
    http:
      url: http://127.0.0.1:9/report
      headers: {Authorization: {env: API_TOKEN}}
"""


async def test_the_apply_workflow_as_an_operator_runs_it(tmp_path: Path, database_url: str) -> None:
    config = str(write_config(tmp_path, database_url))
    file = tmp_path / "jobs.yaml"
    file.write_text(JOBS)
    assert await cli("jobs", "apply", "-f", str(file), "-c", config) == (
        0, "created report (version 1)\n", ""
    )  # fmt: skip
    assert await cli("jobs", "apply", "-f", "-", "-c", config, stdin=JOBS) == (
        0, "unchanged report\n", ""
    )  # fmt: skip
    file.write_text(JOBS.replace("*/10", "*/15"))
    assert await cli("jobs", "apply", "-f", str(file), "-c", config) == (
        0, "updated report (version 2)\n", ""
    )  # fmt: skip

    shell = "jobs:\n  sh: {every: 1h, shell: 'id'}\n"
    code, out, err = await cli("jobs", "apply", "-f", "-", "-c", config, stdin=shell)
    assert (code, out) == (1, "")
    assert "<stdin>:2: jobs.sh.shell: `shell` jobs cannot be created" in err
    code, out, err = await cli("jobs", "apply", "-f", "-", "-c", config, stdin=JOBS + "  ping:\n")
    assert (code, out) == (1, "")
    assert "<stdin>:7: jobs.ping: expected a mapping of job fields, got nothing (null)" in err

    code, out, _ = await cli("jobs", "show", "report", "-c", config)
    assert code == 0 and out.startswith("# source: api, version 2\n")
    assert "*/15 * * * *" in out

    code, out, err = await cli("jobs", "export", "-c", config)
    assert (code, err) == (0, "")
    assert not any(secret in out for secret in SECRETS.values())
    exported = tmp_path / "exported.yaml"
    exported.write_text(out)
    code, out, err = await cli("check", "-c", str(exported))
    assert (code, err) == (0, "")
    assert out.endswith(f"{exported}: OK, 2 job(s)\n")

    code, out, _ = await cli("jobs", "delete", "report", "-c", config)
    assert code == 0 and out.startswith("# deleted report (was version 2)")
    code, out, _ = await cli("jobs", "list", "-c", config)
    assert code == 0 and "report" not in out
    code, _, err = await cli("jobs", "delete", "ping", "-c", config)
    assert code == 1 and f"job 'ping' is defined in the config file {config}" in err


async def test_an_applied_job_reaches_the_running_daemon_and_a_clashing_reload_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    """The daemon process, the CLI beside it, both straight on PostgreSQL; a real SIGHUP."""
    config = write_config(tmp_path, database_url)
    config.write_text(config.read_text().replace("admin:\n  listen: 127.0.0.1:9\n", "admin:\n"
                      f"  listen: 127.0.0.1:{free_port()}\n"))  # fmt: skip
    daemon = await start_daemon(config, SECRETS)
    try:
        await daemon.wait_for("database_connected")
        jobs = tmp_path / "jobs.yaml"
        jobs.write_text(JOBS)
        code, out, err = await cli("jobs", "apply", "-c", str(config), "-f", str(jobs))
        assert (code, out) == (0, "created report (version 1)\n"), err
        # Notified, not found by the 30 s re-read: it is scheduled at once.
        await daemon.wait_for("api_jobs_applied", timeout=5, added=["report"])
        # The file may not take the name now: the reload is refused, the job keeps running.
        config.write_text(config.read_text() + "  report:\n    every: 1h\n    command: ['true']\n")
        daemon.proc.send_signal(signal.SIGHUP)
        failed = await daemon.wait_for("reload_failed")
        assert "jobs.report: the name is taken by a job created through the API" in str(failed)
    finally:
        assert await daemon.stop() == 0
