from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from scheduler_daemon.operation.metrics import LiveState, Metrics
from scheduler_daemon.running.records import (
    ExecutionRecord,
    FireKind,
    Items,
    Status,
    scheduled_fire_id,
)
from tests.helpers import REPO

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def rec(
    job: str,
    status: Status,
    *,
    drift_ms: float = 3.0,
    duration_ms: float = 80.0,
    trigger: FireKind = FireKind.SCHEDULE,
) -> ExecutionRecord:
    return ExecutionRecord(
        scheduled_fire_id(job, AT), job, AT, 1, trigger, status,
        AT, AT + timedelta(milliseconds=duration_ms), drift_ms, duration_ms,
    )  # fmt: skip


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_attempts_fires_histograms_and_last_success_per_job() -> None:
    metrics = Metrics()
    metrics.attempt_finished(rec("a", Status.FAILED, drift_ms=2))
    metrics.attempt_finished(rec("a", Status.SUCCEEDED, drift_ms=700, duration_ms=3000))
    metrics.fire_ended("a", Status.SUCCEEDED)
    metrics.attempt_finished(rec("b", Status.SKIPPED))
    metrics.fire_ended("b", Status.SKIPPED)
    got = samples(metrics)
    assert got[("scheduler_attempts_total", (("job_name", "a"), ("status", "failed")))] == 1
    assert got[("scheduler_attempts_total", (("job_name", "a"), ("status", "succeeded")))] == 1
    assert got[("scheduler_fires_total", (("job_name", "a"), ("status", "succeeded")))] == 1
    assert got[("scheduler_fires_total", (("job_name", "b"), ("status", "skipped")))] == 1
    drift = "scheduler_drift_seconds_bucket"
    assert got[(drift, (("job_name", "a"), ("le", "0.0025")))] == 1
    assert got[(drift, (("job_name", "a"), ("le", "0.5")))] == 1
    assert got[(drift, (("job_name", "a"), ("le", "1.0")))] == 2
    assert got[(drift, (("job_name", "a"), ("le", "+Inf")))] == 2
    assert got[("scheduler_drift_seconds_count", (("job_name", "a"),))] == 2
    assert abs(got[("scheduler_attempt_duration_seconds_sum", (("job_name", "a"),))] - 3.08) < 1e-9
    last = ("scheduler_last_success_timestamp_seconds", (("job_name", "a"),))
    assert got[last] == (AT + timedelta(seconds=3)).timestamp()
    assert ("scheduler_last_success_timestamp_seconds", (("job_name", "b"),)) not in got


def test_drift_counts_scheduled_fires_only() -> None:
    metrics = Metrics()
    metrics.attempt_finished(rec("a", Status.SUCCEEDED, drift_ms=2))
    metrics.attempt_finished(rec("a", Status.SUCCEEDED, drift_ms=720_000, trigger=FireKind.CATCHUP))
    metrics.attempt_finished(rec("a", Status.SUCCEEDED, drift_ms=9_000, trigger=FireKind.MANUAL))
    got = samples(metrics)
    assert got[("scheduler_drift_seconds_count", (("job_name", "a"),))] == 1
    assert got[("scheduler_attempts_total", (("job_name", "a"), ("status", "succeeded")))] == 3


def test_results_and_items_kept_are_counted_per_job() -> None:
    metrics = Metrics()
    kept = rec("prices", Status.SUCCEEDED)
    kept.result, kept.result_bytes, kept.items = "[1, 2, 3]", 9, Items("[1, 2, 3]", 3)
    too_big = rec("prices", Status.SUCCEEDED)
    too_big.result_bytes = 2_000_000  # not kept: not counted
    for one in (kept, kept, too_big, rec("plain", Status.SUCCEEDED)):
        metrics.attempt_finished(one)
    got = samples(metrics)
    assert got[("scheduler_results_total", (("job_name", "prices"),))] == 2
    assert got[("scheduler_result_bytes_total", (("job_name", "prices"),))] == 18
    assert got[("scheduler_items_total", (("job_name", "prices"),))] == 6
    assert ("scheduler_results_total", (("job_name", "plain"),)) not in got
    metrics.forget_job("prices")
    assert ("scheduler_items_total", (("job_name", "prices"),)) not in samples(metrics)


