"""One daemon per state directory and per database, checked before anything changes.

Two daemons on one state would both run every job, and the second one's crash recovery would mark
the first one's running attempts ``abandoned``. So ``run`` takes, before anything else:

- an exclusive ``flock`` on ``state_dir/daemon.lock`` (held until the process exits; the kernel
  drops it when the process dies, so a kill -9 leaves no stale lock);
- a PostgreSQL session advisory lock on a connection of its own, before recovery or any write: a
  second daemon with another state_dir on the same database is refused too. A database that is
  down at start is locked at the first connection; losing the lock to another daemon meanwhile
  stops this one.

In cluster mode (``cluster.enabled``) the database lock is taken shared: replicas coexist, while a
daemon not in cluster mode (exclusive) and replicas refuse each other, both ways.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable
from pathlib import Path

import asyncpg
import structlog

from scheduler_daemon.errors import SchedulerDaemonError, StateDirUnusable, as_whom
from scheduler_daemon.storage import store

log = structlog.get_logger("scheduler_daemon.operation.instance")

# pg_advisory_lock's key for "a daemon runs on this database" (schema upgrades use another).
INSTANCE_LOCK = 0x5C4ED01
# Who holds it, and how: ExclusiveLock (a daemon not in cluster mode) or ShareLock (replicas).
_HOLDERS = """
SELECT a.application_name, l.mode FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1
   AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY l.mode, a.backend_start
"""

_MINE = """
SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'
                  AND granted AND classid = 0 AND objid = $1 AND objsubid = 1)
"""


class AnotherDaemon(SchedulerDaemonError):
    """Another daemon runs on this state directory or database."""


def identity() -> str:
    """Who we are, as the other daemon's refusal names us (fits application_name's 63 bytes)."""
    return f"pid {os.getpid()} on host {socket.gethostname()}"[:63]


class StateLock:
    """The exclusive lock on ``state_dir/daemon.lock``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "daemon.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            # Private, but as root passable: the embedded server's user reaches state_dir/postgres.
            mode = 0o711 if os.geteuid() == 0 else 0o700
            self.path.parent.mkdir(mode=mode, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateDirUnusable(_unusable(self.path.parent, exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown pid"
            os.close(fd)
            raise AnotherDaemon(
                f"another daemon ({holder}) runs on state_dir {self.path.parent}: stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{identity()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the lock goes with the descriptor; the file stays (harmless)


def _unusable(state_dir: Path, exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != state_dir else ""
    text = f"cannot use state_dir {state_dir}: {exc.strerror or exc}{where}{as_whom()}"
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd and Path(systemd) != state_dir:
        # A sandboxed unit may write to its StateDirectory= only.
        text += f"; under systemd, leave state_dir unset to use $STATE_DIRECTORY ({systemd})"
    return text


class DatabaseLock:
    """The advisory lock that says a daemon runs on the database, on a connection of its own."""

    def __init__(
        self,
        dsn: Callable[[], str],
        *,
        on_lost: Callable[[AnotherDaemon], None],
        shared: bool = False,
    ) -> None:
        """``dsn``: the database's, when asked (the embedded one's is known once started);
        ``on_lost``: called when the lock turns out to be another daemon's after the start;
        ``shared``: cluster mode (replicas share the lock)."""
        self._dsn = dsn
        self._on_lost = on_lost
        self._shared = shared
        self._conn: asyncpg.Connection | None = None

    @property
    def held(self) -> bool:
        """The lock was taken and its connection not seen closed (``acquire`` asks the server)."""
        return self._conn is not None and not self._conn.is_closed()

    async def acquire(self) -> None:
        """Take the lock (again, if its connection was lost); AnotherDaemon if it is taken."""
        if await self._still_held():
            return
        await self._drop()
        conn = await asyncpg.connect(
            self._dsn(),
            timeout=store.CONNECT_TIMEOUT,
            server_settings={"application_name": identity()},
        )
        take = "pg_try_advisory_lock_shared" if self._shared else "pg_try_advisory_lock"
        try:
            if not await conn.fetchval(f"SELECT {take}($1)", INSTANCE_LOCK):
                raise AnotherDaemon(self._refusal(await conn.fetch(_HOLDERS, INSTANCE_LOCK)))
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        log.info("database_locked", lock=INSTANCE_LOCK, shared=self._shared)

    def _refusal(self, holders: list[asyncpg.Record]) -> str:
        """Why the lock is not ours: who holds it, in which mode, and what to do."""
        replicas = [r["application_name"] for r in holders if r["mode"] == "ShareLock"]
        single = [r["application_name"] for r in holders if r["mode"] != "ShareLock"]
        if self._shared:
            who = single[0] if single else "unknown"
            return (
                f"a daemon not in cluster mode runs on this database ({who}): stop it, or set "
                "cluster.enabled on every daemon of this database"
            )
        if replicas:
            return (
                f"daemons in cluster mode run on this database ({'; '.join(replicas[:3])}"
                f"{'; ...' if len(replicas) > 3 else ''}): stop them, or set cluster.enabled "
                "on this daemon too (every daemon of a database runs in cluster mode, or one "
                "runs alone)"
            )
        who = single[0] if single else "unknown"
        return (
            f"another daemon ({who}) runs on this database: one daemon per database (stop it, "
            "or give this one a database of its own, or set cluster.enabled on both)"
        )

    async def try_at_start(self) -> None:
        """Before the schedule starts: take the lock, or learn the database is down (then the
        first connection takes it). AnotherDaemon propagates: nothing has run yet."""
        try:
            await self.acquire()
        except AnotherDaemon:
            raise
        except (*store.DB_ERRORS, OSError) as exc:
            log.warning("database_lock_deferred", error=f"{type(exc).__name__}: {exc}")

    async def on_connect(self, pool: asyncpg.Pool) -> None:
        """Every new pool, before recovery and before any write: hold the lock or stop."""
        try:
            await self.acquire()
        except AnotherDaemon as exc:
            log.error("database_lock_lost", error=str(exc))
            self._on_lost(exc)
            raise

    async def _still_held(self) -> bool:
        # A connection the server ended (outage, restart) looks open until it is used.
        if self._conn is None or self._conn.is_closed():
            return False
        try:
            return bool(
                await self._conn.fetchval(_MINE, INSTANCE_LOCK, timeout=store.CONNECT_TIMEOUT)
            )
        except (*store.DB_ERRORS, OSError, asyncpg.InternalClientError):
            # InternalClientError: the server's "terminating connection" arrived while the
            # connection was idle, and asyncpg refuses the next query ("cannot switch to state").
            return False

    async def release(self) -> None:
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=2)  # the session's advisory lock ends with it
            except Exception:  # noqa: BLE001 - a broken connection: ending it is all we want
                conn.terminate()
