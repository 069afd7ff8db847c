"""The one way in to PostgreSQL: the embedded server or the configured URL, and the pool.

``open_database(config)`` is what the daemon and every CLI command that touches the database use:
with ``database.url`` empty it starts (or borrows) the embedded server under ``state_dir``, else it
uses the URL. The :class:`Database` it yields owns the pool: it creates it on demand, runs the
on-connect hooks on each new pool before anyone uses it (the caller's: the daemon's lock, schema
upgrade, recovery), and throws it away when a user reports that it failed, so the next ``connect``
starts afresh. ``connection()`` is one plain connection, for the ``db`` commands (a failure is one
line, no traceback). Whoever needs the database continuously (the recorder) drives reconnection
with ``pause_before_retry``'s capped backoff; everyone else reads ``pool``, which is None while
the database is away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

import asyncpg
import structlog

from scheduler_daemon.errors import DatabaseUnavailable
from scheduler_daemon.specs import Config
from scheduler_daemon.storage import dsn as dsn_text
from scheduler_daemon.storage import store
from scheduler_daemon.storage.embedded import EmbeddedPostgres
from scheduler_daemon.timing.clock import Clock, SystemClock

log = structlog.get_logger("scheduler_daemon.storage.database")

OnConnect = Callable[[asyncpg.Pool], Awaitable[None]]
MIN_BACKOFF = 0.1
MAX_BACKOFF = 5.0
POOL_CLOSE_TIMEOUT = 5.0


class Database:
    """One PostgreSQL and its pool; an async context manager (``close`` on exit).

    ``dsn``, or ``embedded_dir``: the embedded server's directory (started on entry, stopped on
    exit; a server another live process started is only borrowed)."""

    def __init__(
        self,
        *,
        dsn: str = "",
        embedded_dir: Path | None = None,
        clock: Clock | None = None,
        on_connect: Sequence[OnConnect] = (),
        max_size: int = 4,
    ) -> None:
        if not dsn and embedded_dir is None:
            raise ValueError("a Database needs a dsn or an embedded server's directory")
        self._dsn = dsn
        self._embedded_dir = embedded_dir
        self.embedded: EmbeddedPostgres | None = None  # once started
        self._clock: Clock = clock or SystemClock()
        self._hooks = list(on_connect)
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._reached = False  # a pool was ever created: the URL, user and password are right
        self._outage = False
        self._backoff = MIN_BACKOFF

    @property
    def dsn(self) -> str:
        if not self._dsn:
            raise RuntimeError("the embedded PostgreSQL is not started")
        return self._dsn

    def on_connect(self, hook: OnConnect) -> None:
        """Run ``hook`` on every new pool, after the hooks added before it."""
        self._hooks.append(hook)

    @property
    def pool(self) -> asyncpg.Pool | None:
        """The current pool, or None while disconnected."""
        return self._pool

    @property
    def connected(self) -> bool:
        return self._pool is not None and not self._outage

    def require(self, consequence: str) -> asyncpg.Pool:
        """The pool for an operator's change; ConnectionError (the API's 503) while away."""
        if self._pool is None:
            raise ConnectionError(f"the database is unavailable: {consequence}")
        return self._pool

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the embedded server, if this database is one; the pool comes with ``connect``."""
        if self._embedded_dir is None or self._dsn:
            return
        self.embedded = EmbeddedPostgres(self._embedded_dir)
        self._dsn = await self.embedded.astart()
        log.info(
            "embedded_postgres_started",
            data_dir=str(self.embedded.data_dir),
            psql=f"psql 'host={self.embedded.socket_dir} user=postgres dbname=postgres'",
        )

    async def connect(self) -> asyncpg.Pool:
        """The pool, created (and its on-connect hooks run) if there is none; raises on failure."""
        if self._pool is None:
            pool = await store.connect(self.dsn, max_size=self._max_size)
            self._reached = True
            try:
                for hook in self._hooks:
                    await hook(pool)
            except BaseException:
                pool.terminate()
                raise
            self._pool = pool
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """One connection of its own (no pool, no hooks); DatabaseUnavailable if it fails."""
        try:
            conn = await asyncpg.connect(
                self.dsn,
                timeout=store.CONNECT_TIMEOUT,
                command_timeout=store.COMMAND_TIMEOUT,
                server_settings=store.SERVER_SETTINGS,
            )
        except (*store.DB_ERRORS, ValueError) as exc:  # ValueError: a malformed URL
            raise self.unreachable(exc) from None
        try:
            yield conn
        finally:
            await conn.close(timeout=store.CONNECT_TIMEOUT)

    def unreachable(self, exc: BaseException, doing: str = "connect to") -> DatabaseUnavailable:
        """``cannot connect to postgresql://user@host:port/db: why`` (no password, no query)."""
        if not self._dsn:
            where = f"the embedded PostgreSQL in {self._embedded_dir}"
        else:
            where = dsn_text.target(self._dsn).url()
        return DatabaseUnavailable(f"cannot {doing} {where}: {dsn_text.why(exc)}")

    async def close(self) -> None:
        """Close the pool (terminated if it does not close in time), then stop our server."""
        await self._close_pool()
        embedded, self.embedded = self.embedded, None
        if embedded is not None:
            self._dsn = ""
            await embedded.astop()

    async def __aenter__(self) -> Database:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with self._clock.timeout(POOL_CLOSE_TIMEOUT):
                await pool.close()
        except store.DB_ERRORS:
            pool.terminate()

    # -- outages ---------------------------------------------------------------------------------

    def failed(self, exc: BaseException, **context: object) -> None:
        """A connect or a write failed: drop the pool (its connections may be dead), and say so
        once per outage (``context``: the reporter's fields for the log). A database never
        reached since start is an error, naming where it was looked for: most likely the URL,
        the password or the database name is wrong, and nothing will be written until fixed."""
        if not self._outage:
            self._outage = True
            if self._reached:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("recorder_db_unavailable", error=error, **context)
            else:
                where = dsn_text.target(self._dsn).fields()
                log.error("database_unreachable", **where, error=dsn_text.why(exc), **context)
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def succeeded(self, **context: object) -> None:
        """A connect and a write went through: the outage, if any, is over."""
        self._backoff = MIN_BACKOFF
        if self._outage:
            self._outage = False
            log.info("recorder_db_recovered", **context)

    async def pause_before_retry(self) -> None:
        """Wait before the next try after a failure: capped exponential backoff."""
        await self._clock.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)


def open_database(
    config: Config,
    *,
    clock: Clock | None = None,
    max_size: int = 4,
    on_connect: Sequence[OnConnect] = (),
) -> Database:
    """The database ``config`` names (embedded under ``state_dir`` when ``database.url`` is
    empty), running ``on_connect`` on each new pool. Use it as ``async with``."""
    return Database(
        dsn=config.database_url or "",
        embedded_dir=None if config.database_url else config.state_dir / "postgres",
        clock=clock,
        on_connect=on_connect,
        max_size=max_size,
    )