def test_counts_survive_many_scrapes_and_removed_jobs_disappear() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.attempt_finished(rec("a", Status.SUCCEEDED))
        samples(metrics)
    assert (
        samples(metrics)[("scheduler_attempts_total", (("job_name", "a"), ("status", "succeeded")))]
        == 3
    )
    metrics.forget_job("a")
    assert not [k for k in samples(metrics) if ("job_name", "a") in k[1]]


def test_live_gauges_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    pending = [5]
    metrics.live = LiveState(
        running_attempts=lambda: 2,
        waiting_fires=lambda priority: {"high": 1, "normal": 0, "low": 7}[priority],
        recorder_stats=lambda: {
            "pending": pending[0],
            "pending_bytes": 2048,
            "written": 10,
            "failures": 1,
            "journaled": 0,
            "rejected": 0,
            "batches": 3,
        },
        journal_bytes=lambda: 4096,
        database_up=lambda: False,
        jobs_by_state=lambda: {"enabled": 3, "disabled": 1, "paused": 1},
    )
    got = samples(metrics)
    assert got[("scheduler_running_attempts", ())] == 2
    assert got[("scheduler_waiting_fires", (("priority", "low"),))] == 7
    assert got[("scheduler_recorder_pending_rows", ())] == 5
    assert got[("scheduler_recorder_pending_bytes", ())] == 2048
    assert got[("scheduler_recorder_journal_bytes", ())] == 4096
    assert got[("scheduler_database_up", ())] == 0
    assert got[("scheduler_jobs", (("state", "paused"),))] == 1
    pending[0] = 9
    assert samples(metrics)[("scheduler_recorder_pending_rows", ())] == 9


def test_cluster_gauges_are_exported_in_cluster_mode_only() -> None:
    metrics = Metrics()
    stats = dict.fromkeys(
        ("pending", "pending_bytes", "written", "failures", "journaled", "rejected"), 0
    )
    alone = LiveState(lambda: 0, lambda p: 0, lambda: stats, lambda: 0, lambda: True, lambda: {})
    metrics.live = alone
    assert not {name for name, _ in samples(metrics) if name.startswith("scheduler_cluster")}
    view = [(3, True)]
    metrics.live = LiveState(
        lambda: 0, lambda p: 0, lambda: stats, lambda: 0, lambda: True, lambda: {},
        cluster=lambda: view[0],
    )  # fmt: skip
    got = samples(metrics)
    assert got[("scheduler_cluster_nodes_live", ())] == 3
    assert got[("scheduler_cluster_connected", ())] == 1
    view[0] = (0, False)
    got = samples(metrics)
    assert got[("scheduler_cluster_nodes_live", ())] == 0
    assert got[("scheduler_cluster_connected", ())] == 0


def test_every_metric_the_grafana_dashboard_queries_is_exported() -> None:
    import json
    import re

    dashboard = REPO / "contrib" / "grafana"
    exprs = [
        target["expr"]
        for panel in json.loads((dashboard / "scheduler_daemon.json").read_text())["panels"]
        for target in panel["targets"]
    ]
    wanted = {name for expr in exprs for name in re.findall(r"\bscheduler_\w+", expr)}
    metrics = Metrics()
    metrics.live = LiveState(lambda: 0, lambda p: 0, lambda: dict.fromkeys(
        ("pending", "pending_bytes", "written", "failures", "journaled", "rejected", "batches"), 0),
        lambda: 0, lambda: True, lambda: {})  # fmt: skip
    metrics.attempt_finished(rec("a", Status.SUCCEEDED))
    metrics.fire_ended("a", Status.SUCCEEDED)
    metrics.reloads["succeeded"] += 1
    exported = {name for name, _ in samples(metrics)}
    assert wanted and wanted <= exported, wanted - exported


def test_reports_are_folded_a_chunk_at_a_time() -> None:
    metrics = Metrics()
    for _ in range(5):
        metrics.attempt_finished(rec("a", Status.SUCCEEDED))
        metrics.fire_ended("a", Status.SUCCEEDED)
    assert metrics.fold(2) is True
    assert metrics.fold(2) is True
    assert metrics.fold(2) is False
    assert metrics.fold(2) is False
    got = samples(metrics)
    assert got[("scheduler_attempts_total", (("job_name", "a"), ("status", "succeeded")))] == 5
    assert got[("scheduler_fires_total", (("job_name", "a"), ("status", "succeeded")))] == 5
