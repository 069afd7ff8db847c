"""The admin API against its own OpenAPI document, fuzzed by schemathesis' command line."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import asyncpg

from scheduler_daemon.storage import store
from tests.helpers import ADMIN_TOKEN, Running, rec


async def test_the_api_keeps_to_its_openapi_document(api: Running, database_url: str) -> None:
    """schemathesis generates requests from /openapi.json: no 5xx, no response off the schema."""
    conn = await asyncpg.connect(database_url)
    try:
        await store.write_executions(conn, [rec("greet")])  # a page with a row in it
    finally:
        await conn.close()
    beside_python = Path(sys.executable).with_name("st")
    command = str(beside_python if beside_python.exists() else shutil.which("st"))
    proc = await asyncio.create_subprocess_exec(
        command, "run", f"{api.base}/openapi.json",
        "--header", f"Authorization: Bearer {ADMIN_TOKEN}",
        "--checks", "not_a_server_error,status_code_conformance,response_schema_conformance,"
                    "content_type_conformance",
        "--max-examples", "15", "--generation-deterministic", "--workers", "1",
        "--phases", "examples,fuzzing",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 110)
    assert proc.returncode == 0, out.decode()[-4000:]
