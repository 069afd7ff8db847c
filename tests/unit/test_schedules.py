"""Fire times per trigger kind, zone and DST transition: pure tables, no clock at all."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from scheduler_daemon.timing.schedules import (
    CronSchedule,
    DateSchedule,
    IntervalSchedule,
    StartOnlySchedule,
    build_schedule,
    format_seconds,
    validate_cron,
)
from tests.helpers import make_job

_MICRO = timedelta(microseconds=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def fires(trigger: CronSchedule | IntervalSchedule, after: str, count: int) -> list[str]:
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
    trigger = CronSchedule(expr, zone)
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
    got = [t[11:].replace("+00:00", "") for t in fires(IntervalSchedule(every, offset), after, 3)]
    assert got == expected


def test_every_has_no_float_drift_over_a_million_steps() -> None:
    trigger = IntervalSchedule(0.1)
    t = utc("2026-01-01T00:00:00+00:00")
    for _ in range(1_000_000 // 1000):
        t = trigger.next_after(t + timedelta(seconds=99.95)) or t
    assert t.microsecond % 100_000 == 0


def test_every_ignores_time_zones_and_dst() -> None:
    trigger = IntervalSchedule(3600)
    got = fires(trigger, "2026-03-08T06:30:00+00:00", 3)  # across New York's spring-forward
    assert got == [
        "2026-03-08T07:00:00+00:00",
        "2026-03-08T08:00:00+00:00",
        "2026-03-08T09:00:00+00:00",
    ]


def test_at_fires_once_then_never() -> None:
    trigger = DateSchedule(utc("2026-12-01T02:00:00+00:00"))
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
    got = fires(CronSchedule(expr, "UTC"), after + "+00:00", 3)
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
    assert [t[:10] for t in fires(CronSchedule(expr, "UTC"), after + "+00:00", 2)] == expected


# Debian (Vixie) cron's reading, where croniter's defaults differ: a range with equal ends is that
# one value (croniter: the whole field), and day-of-month/day-of-week are ORed only when neither
# field starts with "*" ("*/10" counts as a star); otherwise both must match.
DEBIAN_CRON = [
    ("0 5-5 * * *", ["2026-01-01T05:00", "2026-01-02T05:00", "2026-01-03T05:00"]),
    ("* * * 12-12 *", ["2026-12-01T00:00", "2026-12-01T00:01", "2026-12-01T00:02"]),
    ("0 0 * * MON-MON", ["2026-01-05T00:00", "2026-01-12T00:00", "2026-01-19T00:00"]),
    ("0 0 * * 7-7", ["2026-01-04T00:00", "2026-01-11T00:00", "2026-01-18T00:00"]),  # Sundays
    ("0 0 1 JAN-JAN *", ["2027-01-01T00:00", "2028-01-01T00:00", "2029-01-01T00:00"]),
    ("0 0 5-5/2 * *", ["2026-01-05T00:00", "2026-02-05T00:00", "2026-03-05T00:00"]),
    ("0 9-9,12-12 * * *", ["2026-01-01T09:00", "2026-01-01T12:00", "2026-01-02T09:00"]),
    # 1, 11, 21 or 31 AND Sunday, Tuesday, Thursday or Saturday (Jan 1 2026 is a Thursday)
    ("0 0 */10 * */2", ["2026-01-11T00:00", "2026-01-31T00:00", "2026-02-01T00:00"]),
    ("0 0 * * */2", ["2026-01-03T00:00", "2026-01-04T00:00", "2026-01-06T00:00"]),
    ("0 0 */10 * *", ["2026-01-11T00:00", "2026-01-21T00:00", "2026-01-31T00:00"]),
    ("0 0 1,15 * MON", ["2026-01-05T00:00", "2026-01-12T00:00", "2026-01-15T00:00"]),  # OR
    ("0 0 1-7 * 1", ["2026-01-02T00:00", "2026-01-03T00:00", "2026-01-04T00:00"]),  # OR
    ("0 0 8-14 * 1", ["2026-01-05T00:00", "2026-01-08T00:00", "2026-01-09T00:00"]),  # OR
    # 6 fields: seconds first
    ("0 0 5-5 * * *", ["2026-01-01T05:00", "2026-01-02T05:00", "2026-01-03T05:00"]),
    ("5-5 0 0 * * *", ["2026-01-01T00:00:05", "2026-01-02T00:00:05", "2026-01-03T00:00:05"]),
    ("0 0 0 * * MON-MON", ["2026-01-05T00:00", "2026-01-12T00:00", "2026-01-19T00:00"]),
    ("0 0 0 */10 * */2", ["2026-01-11T00:00", "2026-01-31T00:00", "2026-02-01T00:00"]),
    ("0 0 0 1,15 * MON", ["2026-01-05T00:00", "2026-01-12T00:00", "2026-01-15T00:00"]),
    ("0 0 0 1-7 * 1", ["2026-01-02T00:00", "2026-01-03T00:00", "2026-01-04T00:00"]),
]


@pytest.mark.parametrize(("expr", "expected"), DEBIAN_CRON)
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Pacific/Chatham"])
def test_cron_means_what_debian_cron_means(expr: str, expected: list[str], zone: str) -> None:
    tz = ZoneInfo(zone)
    start = datetime(2026, 1, 1, tzinfo=tz)  # local midnight: these are local wall times
    got = fires(CronSchedule(expr, zone), start.isoformat(), 3)
    walls = [datetime.fromisoformat(t).astimezone(tz).replace(tzinfo=None) for t in got]
    assert walls == [datetime.fromisoformat(e) for e in expected]


def test_an_equal_ended_hour_range_keeps_the_fixed_time_dst_rule() -> None:
    # "2-2" is hour 2 (not every hour), and a job at a fixed hour: in New York's skipped hour it
    # fires once, as the clocks jump to 03:00 EDT.
    got = local_fires("30 2-2 * * *", "America/New_York", "2026-03-07T12:00Z", "2026-03-09T12:00Z")
    assert got == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]


def test_cron_that_can_never_fire_returns_none() -> None:
    assert CronSchedule("0 0 30 2 *", "UTC").next_after(utc("2026-01-01T00:00:00+00:00")) is None


def test_cron_in_a_zone_without_dst_is_a_fixed_offset() -> None:
    got = fires(
        CronSchedule("0 0 9 * * MON-FRI", "America/Sao_Paulo"), "2026-11-27T00:00:00+00:00", 2
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
    trigger = CronSchedule("45 1 * * *", "America/New_York")
    second_pass = utc("2026-11-01T01:10:00-05:00")
    assert trigger.next_after(second_pass) == utc("2026-11-02T01:45:00-05:00")


def test_per_second_job_through_a_fold_is_every_real_second() -> None:
    trigger = CronSchedule("* * * * * *", "America/New_York")
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
    assert isinstance(build_schedule(make_job(every=5.0)), IntervalSchedule)
    assert isinstance(build_schedule(make_job(cron="* * * * *")), CronSchedule)
    assert isinstance(build_schedule(make_job(at=utc("2026-12-01T00:00:00+00:00"))), DateSchedule)
    assert build_schedule(make_job(cron="0 9 * * *", timezone="Europe/Berlin")).describe() == (
        "cron '0 9 * * *' (Europe/Berlin)"
    )
    assert build_schedule(make_job(every=5400.0)).describe() == "every 1h30m"


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
        "*/30 * * * * *",
        "0 0 L * *",
        "0 0 * * 5#3",
        "0 0 * * 7",  # Sunday, as in Vixie cron
        "@annually",
        "@midnight",
        "@reboot",
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
        ("", "got 0"),
        ("60 * * * * *", "invalid"),  # 6 fields: the first is seconds
        ("* * * 13 *", "invalid"),
        ("* * * * 8", "invalid"),
        ("0 0 0 * *", "invalid"),
        ("*/0 * * * *", "invalid"),
        ("1-70 * * * *", "invalid"),
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


# -- DST: every fire against a brute-force oracle -------------------------------------------------
#
# The oracle walks every real minute around a transition and applies the rule literally: a
# wildcard job fires at each real instant whose wall time matches; a fixed-time job fires at each
# such instant in the first pass only, plus once at the jump when the skipped wall times held a
# match. It shares no code with the trigger (no croniter): the cron fields are given as sets.

TRANSITIONS = [
    # zone, an instant the offset changes (UTC); spring forward first, then fall back
    ("America/New_York", "2026-03-08T07:00:00+00:00"),
    ("America/New_York", "2026-11-01T06:00:00+00:00"),
    ("Europe/London", "2026-03-29T01:00:00+00:00"),
    ("Europe/London", "2026-10-25T01:00:00+00:00"),
    ("Europe/Berlin", "2026-03-29T01:00:00+00:00"),
    ("Europe/Berlin", "2026-10-25T01:00:00+00:00"),
    ("Australia/Sydney", "2026-10-03T16:00:00+00:00"),
    ("Australia/Sydney", "2026-04-04T16:00:00+00:00"),
    ("Australia/Lord_Howe", "2026-10-03T15:30:00+00:00"),
    ("Australia/Lord_Howe", "2026-04-04T15:00:00+00:00"),
    ("America/Sao_Paulo", "2018-11-04T03:00:00+00:00"),
    ("America/Sao_Paulo", "2018-02-18T02:00:00+00:00"),
]

ALL = frozenset(range(60))
HOURS = frozenset(range(24))
ORACLE_JOBS = [
    # expr, minutes, hours, wildcard (Vixie: minute or hour field starts with "*")
    ("10 2 * * *", {10}, {2}, False),
    ("30 1 * * *", {30}, {1}, False),
    ("0,30 0-3 * * *", {0, 30}, {0, 1, 2, 3}, False),  # fixed, several matches near the change
    ("45 23 * * *", {45}, {23}, False),
    ("@daily", {0}, {0}, False),  # Sao Paulo 2018: midnight itself is skipped
    ("59 0,1 * * *", {59}, {0, 1}, False),  # the minute before each change
    ("0 * * * *", {0}, HOURS, True),
    ("*/15 * * * *", set(range(0, 60, 15)), HOURS, True),
    ("20 */2 * * *", {20}, set(range(0, 24, 2)), True),
    ("*/20 2 * * *", {0, 20, 40}, {2}, True),  # a wildcard minute makes the job wildcard
    ("* 1 * * *", ALL, {1}, True),
]


def oracle(
    zone: str, start: datetime, end: datetime, minutes: set[int], hours: set[int], wildcard: bool
) -> list[datetime]:
    tz = ZoneInfo(zone)
    out: set[datetime] = set()
    u = start
    prev_off = u.astimezone(tz).utcoffset()
    while u < end:
        local = u.astimezone(tz)
        off = local.utcoffset()
        assert off is not None and prev_off is not None
        if off > prev_off and not wildcard and _gap_matches(u, prev_off, off, minutes, hours):
            out.add(u)  # the clocks jumped over a match: fire once, now
        if local.minute in minutes and local.hour in hours and (wildcard or not local.fold):
            out.add(u)
        prev_off = off
        u += timedelta(minutes=1)
    return sorted(out)


def _gap_matches(
    change: datetime, old: timedelta, new: timedelta, minutes: set[int], hours: set[int]
) -> bool:
    wall = (change + old).replace(tzinfo=None)
    skipped = [wall + timedelta(minutes=i) for i in range((new - old) // timedelta(minutes=1))]
    return any(w.minute in minutes and w.hour in hours for w in skipped)


@pytest.mark.parametrize(("zone", "change"), TRANSITIONS)
@pytest.mark.parametrize(("expr", "minutes", "hours", "wildcard"), ORACLE_JOBS)
def test_every_fire_around_a_transition_matches_the_oracle(
    zone: str, change: str, expr: str, minutes: set[int], hours: set[int], wildcard: bool
) -> None:
    trigger = CronSchedule(expr, zone)
    assert trigger.wildcard is wildcard
    start, end = utc(change) - timedelta(hours=30), utc(change) + timedelta(hours=30)
    expected = oracle(zone, start, end, minutes, hours, wildcard)
    assert expected  # else the comparisons below would hold vacuously
    # Iterated from the window's start: the whole sequence, strictly increasing.
    got: list[datetime] = []
    t = trigger.next_after(start - _MICRO)
    while t is not None and t < end:
        got.append(t)
        t = trigger.next_after(t)
    assert got == expected  # a list compare: also strictly increasing, no duplicates
    # Asked from anywhere (inside a fold's second pass, at the change itself, mid-second): the
    # first expected fire strictly after that instant.
    probes = [
        utc(change) + timedelta(minutes=m, seconds=s) for m in range(-130, 130, 7) for s in (0, 30)
    ]
    for probe in [*probes, utc(change), utc(change) - _MICRO, utc(change) + _MICRO]:
        want = next((e for e in expected if e > probe), None)
        if want is not None:
            assert trigger.next_after(probe) == want, probe


# -- more every / at ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "offset", "after", "expected"),
    [
        # a week on the epoch grid: 1970-01-01 was a Thursday, so every grid point is one
        (604800, 0, "2026-11-24T12:00:00+00:00", "2026-11-26T00:00:00+00:00"),
        (86400, 3600, "2026-11-24T12:00:00+00:00", "2026-11-25T01:00:00+00:00"),  # daily, 01:00
        (10, 12, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:02+00:00"),  # offset mod every
        (10, -1, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:09+00:00"),  # negative offset
        (0.25, 0.1, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00.100000+00:00"),
        (1e-6, 0, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00.000001+00:00"),  # finest
        (10, 0, "2026-01-01T00:00:10+00:00", "2026-01-01T00:00:20+00:00"),  # strictly after
        (10, 0, "2026-01-01T01:00:05+01:00", "2026-01-01T00:00:10+00:00"),  # any aware t
    ],
)
def test_every_next_after(every: float, offset: float, after: str, expected: str) -> None:
    got = IntervalSchedule(every, offset).next_after(datetime.fromisoformat(after))
    assert got is not None
    assert got.tzinfo is UTC
    assert got.isoformat() == expected


def test_every_half_second_is_exact_for_a_day() -> None:
    trigger = IntervalSchedule(0.5)
    t = utc("2026-01-01T00:00:00+00:00")
    for _ in range(2 * 86400):
        t = trigger.next_after(t) or t
    assert t == utc("2026-01-02T00:00:00+00:00")


@pytest.mark.parametrize("every", [0, -1, 1e-7, float("nan"), float("inf")])
def test_every_rejects_impossible_periods(every: float) -> None:
    with pytest.raises(ValueError, match="every"):
        IntervalSchedule(every)


@pytest.mark.parametrize(
    ("every", "offset", "text"),
    [
        (10, 0, "every 10s"),
        (300, 0, "every 5m"),
        (0.5, 0, "every 500ms"),
        (60, 5, "every 1m (offset 5s)"),
    ],
)
def test_every_describe(every: float, offset: float, text: str) -> None:
    assert IntervalSchedule(every, offset).describe() == text


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        ("2026-12-01T01:59:59.999999+00:00", "2026-12-01T02:00:00+00:00"),
        ("2026-12-01T02:00:00+00:00", None),  # fires strictly after t only
        ("2026-12-01T03:00:00+01:00", None),  # the same instant, seen from another zone
        ("2027-01-01T00:00:00+00:00", None),
    ],
)
def test_at_next_after(after: str, expected: str | None) -> None:
    trigger = DateSchedule(datetime.fromisoformat("2026-12-01T03:00:00+01:00"))
    got = trigger.next_after(datetime.fromisoformat(after))
    assert (got.isoformat() if got else None) == expected
    assert trigger.describe() == "once at 2026-12-01T02:00:00+00:00"


def test_at_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        DateSchedule(datetime(2026, 12, 1))


# -- more cron ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("@annually", "2026-06-01T00:00:00", "2027-01-01T00:00:00"),
        ("@midnight", "2026-06-01T00:00:00", "2026-06-02T00:00:00"),
        ("@Daily", "2026-06-01T23:59:59.999999", "2026-06-02T00:00:00"),
        ("* * * * *", "2026-06-01T12:00:59.999999", "2026-06-01T12:01:00"),  # sub-second t
        ("* * * * *", "2026-06-01T12:00:00.000001", "2026-06-01T12:01:00"),
        ("0 0 * * * *", "2026-06-01T12:00:00", "2026-06-01T13:00:00"),  # 6 fields: hourly
        ("30 * * * * *", "2026-06-01T12:00:30", "2026-06-01T12:01:30"),  # second 30 of each minute
        ("0 0 L * *", "2026-02-10T00:00:00", "2026-02-28T00:00:00"),  # last day of the month
        ("0 0 1,15 * *", "2026-02-01T00:00:00", "2026-02-15T00:00:00"),
        ("0 0 * * 5#3", "2026-11-01T00:00:00", "2026-11-20T00:00:00"),  # third Friday
        ("0 12 * * SUN", "2026-11-24T00:00:00", "2026-11-29T12:00:00"),
        ("0 0 1 * 1", "2026-11-24T00:00:00", "2026-11-30T00:00:00"),  # Vixie: DOM or DOW
        ("59 23 31 12 *", "2026-12-31T23:59:00", "2027-12-31T23:59:00"),
        ("0 0 29 2 *", "2096-03-01T00:00:00", "2104-02-29T00:00:00"),  # 2100 is no leap year
    ],
)
def test_cron_next_after_in_utc(expr: str, after: str, expected: str) -> None:
    got = CronSchedule(expr, "UTC").next_after(utc(after + "+00:00"))
    assert got is not None
    assert got.tzinfo is UTC
    assert got == utc(expected + "+00:00")


def test_cron_answers_in_utc_whatever_zone_t_is_in() -> None:
    trigger = CronSchedule("0 9 * * *", "Europe/Berlin")
    got = trigger.next_after(datetime.fromisoformat("2026-06-01T10:00:00+09:00"))  # 01:00 UTC
    assert got == utc("2026-06-01T07:00:00+00:00")
    assert got is not None and got.tzinfo is UTC


def test_cron_rejects_a_naive_instant() -> None:
    with pytest.raises(ValueError, match="aware"):
        CronSchedule("* * * * *", "UTC").next_after(datetime(2026, 1, 1))


def test_leap_day_in_a_dst_zone_across_many_transitions() -> None:
    got = fires(CronSchedule("0 2 29 2 *", "America/New_York"), "2096-03-01T00:00:00+00:00", 2)
    assert got == ["2104-02-29T07:00:00+00:00", "2108-02-29T07:00:00+00:00"]


@pytest.mark.parametrize(
    ("expr", "wildcard"),
    [
        ("0 * * * *", True),
        ("@hourly", True),
        ("*/5 9-17 * * *", True),
        ("0 */2 * * *", True),
        ("30 2 * * *", False),
        ("@daily", False),
        ("0-59/5 9 * * *", False),  # Vixie looks at the first character only
        ("0 30 2 * * *", False),  # 6 fields: minute and hour are fields 2 and 3
        ("* 30 2 * * *", False),  # a wildcard second does not count
        ("0 * 2 * * *", True),
        ("0 0 * * * *", True),
    ],
)
def test_wildcard_or_fixed_time(expr: str, wildcard: bool) -> None:
    assert CronSchedule(expr, "UTC").wildcard is wildcard


def test_fixed_per_second_job_in_a_gap_fires_once_and_in_a_fold_only_in_the_first_pass() -> None:
    zone = "America/New_York"
    gap = local_fires(
        "* 30 2 * * *", zone, "2026-03-08T06:00:00+00:00", "2026-03-08T08:00:00+00:00"
    )
    assert gap == ["2026-03-08T03:00:00-04:00"]
    fold = local_fires(
        "* 30 1 * * *", zone, "2026-11-01T04:00:00+00:00", "2026-11-01T08:00:00+00:00"
    )
    assert len(fold) == 60
    assert fold[0] == "2026-11-01T01:30:00-04:00"
    assert fold[-1] == "2026-11-01T01:30:59-04:00"


def test_a_job_at_the_jump_and_in_the_gap_fires_once_at_the_jump() -> None:
    # 02:00 (skipped) and 03:00 (real) both land on 07:00 UTC: one fire, not two.
    got = local_fires(
        "0 2,3 * * *", "America/New_York", "2026-03-08T05:00:00+00:00", "2026-03-09T05:00:00+00:00"
    )
    assert got == ["2026-03-08T03:00:00-04:00"]


@pytest.mark.parametrize(
    ("expr", "zone", "after", "expected"),
    [
        # Europe/London: the 1am jump; a job just before and just after it
        ("59 0 * * *", "Europe/London", "2026-03-28T12:00:00+00:00", "2026-03-29T00:59:00+00:00"),
        ("0 2 * * *", "Europe/London", "2026-03-28T12:00:00+00:00", "2026-03-29T01:00:00+00:00"),
        ("30 1 * * *", "Europe/London", "2026-03-28T12:00:00+00:00", "2026-03-29T01:00:00+00:00"),
        ("59 0 * * *", "Europe/London", "2026-10-24T12:00:00+00:00", "2026-10-24T23:59:00+00:00"),
        ("0 2 * * *", "Europe/London", "2026-10-24T12:00:00+00:00", "2026-10-25T02:00:00+00:00"),
        # Australia/Sydney: spring forward in October, fall back in April
        (
            "30 2 * * *",
            "Australia/Sydney",
            "2026-10-03T00:00:00+00:00",
            "2026-10-03T16:00:00+00:00",
        ),
        (
            "30 2 * * *",
            "Australia/Sydney",
            "2026-04-04T00:00:00+00:00",
            "2026-04-04T15:30:00+00:00",
        ),
        (
            "30 2 * * *",
            "Australia/Sydney",
            "2026-04-04T15:31:00+00:00",
            "2026-04-05T16:30:00+00:00",
        ),
        # Australia/Lord_Howe: a 30-minute shift
        (
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T00:00:00+00:00",
            "2026-10-03T15:30:00+00:00",
        ),
        (
            "30 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T00:00:00+00:00",
            "2026-10-03T15:30:00+00:00",
        ),
        (
            "45 1 * * *",
            "Australia/Lord_Howe",
            "2026-04-04T00:00:00+00:00",
            "2026-04-04T14:45:00+00:00",
        ),
        # America/Sao_Paulo 2018: the jump at midnight; a daily job runs at 01:00 that day
        ("@daily", "America/Sao_Paulo", "2018-11-03T12:00:00+00:00", "2018-11-04T03:00:00+00:00"),
        ("@daily", "America/Sao_Paulo", "2018-11-04T03:00:00+00:00", "2018-11-05T02:00:00+00:00"),
        (
            "0 23 * * *",
            "America/Sao_Paulo",
            "2018-02-17T12:00:00+00:00",
            "2018-02-18T01:00:00+00:00",
        ),
        (
            "0 23 * * *",
            "America/Sao_Paulo",
            "2018-02-18T01:00:00+00:00",
            "2018-02-19T02:00:00+00:00",
        ),
    ],
)
def test_dst_edges_by_zone(expr: str, zone: str, after: str, expected: str) -> None:
    assert CronSchedule(expr, zone).next_after(utc(after)) == utc(expected)


# -- work done per call (a sanity bound, not a timing assertion) -----------------------------------


class _CountingCroniter:
    """Counts croniter searches: the expensive part of a fire-time computation."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = croniter.get_next

        def counted(it: croniter, *args: object, **kwargs: object) -> object:
            self.calls += 1
            return real(it, *args, **kwargs)

        monkeypatch.setattr(croniter, "get_next", counted)


