"""Prometheus metrics: what ran, how it ended, how late, and how the daemon itself is doing.

The runner reports every final attempt and every ended fire here. Reporting only appends to a
list (the fire path stays cheap); the daemon folds the list into counters and histograms in small
chunks between fires (``fold``), and a scrape folds whatever is left. Folding 50k reports in one
go stalled a 10k-job burst by tens of milliseconds. Gauges are read at scrape time.
Labels carry job names, statuses and priorities only: never anything from a job's spec.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from scheduler_daemon.running.fire import Fire
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status
from scheduler_daemon.running.runner import Runner
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.storage.recorder import Recorder
from scheduler_daemon.storage.retention import KINDS, Totals
from scheduler_daemon.timing.clock import Clock

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
DRIFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300)
# Reports kept before folding them all at once: a bound on memory if the folding task stalls.
_FOLD_AT = 1_000_000
# The folding loop: every FOLD_EVERY seconds, FOLD_CHUNK reports at a time, each chunk after
# FOLD_QUIET seconds in which no attempt started (a backlog past FOLD_BACKLOG: regardless).
FOLD_EVERY = 0.5
FOLD_CHUNK = 500
FOLD_QUIET = 0.005
FOLD_BACKLOG = 20_000


@dataclass(slots=True)
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; +Inf last
    total: float = 0.0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        counts = self.counts or [0] * (len(self.bounds) + 1)
        labels = (*(floatToGoString(b) for b in self.bounds), "+Inf")  # type: ignore[no-untyped-call]
        for bound, count in zip(labels, counts, strict=True):
            running += count
            out.append((bound, running))
        return out


def _take(items: list[Any], limit: int | None) -> tuple[list[Any], list[Any]]:
    """(the first ``limit`` items, the rest)."""
    if limit is None or len(items) <= limit:
        return items, []
    return items[:limit], items[limit:]


@dataclass(frozen=True, slots=True)
class LiveState:
    """Read at scrape time from the running daemon."""

    running_attempts: Callable[[], int]
    waiting_fires: Callable[[str], int]  # by priority
    recorder_stats: Callable[[], dict[str, int]]
    journal_bytes: Callable[[], int]
    database_up: Callable[[], bool]
    jobs_by_state: Callable[[], dict[str, int]]  # enabled / disabled / paused
    # Cluster mode: (replicas live, this one's heartbeat goes through); None: runs alone.
    cluster: Callable[[], tuple[int, bool]] | None = None

    @classmethod
    def of(
        cls,
        *,
        runner: Runner,
        limiter: Limiter,
        recorder: Recorder,
        journal: Path,
        jobs: Callable[[], Sequence[JobSpec]],
        paused: Container[str],
        cluster: Callable[[], tuple[int, bool]] | None = None,
    ) -> LiveState:
        """Read from the daemon's parts; ``jobs``: the configured jobs, now."""

        def jobs_by_state() -> dict[str, int]:
            current = jobs()
            paused_now = sum(1 for job in current if job.name in paused)
            enabled = sum(1 for job in current if job.enabled)
            return {"enabled": enabled, "disabled": len(current) - enabled, "paused": paused_now}

        def journal_bytes() -> int:
            try:
                return journal.stat().st_size
            except OSError:
                return 0

        return cls(
            running_attempts=lambda: sum(1 for fire in runner.active() if fire.state == "running"),
            waiting_fires=limiter.waiting,  # type: ignore[arg-type]
            recorder_stats=recorder.stats,
            journal_bytes=journal_bytes,
            database_up=lambda: recorder.connected,
            jobs_by_state=jobs_by_state,
            cluster=cluster,
        )


