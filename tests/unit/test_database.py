"""The database's retry backoff, on the fake clock (no connection involved)."""

from __future__ import annotations

import pytest

from scheduler_daemon.storage.database import MAX_BACKOFF, MIN_BACKOFF, Database
from tests.helpers import FakeClock


class SleepLog(FakeClock):
    """Sleeps return at once; their lengths are kept."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))


@pytest.mark.parametrize(
    ("failures", "waits"),
    [
        (1, [MIN_BACKOFF]),
        (4, [0.1, 0.2, 0.4, 0.8]),
        (8, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, MAX_BACKOFF, MAX_BACKOFF]),
    ],
)
async def test_retries_back_off_exponentially_up_to_a_cap(
    failures: int, waits: list[float]
) -> None:
    clock = SleepLog()
    database = Database(dsn="postgresql:///nowhere", clock=clock)
    for _ in range(failures):
        await database.pause_before_retry()
    assert clock.slept == waits


async def test_a_success_resets_the_backoff() -> None:
    clock = SleepLog()
    database = Database(dsn="postgresql:///nowhere", clock=clock)
    for _ in range(5):
        await database.pause_before_retry()
    database.succeeded()
    await database.pause_before_retry()
    assert clock.slept[-1] == MIN_BACKOFF


def test_a_database_needs_somewhere_to_connect() -> None:
    with pytest.raises(ValueError, match="dsn or an embedded"):
        Database(dsn="", embedded_dir=None)
