"""The database schema: versioned migrations, each applied once, in order.

``storage/migrations/NNNN_name.sql`` are the source of truth (the top-level ``schema.sql`` is their
concatenation, for reading). A database lists the ones it has in ``scheduler_migrations``; its
version is the highest one. ``upgrade`` applies the missing ones, each in its own transaction,
under an advisory lock (concurrent starts take turns, each migration is applied once), and
refuses a database newer than this code: a downgrade would break the newer version's data.

A database made before versioned migrations (tables, no ``scheduler_migrations``) gets 0001 like
an empty one: its statements are all IF NOT EXISTS / OR REPLACE, so the tables and rows stay.

Rules for a new migration: the next number; never edit one that was released (its checksum is
recorded, a change is logged); add columns, never rename or drop them (DESIGN §2); one transaction
each, so no ``CREATE INDEX CONCURRENTLY``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg
import structlog

from scheduler_daemon import __version__
from scheduler_daemon.errors import SchedulerDaemonError
from scheduler_daemon.storage import store

log = structlog.get_logger("scheduler_daemon.storage.schema")

TABLE = "scheduler_migrations"
_LOCK = 0x5C4ED  # advisory lock id: concurrent upgrades take turns (the key schema.sql used)
# Statement timeout while migrating: the pool's 30 s would cut a long one (an index on a big
# table) short, and a second starter waits for the first one's lock.
MIGRATE_TIMEOUT = 3600.0
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
# SQLSTATE classes of a database that is away or busy (an outage: retried), not of a migration
# that cannot work (refused): connection, rollback (deadlock), resources, operator, system.
_TRANSIENT = ("08", "40", "53", "57", "58")

_BOOKKEEPING = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,  -- sha256 of the file as applied
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text        NOT NULL   -- the scheduler-daemon version and the database role
);
COMMENT ON TABLE {TABLE} IS 'scheduler_daemon: the schema migrations applied (README: Database)';
"""


class SchemaError(SchedulerDaemonError):
    """The schema cannot be read or upgraded by this role, or a migration failed."""


class SchemaTooNew(SchemaError):
    """The database has migrations this version does not know: it was upgraded by a newer one."""


class SchemaBehind(SchemaError):
    """The database lacks migrations, and this command does not apply them."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.replace("\r\n", "\n").encode()).hexdigest()


@dataclass(frozen=True)
class Applied:
    version: int
    name: str
    checksum: str
    applied_at: datetime

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class SchemaState:
    """What a database has, against what this code knows."""

    known: tuple[Migration, ...]
    applied: tuple[Applied, ...]
    bookkept: bool  # scheduler_migrations exists
    legacy: bool  # tables made before versioned migrations (or by a 0001 not recorded)

    @property
    def version(self) -> int:
        return max((a.version for a in self.applied), default=0)

    @property
    def latest(self) -> int:
        return self.known[-1].version

    @property
    def pending(self) -> list[Migration]:
        done = {a.version for a in self.applied}
        return [m for m in self.known if m.version not in done]

    @property
    def unknown(self) -> list[Applied]:
        """Applied by a newer version: this one cannot know what they changed."""
        return [a for a in self.applied if a.version > self.latest]

    @property
    def changed(self) -> list[Applied]:
        """Applied from a file that differs from this version's (edited after release)."""
        sums = {m.version: m.checksum for m in self.known}
        return [a for a in self.applied if a.version in sums and sums[a.version] != a.checksum]

    def refuse_if_newer(self) -> None:
        if not self.unknown:
            return
        newest = self.unknown[-1]
        raise SchemaTooNew(
            f"the database's schema is at version {self.version} ({newest.label}, applied "
            f"{newest.applied_at:%Y-%m-%d %H:%M}Z), newer than this scheduler-daemon {__version__} "
            f"knows (up to {self.latest}): run a version that knows it; going back to an older "
            "schema is not supported"
        )

    def require_current(self) -> None:
        """SchemaTooNew or SchemaBehind unless the database is exactly at this version."""
        self.refuse_if_newer()
        if self.pending:
            labels = ", ".join(m.label for m in self.pending)
            raise SchemaBehind(
                f"the database's schema is at version {self.version}, this scheduler-daemon "
                f"needs {self.latest} (missing: {labels}): run `scheduler-daemon db upgrade`, "
                "or start the daemon"
            )


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """This version's migrations, in order (storage/migrations/)."""
    return load(resources.files("scheduler_daemon.storage").joinpath("migrations"))


