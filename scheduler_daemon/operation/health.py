"""What /healthz says: whether the daemon is up and what, if anything, needs an operator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from scheduler_daemon.operation import api_models as m

if TYPE_CHECKING:
    from scheduler_daemon.operation.api_handlers import Controlled

# Why a reload failed quotes the config (values included, secrets possibly): the log has it,
# an endpoint open to the whole host does not.
RELOAD_FAILED = "see the daemon's log (event reload_failed)"


def health(target: Controlled) -> m.Health:
    problems = _problems(target)
    recorder = target.recorder
    return m.Health(
        status="degraded" if problems else "ok",
        problems=problems,
        database="connected" if recorder.connected else "buffering",
        pending_rows=recorder.pending,
        config=m.ConfigState(
            path=str(target.config.path),
            jobs=len(target.all_jobs),
            last_reload="failed" if target.reload_error else "ok",
            reload_error=RELOAD_FAILED if target.reload_error else None,
        ),
        started_at=target.started_at,
        uptime_s=round((datetime.now(UTC) - target.started_at).total_seconds(), 1),
        cluster=_cluster(target),
    )


def _problems(target: Controlled) -> list[str]:
    problems = []
    if not target.recorder.connected:
        problems.append(f"database unreachable: {target.recorder.pending} rows buffered")
    if target.reload_error:
        problems.append(f"last reload failed: {RELOAD_FAILED}")
    if target.api_jobs.refused:
        problems.append(
            f"{len(target.api_jobs.refused)} job(s) kept in the database are not run: see the "
            "daemon's log (event api_job_not_run)"
        )
    cluster = target.membership
    if cluster is not None and not cluster.connected:
        problems.append(
            "cluster: this replica cannot heartbeat: it claims no fire until the database answers"
        )
    return problems


def _cluster(target: Controlled) -> m.ClusterState | None:
    cluster, metrics = target.membership, target.metrics
    if cluster is None:
        return None
    return m.ClusterState(
        node=cluster.node,
        live=list(cluster.live),
        connected=cluster.connected,
        claims=dict(metrics.claims()) if metrics.claims else {},
        takeovers=metrics.takeovers() if metrics.takeovers else 0,
        replicas={
            node: m.ReplicaClaims(won=c.won, lost=c.lost, takeovers=c.takeovers)
            for node, c in cluster.counts.items()
            if node in cluster.live
        },
    )