def test_the_fast_path_is_one_croniter_search(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _CountingCroniter(monkeypatch)
    trigger = CronSchedule("*/5 * * * * *", "Europe/Berlin")
    t: datetime | None = utc("2026-06-01T00:00:00+00:00")
    for _ in range(1000):
        t = trigger.next_after(t) if t else None
    assert t == utc("2026-06-01T01:23:20+00:00")
    assert counter.calls == 1000


@pytest.mark.parametrize("expr", ["* * * * * *", "* 1 * * * *", "* 30 1 * * *"])
def test_per_second_jobs_cross_a_fold_without_scanning(
    monkeypatch: pytest.MonkeyPatch, expr: str
) -> None:
    counter = _CountingCroniter(monkeypatch)
    trigger = CronSchedule(expr, "America/New_York")
    t: datetime | None = utc("2026-11-01T04:00:00+00:00")  # 00:00 EDT
    seen = 0
    while t is not None and t < utc("2026-11-01T08:00:00+00:00"):
        nxt = trigger.next_after(t)
        assert nxt is None or nxt > t
        t, seen = nxt, seen + 1
    # a handful of extra searches at the change, never one per skipped match
    assert counter.calls <= seen + 10
    if expr.startswith("* 30"):
        assert seen == 60 + 1  # the first pass's minute, then the next day's first fire


def test_a_year_of_hourly_fires_across_both_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _CountingCroniter(monkeypatch)
    trigger = CronSchedule("@hourly", "Australia/Lord_Howe")
    t: datetime | None = utc("2026-01-01T00:00:00+00:00")
    count = 0
    while t is not None and t < utc("2027-01-01T00:00:00+00:00"):
        t, count = trigger.next_after(t), count + 1
    # 8760 wall-clock hours from 11:00 to 11:00 (+11 both ends), the end itself excluded, and no
    # 02:00 on the day the clocks jump 02:00 → 02:30 (the repeated 01:30-02:00 holds no :00)
    assert count - 1 == 8760 - 1 - 1
    assert counter.calls <= count + 10


# -- build --------------------------------------------------------------------------------------


def test_build_trigger_for_each_schedule() -> None:
    at = utc("2026-12-01T02:00:00+00:00")
    assert build_schedule(make_job(at=at)).describe() == "once at 2026-12-01T02:00:00+00:00"
    assert build_schedule(make_job(every=10.0, offset=2.0)).describe() == "every 10s (offset 2s)"
    reboot = build_schedule(make_job(cron="@reboot"))
    assert isinstance(reboot, StartOnlySchedule)
    assert reboot.next_after(at) is None
    cron = build_schedule(make_job(cron="0 0 9 * * MON-FRI", timezone="America/Sao_Paulo"))
    assert cron.describe() == "cron '0 0 9 * * MON-FRI' (America/Sao_Paulo)"
    assert cron.next_after(utc("2026-11-27T00:00:00+00:00")) == utc("2026-11-27T12:00:00+00:00")