def load(directory: Traversable) -> tuple[Migration, ...]:
    """The migrations in ``directory``: ``NNNN_name.sql``, numbered 1, 2, 3 ... without a gap."""
    found = []
    for entry in directory.iterdir():
        match = _FILE.fullmatch(entry.name)
        if match:
            sql = entry.read_text(encoding="utf-8")
            found.append(Migration(int(match[1]), match[2], sql))
        elif entry.name.endswith(".sql"):
            raise ValueError(f"{entry.name}: a migration is named NNNN_name.sql (a-z, 0-9, _)")
    found.sort(key=lambda m: m.version)
    numbers = [m.version for m in found]
    if not found or numbers != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3 ... without a gap: {numbers}")
    return tuple(found)


def reference_sql(known: Sequence[Migration] | None = None) -> str:
    """The top-level schema.sql: every migration in order, for reading."""
    parts = [
        "-- scheduler_daemon's schema, for reading: every migration of\n"
        "-- scheduler_daemon/storage/migrations/ in order (those files are the source of truth).\n"
        "-- GENERATED by `python -m scheduler_daemon.storage.schema > schema.sql`; do not edit.\n"
        "-- The daemon applies the migrations itself (or `scheduler-daemon db upgrade`): do not\n"
        "-- apply this file by hand, it would leave the database without its version.\n"
    ]
    for migration in known or migrations():
        parts.append(f"\n-- ==== {migration.label}.sql ====\n\n{migration.sql.rstrip()}\n")
    return "".join(parts)


async def read_state(conn: store.Conn, known: Sequence[Migration] | None = None) -> SchemaState:
    """The database's migrations (none when it has no ``scheduler_migrations``)."""
    with _refusals("read the schema version", hint=_GRANT_HINT):
        found = await conn.fetchrow(
            "SELECT to_regclass($1) IS NOT NULL AS bookkept,"
            " to_regclass('executions') IS NOT NULL AS tables",
            TABLE,
        )
        assert found is not None
        bookkept, tables = bool(found["bookkept"]), bool(found["tables"])
        rows = await conn.fetch(f"SELECT * FROM {TABLE} ORDER BY version") if bookkept else []
    applied = tuple(Applied(r["version"], r["name"], r["checksum"], r["applied_at"]) for r in rows)
    return SchemaState(
        known=tuple(known or migrations()),
        applied=applied,
        bookkept=bookkept,
        legacy=tables and not applied,
    )


OnApplied = Callable[[Migration, float, bool], None]


async def upgrade(
    db: store.Db,
    *,
    known: Sequence[Migration] | None = None,
    on_applied: OnApplied | None = None,
) -> list[Migration]:
    """Apply the pending migrations (the ones applied, in order); SchemaError when the database
    is newer, or a migration is refused (privileges, a failed statement: rolled back). An
    outage (DB_ERRORS) propagates as is. ``on_applied(migration, seconds, over_legacy)``."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await upgrade(conn, known=known, on_applied=on_applied)
    state = await read_state(db, known)
    state.refuse_if_newer()
    _warn_changed(state)
    if not state.pending:  # the usual start: no lock, no DDL (a role without DDL rights is fine)
        return []
    await db.execute("SELECT pg_advisory_lock($1)", _LOCK, timeout=MIGRATE_TIMEOUT)
    try:
        state = await read_state(db, known)  # another process may have applied them meanwhile
        state.refuse_if_newer()
        if not state.bookkept:
            with _refusals(f"create {TABLE}"):
                await db.execute(_BOOKKEEPING)
        for migration in state.pending:
            over_legacy = state.legacy and migration.version == 1
            seconds = await _apply(db, migration)
            log.info(
                "schema_migration_applied",
                migration=migration.label,
                ms=round(seconds * 1000, 1),
                over_existing_tables=over_legacy,
            )
            if on_applied is not None:
                on_applied(migration, seconds, over_legacy)
        return state.pending
    finally:
        # A broken connection took the lock with it; on a pool, release unlocks everything too.
        with contextlib.suppress(*store.DB_ERRORS):
            await db.execute("SELECT pg_advisory_unlock($1)", _LOCK)


async def require_current(db: store.Db) -> None:
    """For commands that read and write rows but never migrate (the operator commands)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await require_current(conn)
    (await read_state(db)).require_current()


