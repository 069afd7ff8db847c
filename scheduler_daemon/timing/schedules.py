"""When a job fires: pure functions of the job's spec and a point in time.

Each schedule answers ``next_after(t)``: the first fire strictly after the aware instant ``t``, as
an aware UTC datetime, or None when there is none. Nothing here reads the clock.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from scheduler_daemon.specs.cron import REBOOT, cron_for_croniter, expand_cron, validate_cron

if TYPE_CHECKING:
    from scheduler_daemon.specs import JobSpec

_MICRO = timedelta(microseconds=1)
_CHUNK = timedelta(days=7)  # no zone has two offset changes within a week
# croniter looks up to 50 years ahead; zones change offset at most ~4 times a year (Morocco).
_MAX_SEGMENTS = 256


class Schedule(Protocol):
    def next_after(self, t: datetime) -> datetime | None: ...

    def describe(self) -> str: ...


def format_seconds(seconds: float) -> str:
    """10 → "10s", 90 → "1m30s", 5400 → "1h30m", 0.5 → "500ms"."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    parts = []
    rest = seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            count = int(rest // size)
            parts.append(f"{count}{unit}")
            rest -= count * size
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)


class IntervalSchedule:
    """Fires at k * every + offset seconds since the Unix epoch: independent of start time."""

    __slots__ = ("_every", "_offset")

    def __init__(self, every: float, offset: float = 0.0) -> None:
        if not every >= 1e-6:  # also rejects NaN
            raise ValueError(f"every must be at least 1 microsecond, got {every}")
        if not math.isfinite(every) or not math.isfinite(offset):
            raise ValueError(f"every and offset must be finite, got {every} and {offset}")
        # Integer microseconds: 0.1 s steps never drift the way float sums do.
        self._every = round(every * 1_000_000)
        self._offset = round(offset * 1_000_000) % self._every

    def next_after(self, t: datetime) -> datetime | None:
        return self._at(self._index(t) + 1)

    def count_between(self, after: datetime, until: datetime) -> int:
        """How many fires there are in (after, until]: arithmetic, however long the span."""
        return max(0, self._index(until) - self._index(after))

    def newest_between(self, after: datetime, until: datetime, keep: int) -> list[datetime]:
        """The newest ``keep`` fires in (after, until], oldest first."""
        last = self._index(until)
        first = max(self._index(after), last - max(keep, 0)) + 1
        return [self._at(k) for k in range(first, last + 1)]

    def _index(self, t: datetime) -> int:
        """k of the last fire at or before ``t`` (fire k is at k * every + offset)."""
        return (_micros(t) - self._offset) // self._every

    def _at(self, k: int) -> datetime:
        return _from_micros(k * self._every + self._offset)

    def describe(self) -> str:
        text = f"every {format_seconds(self._every / 1e6)}"
        return text + (f" (offset {format_seconds(self._offset / 1e6)})" if self._offset else "")


class DateSchedule:
    """Fires once, at ``at``."""

    __slots__ = ("_at",)

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("at must be an aware datetime")
        self._at = at.astimezone(UTC)

    def next_after(self, t: datetime) -> datetime | None:
        return self._at if self._at > t else None

    def describe(self) -> str:
        return f"once at {self._at.isoformat()}"


class StartOnlySchedule:
    """``@reboot``: never fires on its own; the daemon fires it once at every start."""

    __slots__ = ()

    def next_after(self, t: datetime) -> datetime | None:
        return None

    def describe(self) -> str:
        return "at every start (@reboot)"


