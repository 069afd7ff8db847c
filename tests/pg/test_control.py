"""Which way the operator commands go: the admin API when it would answer them, else PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from scheduler_daemon.operation import control
from scheduler_daemon.specs import load_config
from scheduler_daemon.specs.api_job import ApiJobRules, build_api_job
from scheduler_daemon.storage import job_store
from tests.helpers import ENV, write_config


@pytest.mark.parametrize(
    ("listen", "token", "extra", "backend"),
    [
        ("127.0.0.1:9", "${ADMIN_TOKEN}", "", control.ApiBackend),
        ("127.0.0.1:9", None, "", control.DbBackend),  # its reads would be refused
        ("127.0.0.1:9", None, "  open_reads: true\n", control.ApiBackend),
        ("./admin.sock", None, "", control.ApiBackend),
        (None, None, "", control.DbBackend),
    ],
)
async def test_the_cli_asks_the_api_only_when_it_would_answer(
    tmp_path: Path, database_url: str, listen: str | None, token: str | None, extra: str,
    backend: type,
) -> None:  # fmt: skip
    path = tmp_path / "config.yaml"
    write_config(path, database_url, "http://127.0.0.1:9", listen=listen, token=token)
    if extra:
        path.write_text(path.read_text().replace("admin:\n", "admin:\n" + extra, 1))
    async with control.connect(load_config(path, environ=ENV)) as chosen:
        assert isinstance(chosen, backend)


async def test_without_the_api_the_cli_sees_and_pauses_the_jobs_kept_in_the_database(
    tmp_path: Path, database_url: str
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, database_url, "http://127.0.0.1:9", listen=None)
    config = load_config(path, environ=ENV)
    job, definition = build_api_job(
        "stored", {"every": "1h", "http": {"url": "http://127.0.0.1:9/"}},
        ApiJobRules.of(config), environ=None,
    )  # fmt: skip
    conn = await asyncpg.connect(database_url)
    try:
        await job_store.write_api_job(conn, "stored", definition, spec=job.redacted(), enabled=True)
    finally:
        await conn.close()
    async with control.connect(config) as backend:
        assert isinstance(backend, control.DbBackend)
        listed = {job["name"]: job for job in await backend.jobs()}
        assert listed["stored"]["next_fire"] is not None and "greet" in listed
        await backend.set_paused("stored", True)
        assert {job["name"]: job["state"] for job in await backend.jobs()}["stored"] == "paused"
