"""The database lock: taken on a connection of its own, before recovery; lost → the daemon stops."""

from __future__ import annotations

import asyncpg
import pytest

from scheduler_daemon.operation.instance import INSTANCE_LOCK, AnotherDaemon, DatabaseLock


async def test_a_lock_held_elsewhere_refuses_and_stops_the_daemon(database_url: str) -> None:
    other = await asyncpg.connect(
        database_url, server_settings={"application_name": "pid 7 on host h"}
    )
    lost: list[AnotherDaemon] = []
    lock = DatabaseLock(lambda: database_url, on_lost=lost.append)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", INSTANCE_LOCK)
        with pytest.raises(AnotherDaemon, match=r"another daemon \(pid 7 on host h\)"):
            await lock.on_connect(None)  # type: ignore[arg-type]
        assert len(lost) == 1 and not lock.held
        await other.close()  # the other daemon stopped: the next connection takes the lock
        await lock.on_connect(None)  # type: ignore[arg-type]
        assert lock.held and lost == [lost[0]]
    finally:
        await lock.release()
        if not other.is_closed():
            await other.close()


async def test_a_lost_connection_is_replaced_and_the_lock_taken_again(database_url: str) -> None:
    lock = DatabaseLock(lambda: database_url, on_lost=lambda exc: None)
    await lock.acquire()
    try:
        admin = await asyncpg.connect(database_url)
        try:
            # As an outage or a restart of the server would: the session and its lock are gone.
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND objid = $1 AND granted",
                INSTANCE_LOCK,
            )
            holders = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1"
            await lock.on_connect(None)  # type: ignore[arg-type]
            assert lock.held and await admin.fetchval(holders, INSTANCE_LOCK) == 1
        finally:
            await admin.close()
    finally:
        await lock.release()
