"""Fire times per trigger kind, zone and DST transition: pure tables, no clock at all."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler_daemon.triggers import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    build_trigger,
    format_seconds,
    validate_cron,
)
from tests.fakes import make_job


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def fires(trigger: CronTrigger | IntervalTrigger, after: str, count: int) -> list[str]:
    out: list[str] = []
    t: datetime | None = utc(after)
    for _ in range(count):
        t = trigger.next_after(t) if t is not None else None
        if t is None:
            break
        out.append(t.isoformat())
    return out


def local_fires(expr: str, zone: str, after: str, until: str) -> list[str]:
    """Every fire in [after, until) as local ISO times with their offsets."""
    trigger = CronTrigger(expr, zone)
    t: datetime | None = utc(after)
    end = utc(until)
    out = []
    while t is not None:
        t = trigger.next_after(t)
        if t is None or t >= end:
            break
        out.append(t.astimezone(ZoneInfo(zone)).isoformat())
    return out


def _local_midnight(day: str, zone: str) -> datetime:
    """The UTC instant of 00:00 local on ``day`` (or just before, for a zone that skips it)."""
    local = datetime.fromisoformat(f"{day}T00:00:00").replace(tzinfo=ZoneInfo(zone))
    return local.astimezone(UTC) - timedelta(hours=1)


def _day(day: str, delta: int) -> str:
    return (datetime.fromisoformat(day) + timedelta(days=delta)).date().isoformat()


# -- every / at ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "offset", "after", "expected"),
    [
        (10, 0, "2026-01-01T00:00:00+00:00", ["00:00:10", "00:00:20", "00:00:30"]),
        (10, 0, "2026-01-01T00:00:07.5+00:00", ["00:00:10", "00:00:20", "00:00:30"]),
        (10, 2, "2026-01-01T00:00:00+00:00", ["00:00:02", "00:00:12", "00:00:22"]),
        (0.5, 0, "2026-01-01T00:00:00.2+00:00", ["00:00:00.500000", "00:00:01", "00:00:01.500000"]),
        (3600, 0, "2026-01-01T00:30:00+00:00", ["01:00:00", "02:00:00", "03:00:00"]),
        (7, 0, "2026-01-01T00:00:01+00:00", ["00:00:07", "00:00:14", "00:00:21"]),  # epoch grid
    ],
)
def test_every_fires_on_the_epoch_grid(
    every: float, offset: float, after: str, expected: list[str]
) -> None:
    got = [t[11:].replace("+00:00", "") for t in fires(IntervalTrigger(every, offset), after, 3)]
    assert got == expected


def test_every_has_no_float_drift_over_a_million_steps() -> None:
    trigger = IntervalTrigger(0.1)
    t = utc("2026-01-01T00:00:00+00:00")
    for _ in range(1_000_000 // 1000):
        t = trigger.next_after(t + timedelta(seconds=99.95)) or t
    assert t.microsecond % 100_000 == 0


def test_every_ignores_time_zones_and_dst() -> None:
    trigger = IntervalTrigger(3600)
    got = fires(trigger, "2026-03-08T06:30:00+00:00", 3)  # across New York's spring-forward
    assert got == [
        "2026-03-08T07:00:00+00:00",
        "2026-03-08T08:00:00+00:00",
        "2026-03-08T09:00:00+00:00",
    ]


def test_at_fires_once_then_never() -> None:
    trigger = DateTrigger(utc("2026-12-01T02:00:00+00:00"))
    assert trigger.next_after(utc("2026-11-30T00:00:00+00:00")) == utc("2026-12-01T02:00:00+00:00")
    assert trigger.next_after(utc("2026-12-01T02:00:00+00:00")) is None


# -- cron without DST ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/15 * * * *", "2026-01-01T00:07:00", ["00:15:00", "00:30:00", "00:45:00"]),
        ("*/30 * * * * *", "2026-01-01T00:00:10", ["00:00:30", "00:01:00", "00:01:30"]),
        ("0 */5 * * * *", "2026-01-01T00:01:00", ["00:05:00", "00:10:00", "00:15:00"]),
        ("15 0 9 * * *", "2026-01-01T00:00:00", ["09:00:15", "09:00:15", "09:00:15"]),
        ("* * * * * *", "2026-01-01T12:00:00.5", ["12:00:01", "12:00:02", "12:00:03"]),
        ("@hourly", "2026-01-01T00:00:00", ["01:00:00", "02:00:00", "03:00:00"]),
        ("@daily", "2026-01-01T05:00:00", ["00:00:00", "00:00:00", "00:00:00"]),
    ],
)
def test_cron_field_layouts(expr: str, after: str, expected: list[str]) -> None:
    got = fires(CronTrigger(expr, "UTC"), after + "+00:00", 3)
    assert [t[11:19] for t in got] == expected


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("0 0 29 2 *", "2026-01-01T00:00:00", ["2028-02-29", "2032-02-29"]),  # leap days only
        ("0 0 31 * *", "2026-01-31T00:00:00", ["2026-03-31", "2026-05-31"]),  # skips short months
        ("0 9 * * MON-FRI", "2026-11-27T10:00:00", ["2026-11-30", "2026-12-01"]),  # Fri → Mon
        ("@monthly", "2026-12-15T00:00:00", ["2027-01-01", "2027-02-01"]),
        ("@weekly", "2026-11-24T00:00:00", ["2026-11-29", "2026-12-06"]),  # Sundays
        ("@yearly", "2026-06-01T00:00:00", ["2027-01-01", "2028-01-01"]),
    ],
)
def test_cron_calendar_edges(expr: str, after: str, expected: list[str]) -> None:
    assert [t[:10] for t in fires(CronTrigger(expr, "UTC"), after + "+00:00", 2)] == expected


def test_cron_that_can_never_fire_returns_none() -> None:
    assert CronTrigger("0 0 30 2 *", "UTC").next_after(utc("2026-01-01T00:00:00+00:00")) is None


def test_cron_in_a_zone_without_dst_is_a_fixed_offset() -> None:
    got = fires(
        CronTrigger("0 0 9 * * MON-FRI", "America/Sao_Paulo"), "2026-11-27T00:00:00+00:00", 2
    )
    assert got == ["2026-11-27T12:00:00+00:00", "2026-11-30T12:00:00+00:00"]


# -- DST: spring forward (a skipped hour) ---------------------------------------------------------

SPRING = [
    # zone, day, gap start (local), gap end (local)
    ("America/New_York", "2026-03-08", "02:00", "03:00"),
    ("Europe/Berlin", "2026-03-29", "02:00", "03:00"),
    ("Europe/London", "2026-03-29", "01:00", "02:00"),
    ("Australia/Sydney", "2026-10-04", "02:00", "03:00"),
    ("Australia/Lord_Howe", "2026-10-04", "02:00", "02:30"),
    ("America/Sao_Paulo", "2018-11-04", "00:00", "01:00"),
]


@pytest.mark.parametrize(("zone", "day", "gap_start", "gap_end"), SPRING)
def test_fixed_job_in_a_skipped_hour_fires_once_as_the_clocks_jump(
    zone: str, day: str, gap_start: str, gap_end: str
) -> None:
    h, m = gap_start.split(":")
    expr = f"{int(m) + 10} {int(h)} * * *"  # 10 minutes into the gap: that wall time never exists
    start = _local_midnight(day, zone) - timedelta(days=1)
    got = local_fires(expr, zone, start.isoformat(), (start + timedelta(days=3)).isoformat())
    assert [t[:10] for t in got] == [_day(day, -1), day, _day(day, 1)]  # one fire a day
    assert got[1].startswith(f"{day}T{gap_end}:00")  # at the jump, on the new offset


@pytest.mark.parametrize(("zone", "day", "gap_start", "gap_end"), SPRING)
def test_wildcard_jobs_follow_real_time_through_a_skipped_hour(
    zone: str, day: str, gap_start: str, gap_end: str
) -> None:
    start = _local_midnight(day, zone) - timedelta(hours=3)  # UTC arithmetic: real hours
    got = local_fires(
        "*/15 * * * *", zone, start.isoformat(), (start + timedelta(hours=6)).isoformat()
    )
    instants = [datetime.fromisoformat(t) for t in got]
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(instants))
    assert len(got) == 6 * 4 - 1  # every 15 real minutes in (start, start + 6h): none lost
    assert not any(f"T{gap_start}" in t for t in got)  # no wall time inside the gap


def test_spring_forward_new_york_table() -> None:
    got = local_fires(
        "30 2 * * *", "America/New_York", "2026-03-06T12:00:00+00:00", "2026-03-09T12:00:00+00:00"
    )
    assert got == [
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]
    got = local_fires(
        "0 * * * *", "America/New_York", "2026-03-08T05:30:00+00:00", "2026-03-08T09:30:00+00:00"
    )
    assert got == [
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T04:00:00-04:00",
        "2026-03-08T05:00:00-04:00",
    ]
    # a fixed job just outside the gap is unaffected
    assert local_fires(
        "59 1 * * *", "America/New_York", "2026-03-08T00:00:00+00:00", "2026-03-09T00:00:00+00:00"
    ) == ["2026-03-08T01:59:00-05:00"]
    assert local_fires(
        "0 3 * * *", "America/New_York", "2026-03-08T00:00:00+00:00", "2026-03-09T00:00:00+00:00"
    ) == ["2026-03-08T03:00:00-04:00"]


def test_two_gap_matches_of_a_fixed_job_collapse_into_one_fire() -> None:
    got = local_fires(
        "0,30 2 * * *", "America/New_York", "2026-03-08T05:00:00+00:00", "2026-03-08T09:00:00+00:00"
    )
    assert got == ["2026-03-08T03:00:00-04:00"]


# -- DST: fall back (a repeated hour) -------------------------------------------------------------

FALL = [
    # zone, the instant the clocks go back (UTC), repeated wall time start, its length in minutes
    ("America/New_York", "2026-11-01T06:00:00+00:00", "01:00", 60),
    ("Europe/Berlin", "2026-10-25T01:00:00+00:00", "02:00", 60),
    ("Europe/London", "2026-10-25T01:00:00+00:00", "01:00", 60),
    ("Australia/Sydney", "2026-04-04T16:00:00+00:00", "02:00", 60),
    ("Australia/Lord_Howe", "2026-04-04T15:00:00+00:00", "01:30", 30),
    ("America/Sao_Paulo", "2018-02-18T02:00:00+00:00", "23:00", 60),  # back from midnight
]


@pytest.mark.parametrize(("zone", "change", "repeat_start", "minutes"), FALL)
def test_fixed_job_in_a_repeated_hour_fires_once(
    zone: str, change: str, repeat_start: str, minutes: int
) -> None:
    h, m = repeat_start.split(":")
    expr = f"{int(m) + 10} {int(h)} * * *"  # 10 minutes into the repeated wall time
    start = utc(change) - timedelta(hours=36)
    got = local_fires(expr, zone, start.isoformat(), (start + timedelta(hours=72)).isoformat())
    # one fire a day, the DST day included (croniter's own tz handling fires twice there)
    instants = [datetime.fromisoformat(t) for t in got]
    assert len(got) == 3, got
    gaps = {b - a for a, b in itertools.pairwise(instants)}
    assert gaps <= {timedelta(hours=24), timedelta(hours=24, minutes=minutes)}, got


@pytest.mark.parametrize(("zone", "change", "repeat_start", "minutes"), FALL)
def test_wildcard_jobs_fire_in_both_passes_of_a_repeated_hour(
    zone: str, change: str, repeat_start: str, minutes: int
) -> None:
    start = utc(change) - timedelta(hours=12)
    got = local_fires(
        "*/15 * * * *", zone, start.isoformat(), (start + timedelta(hours=24)).isoformat()
    )
    instants = [datetime.fromisoformat(t) for t in got]
    assert len(got) == 24 * 4 - 1  # real elapsed time: every quarter hour in (start, start + 24h)
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(instants))
    walls = [t[11:16] for t in got]
    assert walls.count(repeat_start) == 2  # the repeated wall time happens twice


def test_fall_back_new_york_table() -> None:
    assert local_fires(
        "30 1 * * *", "America/New_York", "2026-10-31T12:00:00+00:00", "2026-11-02T12:00:00+00:00"
    ) == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    assert local_fires(
        "0 * * * *", "America/New_York", "2026-11-01T04:30:00+00:00", "2026-11-01T08:30:00+00:00"
    ) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T03:00:00-05:00",
    ]
    # asked from inside the second pass, a fixed job does not fire again
    trigger = CronTrigger("45 1 * * *", "America/New_York")
    second_pass = utc("2026-11-01T01:10:00-05:00")
    assert trigger.next_after(second_pass) == utc("2026-11-02T01:45:00-05:00")


def test_per_second_job_through_a_fold_is_every_real_second() -> None:
    trigger = CronTrigger("* * * * * *", "America/New_York")
    t = utc("2026-11-01T01:59:58-04:00")
    seen = []
    for _ in range(5):
        nxt = trigger.next_after(t)
        assert nxt is not None
        seen.append((nxt - t).total_seconds())
        t = nxt
    assert seen == [1.0] * 5


# -- build and validate -------------------------------------------------------------------------


def test_build_trigger_picks_the_schedule() -> None:
    assert isinstance(build_trigger(make_job(every=5.0)), IntervalTrigger)
    assert isinstance(build_trigger(make_job(cron="* * * * *")), CronTrigger)
    assert isinstance(build_trigger(make_job(at=utc("2026-12-01T00:00:00+00:00"))), DateTrigger)
    assert build_trigger(make_job(cron="0 9 * * *", timezone="Europe/Berlin")).describe() == (
        "cron '0 9 * * *' (Europe/Berlin)"
    )
    assert build_trigger(make_job(every=5400.0)).describe() == "every 1h30m"


@pytest.mark.parametrize(
    "expr",
    [
        "* * * * *",
        "*/5 * * * * *",
        "0 0 9 * * MON-FRI",
        "@daily",
        "@HOURLY",
        "0 0 29 2 *",
        "5,10 1-3 * JAN,JUL *",
    ],
)
def test_validate_cron_accepts(expr: str) -> None:
    validate_cron(expr)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", "invalid"),
        ("* * *", "got 3"),
        ("* * * * * * *", "got 7"),
        ("@fortnightly", "got 1"),
        ("* 25 * * *", "invalid"),
        ("0 0 32 * *", "invalid"),
        ("x * * * *", "invalid"),
    ],
)
def test_validate_cron_rejects(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_cron(expr)


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (0.5, 10, 90, 5400, 86400)] == [
        "500ms",
        "10s",
        "1m30s",
        "1h30m",
        "1d",
    ]