async def _apply(conn: store.Conn, migration: Migration) -> float:
    started = time.monotonic()
    with _refusals(f"apply migration {migration.label} (rolled back: nothing of it applied)"):
        async with conn.transaction():
            await conn.execute(migration.sql, timeout=MIGRATE_TIMEOUT)
            await conn.execute(
                f"INSERT INTO {TABLE} (version, name, checksum, applied_by)"
                " VALUES ($1, $2, $3, $4 || ' as ' || current_user)",
                migration.version,
                migration.name,
                migration.checksum,
                f"scheduler-daemon {__version__}",
            )
    return time.monotonic() - started


_OWNER_HINT = (
    "apply the migrations as the owner of the tables (`scheduler-daemon db upgrade` with the "
    "owner's URL; README: Using your own PostgreSQL)"
)
_GRANT_HINT = (
    "grant the daemon's role SELECT, INSERT, UPDATE on the tables (README: Using your own "
    "PostgreSQL)"
)


@contextlib.contextmanager
def _refusals(doing: str, hint: str = _OWNER_HINT) -> Iterator[None]:
    """A refusal by the server (privileges, a failed statement) becomes a SchemaError; an
    outage (the connection lost, the server shutting down) stays what it is: it is retried.
    ``hint``: what to do about a missing privilege."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        if (exc.sqlstate or "")[:2] in _TRANSIENT:
            raise
        advice = f"; {hint}" if isinstance(exc, asyncpg.InsufficientPrivilegeError) else ""
        raise SchemaError(f"cannot {doing}: {exc}{advice}") from exc


def _warn_changed(state: SchemaState) -> None:
    for applied in state.changed:
        log.warning(
            "schema_migration_changed",
            migration=applied.label,
            note="this version's file differs from the one applied: released migrations must "
            "not be edited (the database keeps what was applied)",
        )


class Upgrades:
    """The daemon's schema upgrades: before the schedule starts when the database is reachable,
    then on every new pool (a database that was down at start); ``on_refused`` stops the daemon
    when the schema cannot be used (it would only fail again)."""

    def __init__(self, on_refused: Callable[[SchemaError], None]) -> None:
        self._on_refused = on_refused

    async def at_start(self, dsn: str) -> None:
        """SchemaError propagates: nothing has run yet. An outage defers to the first pool."""
        try:
            conn = await asyncpg.connect(
                dsn, timeout=store.CONNECT_TIMEOUT, server_settings=store.SERVER_SETTINGS
            )
        except store.DB_ERRORS as exc:
            log.warning("schema_upgrade_deferred", error=f"{type(exc).__name__}: {exc}")
            return
        try:
            await upgrade(conn)
        except SchemaError:
            raise
        except store.DB_ERRORS as exc:
            log.warning("schema_upgrade_deferred", error=f"{type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(*store.DB_ERRORS):
                await conn.close(timeout=store.CONNECT_TIMEOUT)

    async def on_connect(self, pool: asyncpg.Pool) -> None:
        try:
            await upgrade(pool)
        except SchemaError as exc:
            log.error("schema_refused", error=str(exc))
            self._on_refused(exc)
            raise


if __name__ == "__main__":  # python -m scheduler_daemon.storage.schema > schema.sql
    print(reference_sql(), end="")