class Metrics(Collector):
    def __init__(self) -> None:
        self._attempts: list[ExecutionRecord] = []
        self._ended: list[tuple[str, str]] = []
        self._attempt_counts: dict[tuple[str, str], int] = defaultdict(int)
        self._fire_counts: dict[tuple[str, str], int] = defaultdict(int)
        self._durations: dict[str, _Histogram] = {}
        self._drifts: dict[str, _Histogram] = {}
        self._last_success: dict[str, float] = {}
        self._kept: dict[tuple[str, str], int] = defaultdict(int)  # results, items; bytes
        self.reloads = {"succeeded": 0, "failed": 0}
        # Cluster mode: claims by result (won, lost, unreachable) and fires taken over.
        self.claims: Callable[[], Mapping[str, int]] | None = None
        self.takeovers: Callable[[], int] | None = None
        self.pruned: Callable[[], Totals] | None = None  # retention (operation/retention.py)
        self.live: LiveState | None = None
        # The status page's live updates (operation/live.py), while it is served.
        self.on_start: Callable[[Fire], None] | None = None
        self.on_finish: Callable[[ExecutionRecord], None] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.registry.register(ProcessCollector(registry=None))

    # -- reporting (the fire path) ---------------------------------------------------------------

    def attempt_started(self, fire: Fire) -> None:
        if self.on_start is not None:
            self.on_start(fire)

    def attempt_finished(self, rec: ExecutionRecord) -> None:
        if self.on_finish is not None:
            self.on_finish(rec)
        self._attempts.append(rec)
        if len(self._attempts) > _FOLD_AT:
            self.fold()

    def fire_ended(self, job: str, status: Status) -> None:
        self._ended.append((job, status))
        if len(self._ended) > _FOLD_AT:
            self.fold()

    def backlog(self) -> int:
        return max(len(self._attempts), len(self._ended))

    def forget_job(self, job: str) -> None:
        """A job removed by a reload: drop its series (their values would never change again)."""
        self.fold()
        for counts in (self._attempt_counts, self._fire_counts, self._kept):
            for key in [k for k in counts if k[0] == job]:
                del counts[key]
        for per_job in (self._durations, self._drifts, self._last_success):
            per_job.pop(job, None)

    # -- scraping --------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def fold(self, limit: int | None = None) -> bool:
        """Fold up to ``limit`` reports of each kind (all: None); True if some are left."""
        attempts, self._attempts = _take(self._attempts, limit)
        ended, self._ended = _take(self._ended, limit)
        self._fold_attempts(attempts)
        for key in ended:
            self._fire_counts[key] += 1
        return bool(self._attempts or self._ended)

    async def fold_when_quiet(self, clock: Clock, attempts_started: Callable[[], int]) -> None:
        """Fold the reports a chunk at a time while no fire is starting: folding in the middle
        of a burst delays its later fires. A backlog past FOLD_BACKLOG is folded anyway
        (sustained load), still a chunk per turn of the loop. Runs until cancelled."""
        while True:
            await clock.sleep(FOLD_EVERY)
            more = True
            while more:
                starts = attempts_started()
                await clock.sleep(FOLD_QUIET)
                busy = attempts_started() != starts
                if busy and self.backlog() < FOLD_BACKLOG:
                    continue
                more = self.fold(FOLD_CHUNK)

    def _fold_attempts(self, attempts: list[ExecutionRecord]) -> None:
        for rec in attempts:
            job = rec.job_name
            self._attempt_counts[(job, rec.status)] += 1
            if rec.duration_ms is not None:
                self._histogram(self._durations, job, DURATION_BUCKETS).observe(
                    rec.duration_ms / 1000
                )
            if rec.drift_ms is not None and rec.trigger == FireKind.SCHEDULE:
                # The scheduler's lateness: a catch-up run is late by the downtime, by design.
                self._histogram(self._drifts, job, DRIFT_BUCKETS).observe(rec.drift_ms / 1000)
            if rec.status == Status.SUCCEEDED and rec.finished_at is not None:
                self._last_success[job] = rec.finished_at.timestamp()
            if rec.result is not None:
                self._kept[(job, "results")] += 1
                self._kept[(job, "result_bytes")] += rec.result_bytes or 0
            if rec.items is not None:
                self._kept[(job, "items")] += rec.items.count

    @staticmethod
    def _histogram(table: dict[str, _Histogram], job: str, bounds: tuple[float, ...]) -> _Histogram:
        hist = table.get(job)
        if hist is None:
            hist = table[job] = _Histogram(bounds)
        return hist

    def collect(self) -> Iterator[Metric]:
        self.fold()
        yield from self._counters()
        yield from self._histograms()
        if self.live is not None:
            yield from self._gauges(self.live)

    def _counters(self) -> Iterator[Metric]:
        fires = CounterMetricFamily(
            "scheduler_fires", "Fires by their final outcome.", labels=["job_name", "status"]
        )
        for (job, status), n in sorted(self._fire_counts.items()):
            fires.add_metric([job, str(status)], n)
        attempts = CounterMetricFamily(
            "scheduler_attempts", "Finished attempts by status.", labels=["job_name", "status"]
        )
        for (job, status), n in sorted(self._attempt_counts.items()):
            attempts.add_metric([job, str(status)], n)
        reloads = CounterMetricFamily(
            "scheduler_reloads", "Config reloads (SIGHUP) by result.", labels=["result"]
        )
        for result, n in sorted(self.reloads.items()):
            reloads.add_metric([result], n)
        success = GaugeMetricFamily(
            "scheduler_last_success_timestamp_seconds",
            "When the job's last successful attempt finished (Unix time).",
            labels=["job_name"],
        )
        for job, at in sorted(self._last_success.items()):
            success.add_metric([job], at)
        yield from (fires, attempts, reloads, success, *self._kept_counters())
        yield from self._cluster()
        yield from self._retention()

    def _kept_counters(self) -> Iterator[Metric]:
        """What attempts kept as data (README: Results as data)."""
        for kind, name, doc in (
            ("results", "scheduler_results", "Results kept in executions.result."),
            ("result_bytes", "scheduler_result_bytes", "Bytes of the results kept."),
            ("items", "scheduler_items", "Rows of job_items extracted from results."),
        ):
            family = CounterMetricFamily(name, doc, labels=["job_name"])
            for (job, counted), n in sorted(self._kept.items()):
                if counted == kind:
                    family.add_metric([job], n)
            yield family

    def _cluster(self) -> Iterator[Metric]:
        if self.claims is None or self.takeovers is None:
            return
        claims = CounterMetricFamily(
            "scheduler_claims", "Cluster mode: attempts claimed, by result.", labels=["result"]
        )
        counts = self.claims()
        for result in ("won", "lost", "unreachable"):
            claims.add_metric([result], counts.get(result, 0))
        takeovers = CounterMetricFamily(
            "scheduler_takeovers",
            "Cluster mode: fires this replica ran for a replica that had not claimed them.",
        )
        takeovers.add_metric([], self.takeovers())
        yield from (claims, takeovers)

    def _retention(self) -> Iterator[Metric]:
        if self.pruned is None:
            return
        totals = self.pruned()
        for unit, counts in (("rows", totals.rows), ("bytes", totals.bytes)):
            family = CounterMetricFamily(
                f"scheduler_history_pruned_{unit}",
                f"Retention: {unit} of history removed (results: cleared), by kind.",
                labels=["kind"],
            )
            for kind in KINDS:
                family.add_metric([kind], counts.get(kind, 0))
            yield family
        if totals.last_round_at is not None and totals.last_round_seconds is not None:
            yield GaugeMetricFamily(
                "scheduler_history_prune_last_timestamp_seconds",
                "When this daemon's last pruning round ended (Unix time).",
                value=totals.last_round_at,
            )
            yield GaugeMetricFamily(
                "scheduler_history_prune_last_duration_seconds",
                "How long this daemon's last pruning round took.",
                value=totals.last_round_seconds,
            )

    def _histograms(self) -> Iterator[Metric]:
        for name, doc, table in (
            ("scheduler_attempt_duration_seconds", "Attempt durations.", self._durations),
            (
                "scheduler_drift_seconds",
                "Attempt start minus the instant it was due.",
                self._drifts,
            ),
        ):
            family = HistogramMetricFamily(name, doc, labels=["job_name"])
            for job, hist in sorted(table.items()):
                family.add_metric([job], hist.buckets(), hist.total)
            yield family

    def _gauges(self, live: LiveState) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "scheduler_running_attempts", "Attempts running now.", value=live.running_attempts()
        )
        waiting = GaugeMetricFamily(
            "scheduler_waiting_fires",
            "Fires waiting for a concurrency slot, by priority.",
            labels=["priority"],
        )
        for priority in ("high", "normal", "low"):
            waiting.add_metric([priority], live.waiting_fires(priority))
        yield waiting
        stats = live.recorder_stats()
        yield GaugeMetricFamily(
            "scheduler_recorder_pending_rows",
            "Execution rows in memory, not yet written to PostgreSQL.",
            value=stats["pending"],
        )
        yield GaugeMetricFamily(
            "scheduler_recorder_pending_bytes",
            "Estimated memory of those rows (output and error text, ~450 bytes a row).",
            value=stats["pending_bytes"],
        )
        yield GaugeMetricFamily(
            "scheduler_recorder_journal_bytes",
            "Size of the on-disk journal of rows waiting for the database.",
            value=live.journal_bytes(),
        )
        for key, doc in (
            ("written", "Execution rows committed to PostgreSQL."),
            ("failures", "Failed database connections or writes."),
            ("journaled", "Rows spilled to the on-disk journal."),
            ("rejected", "Rows the database refused as data."),
        ):
            yield CounterMetricFamily(f"scheduler_recorder_{key}_rows", doc, value=stats[key])
        yield GaugeMetricFamily(
            "scheduler_database_up",
            "1 when the recorder is connected to PostgreSQL.",
            value=1 if live.database_up() else 0,
        )
        jobs = GaugeMetricFamily("scheduler_jobs", "Configured jobs by state.", labels=["state"])
        for state, n in sorted(live.jobs_by_state().items()):
            jobs.add_metric([state], n)
        yield jobs
        if live.cluster is not None:
            live_nodes, connected = live.cluster()
            yield GaugeMetricFamily(
                "scheduler_cluster_nodes_live",
                "Replicas heartbeating now, this one included (cluster mode).",
                value=live_nodes,
            )
            yield GaugeMetricFamily(
                "scheduler_cluster_connected",
                "1 when this replica's heartbeat goes through (0: it claims no fire).",
                value=1 if connected else 0,
            )
        yield GaugeMetricFamily("scheduler_scrape_timestamp_seconds", "Now.", value=time.time())
