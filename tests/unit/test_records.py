import uuid
from datetime import UTC, datetime, timedelta

from scheduler_daemon.running.records import FIRE_NAMESPACE, scheduled_fire_id


def test_a_scheduled_fire_id_is_the_uuid5_of_job_and_instant() -> None:
    # The inlined hash must stay exactly uuid5: ids are compared with rows of earlier versions.
    at = datetime(2026, 3, 29, 1, 30, 0, 250_000, tzinfo=UTC)
    for name in ("nightly", "jöb-ünïcode", "a" * 200):
        expected = uuid.uuid5(FIRE_NAMESPACE, f"{name}@{round(at.timestamp() * 1_000_000)}")
        assert scheduled_fire_id(name, at) == expected
        assert scheduled_fire_id(name, at).version == 5


def test_fire_ids_differ_by_job_and_by_microsecond() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    ids = {
        scheduled_fire_id("a", at),
        scheduled_fire_id("b", at),
        scheduled_fire_id("a", at + timedelta(microseconds=1)),
    }
    assert len(ids) == 3
