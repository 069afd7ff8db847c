"""`scheduler-daemon db status / upgrade / init` in-process, against a real PostgreSQL: one line
per migration, exit codes, and one line on stderr when the database cannot be used. (The same as
a real process, bad URL and all: tests/e2e/test_db_cli_e2e.py.)"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import asyncpg
import pytest

from scheduler_daemon import __version__
from scheduler_daemon.operation.cli import main
from scheduler_daemon.storage import schema
from scheduler_daemon.storage.schema import Migration
from tests.conftest import with_database
from tests.helpers import free_port

FIXTURES = Path(__file__).parent / "fixtures"
LATEST = len(schema.migrations())


def write(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f'database: {{url: "{url}"}}\nstate_dir: ./state\n'
        'jobs:\n  ping: {every: 1h, command: ["true"]}\n'
    )
    return path


@pytest.fixture(autouse=True)
def _no_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDULER_DATABASE_URL", raising=False)


def db(
    capsys: pytest.CaptureFixture[str], config: Path, *command: str
) -> tuple[int, list[str], str]:
    code = main(["db", *command, "-c", str(config)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def sql(dsn: str, text: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(text)
        finally:
            await conn.close()

    asyncio.run(run())


def test_status_then_upgrade_then_status_on_a_fresh_database(
    tmp_path: Path, empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, empty_database_url)
    labels = [m.label for m in schema.migrations()]
    width = max(map(len, labels))  # one column of labels, then the state
    code, out, err = db(capsys, config, "status")
    assert (code, err) == (3, "")  # 3: migrations pending
    assert out == [f"{label:<{width}}  pending" for label in labels] + [
        f"schema version 0 of {LATEST}: {LATEST} pending "
        "(`scheduler-daemon db upgrade` applies them)"
    ]
    code, out, err = db(capsys, config, "upgrade")
    assert (code, err) == (0, "")
    assert [re.sub(r"\(\d+ ms\)", "(N ms)", line) for line in out] == [
        f"applied {label} (N ms)" for label in labels
    ] + [f"schema version {LATEST}: up to date"]
    code, out, err = db(capsys, config, "status")
    assert (code, err) == (0, "")
    assert [re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", "T", line) for line in out] == [
        f"{label:<{width}}  applied T" for label in labels
    ] + [f"schema version {LATEST}: up to date"]
    for again in ("upgrade", "init"):  # init: the same as upgrade
        assert db(capsys, config, again) == (
            0,
            [f"schema version {LATEST}: up to date, nothing to apply"],
            "",
        )


def test_a_database_made_before_migrations_says_so_and_is_adopted(
    tmp_path: Path, empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(empty_database_url, (FIXTURES / "schema_before_migrations.sql").read_text())
    config = write(tmp_path, empty_database_url)
    code, out, _ = db(capsys, config, "status")
    assert code == 3
    assert "tables from before versioned migrations: 0001 adopts them, rows kept" in out
    code, out, _ = db(capsys, config, "upgrade")
    assert code == 0
    assert re.fullmatch(
        r"applied 0001_initial over the tables made before versioned migrations \(\d+ ms\)", out[0]
    )


def test_a_newer_database_is_one_error_line_and_exit_1(
    tmp_path: Path, empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    future = (*schema.migrations(), Migration(LATEST + 1, "from_the_future", "SELECT 1"))

    async def upgrade() -> None:
        conn = await asyncpg.connect(empty_database_url)
        try:
            await schema.upgrade(conn, known=future)
        finally:
            await conn.close()

    asyncio.run(upgrade())
    config = write(tmp_path, empty_database_url)
    code, out, err = db(capsys, config, "status")
    assert code == 1
    assert re.match(rf"{LATEST + 1:04d}_from_the_future +applied ", out[-1])
    assert out[-1].endswith(f"(unknown to scheduler-daemon {__version__})")
    assert err.startswith(f"error: the database's schema is at version {LATEST + 1} ")
    assert err.count("\n") == 1 and "Traceback" not in err
    code, out, err2 = db(capsys, config, "upgrade")
    assert (code, out, err2) == (1, [], err)


@pytest.mark.parametrize("command", ["status", "upgrade", "init"])
def test_an_unreachable_database_is_one_line_exit_1_without_the_password(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = write(tmp_path, f"postgresql://bob:s3cr3t@127.0.0.1:{port}/jobs")
    assert db(capsys, config, command) == (
        1,
        [],
        f"error: cannot connect to postgresql://bob@127.0.0.1:{port}/jobs: connection refused\n",
    )


def test_a_missing_database_is_one_line_naming_it(
    tmp_path: Path, pg_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, with_database(pg_server, "no_such_db"))
    code, out, err = db(capsys, config, "status")
    assert (code, out) == (1, [])
    assert re.fullmatch(
        r'error: cannot connect to postgresql://\S+/no_such_db\S*: database "no_such_db" does '
        r"not exist\n",
        err,
    )


def test_operator_commands_refuse_a_database_not_at_this_version(
    tmp_path: Path, empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` and co. never migrate (a newer CLI would upgrade under a running daemon)."""
    config = write(tmp_path, empty_database_url)
    assert main(["status", "-c", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"error: the database's schema is at version 0, this scheduler-daemon needs {LATEST} "
        f"(missing: {', '.join(m.label for m in schema.migrations())}): run `scheduler-daemon db "
        "upgrade`, or start the daemon\n"
    )
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"

    async def count() -> int:
        conn = await asyncpg.connect(empty_database_url)
        try:
            return int(await conn.fetchval(tables))
        finally:
            await conn.close()

    assert asyncio.run(count()) == 0


def test_operator_commands_say_which_database_they_cannot_reach(
    tmp_path: Path, pg_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, with_database(pg_server, "no_such_db"))
    assert main(["history", "ping", "-c", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("error: cannot connect to postgresql://")
    assert err.endswith(': database "no_such_db" does not exist\n')