class CronSchedule:
    """Cron in an IANA zone, with the Vixie-cron DST rule.

    Fields mean what Debian (Vixie) cron means (``specs.cron.cron_for_croniter``): "5-5" is 5,
    and day-of-month/day-of-week are ORed only when neither starts with ``*``.

    Matches are found by croniter in naive local wall time; the mapping to real instants is ours.
    A job is "wildcard" when its minute or hour field starts with ``*``: it follows real elapsed
    time (no fires in a skipped hour, fires in both passes of a repeated hour). Any other job is
    "fixed-time": a match in a skipped hour fires once at the moment the clocks jump, and a match
    in a repeated hour fires once, in the first pass.
    """

    __slots__ = ("_expr", "_iter", "_tz", "_wildcard", "_zone")

    def __init__(self, expr: str, timezone: str = "UTC") -> None:
        validate_cron(expr)
        fields = expand_cron(expr)
        seconds_first = len(fields) == 6
        minute, hour = fields[1:3] if seconds_first else fields[0:2]
        self._expr = expr
        self._zone = timezone
        self._tz: tzinfo = ZoneInfo(timezone)
        self._wildcard = minute.startswith("*") or hour.startswith("*")
        # One iterator, re-positioned per call: constructing croniter costs far more than using it.
        # Rewritten first so that croniter's matches are Debian cron's (see cron_for_croniter).
        rewritten, day_or = cron_for_croniter(expr)
        self._iter = croniter(
            rewritten, datetime(2000, 1, 1), day_or=day_or, second_at_beginning=seconds_first
        )

    @property
    def wildcard(self) -> bool:
        return self._wildcard

    def describe(self) -> str:
        return f"cron {self._expr!r} ({self._zone})"

    def next_after(self, t: datetime) -> datetime | None:
        if t.tzinfo is None:  # a naive t would silently be read in the host's zone
            raise ValueError("next_after needs an aware datetime")
        cur = t.astimezone(UTC)
        local = cur.astimezone(self._tz)
        off = _utcoffset(local)
        after = local.replace(tzinfo=None)  # matches must be strictly after this wall time
        skip = None  # matches must also be strictly after this wall time (fixed jobs, folds)
        if local.fold and not self._wildcard:
            skip = self._first_pass_end(cur, local)
        # Walk segments of constant offset; each DST change may end the walk or start a new one.
        for _ in range(_MAX_SEGMENTS):
            match = self._match_after(after if skip is None else max(after, skip))
            if match is None:
                return None
            candidate = (match - off).replace(tzinfo=UTC)
            change = _next_transition(self._tz, cur, candidate, off)
            if change is None:
                return candidate  # the fast path: no offset change before the match
            new_off = _offset(self._tz, change)
            if new_off > off and not self._wildcard and match < _wall(change, new_off):
                return change  # matches in the skipped hour fire once, as the clocks jump
            if new_off < off and not self._wildcard:
                skip = _wall(change, off) - _MICRO  # the repeated range ran in the first pass
            # The new segment starts at the change: its first wall time may itself match.
            cur, off, after = change, new_off, _wall(change, new_off) - _MICRO
        return None

    def _match_after(self, naive: datetime) -> datetime | None:
        """The first wall time strictly after ``naive`` (floored to the second) that matches."""
        self._iter.set_current(naive, force=True)
        try:
            match: datetime = self._iter.get_next(datetime)
        except CroniterBadDateError:  # e.g. "0 0 30 2 *": never
            return None
        return match

    def _first_pass_end(self, cur: datetime, local: datetime) -> datetime | None:
        """``cur`` is in the second pass of a repeated hour: the last wall time of that range.

        A fixed-time job fired in the first pass, so nothing before the range's end may match.
        """
        first_off = _utcoffset(local.replace(fold=0))
        first_pass = cur - (first_off - _utcoffset(local))  # same wall time, first pass
        change = _next_transition(self._tz, first_pass, cur, first_off)
        return None if change is None else _wall(change, first_off) - _MICRO


def _wall(instant: datetime, off: timedelta) -> datetime:
    """The naive wall-clock time of a UTC ``instant`` at offset ``off``."""
    return (instant + off).replace(tzinfo=None)


def _utcoffset(local: datetime) -> timedelta:
    off = local.utcoffset()
    assert off is not None  # local always carries a ZoneInfo here
    return off


def _offset(tz: tzinfo, instant: datetime) -> timedelta:
    return _utcoffset(instant.astimezone(tz))


def _next_transition(
    tz: tzinfo, after: datetime, until: datetime, off: timedelta
) -> datetime | None:
    """The first instant in (after, until] whose UTC offset differs from ``off``, to the second."""
    lo = after
    while lo < until:
        hi = min(lo + _CHUNK, until)
        if _offset(tz, hi) != off:
            return _bisect(tz, lo, hi, off)
        lo = hi
    return None


def _bisect(tz: tzinfo, lo: datetime, hi: datetime, off: timedelta) -> datetime:
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    if hi.timestamp() > hi_s:
        hi_s += 1
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _offset(tz, datetime.fromtimestamp(mid, UTC)) == off:
            lo_s = mid
        else:
            hi_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


def _micros(t: datetime) -> int:
    delta = t - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def build_schedule(job: JobSpec) -> Schedule:
    if job.cron is not None:
        if job.cron.strip().lower() == REBOOT:
            return StartOnlySchedule()
        return CronSchedule(job.cron, job.timezone)
    if job.every is not None:
        return IntervalSchedule(job.every, job.offset)
    if job.at is not None:
        return DateSchedule(job.at)
    raise ValueError(f"job {job.name!r} has no schedule")
