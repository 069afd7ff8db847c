"""How long a stop may take: what TimeoutStopSec= must cover, and EXTEND_TIMEOUT_USEC asks for."""

from __future__ import annotations

from collections.abc import Iterable

from scheduler_daemon.operation import admin
from scheduler_daemon.specs import Config, JobSpec
from scheduler_daemon.storage.database import POOL_CLOSE_TIMEOUT

# A stop, step by step (each bounded): the drain (shutdown_grace, then the longest kill_grace of a
# command cancelled at its end), the admin server's close, the last flush (what it has not written
# by then goes to the journal), the journal spill of a full buffer (100,000 small rows: 3.5 s,
# 64 MiB of output: 0.9 s on a 2-core VM; allowed 3x that and more), the pool's close and the
# embedded PostgreSQL's stop (a fast shutdown's checkpoint). systemd/scheduler-daemon.service's
# TimeoutStopSec= covers the default config; the daemon asks systemd for more when it needs it.
FLUSH_TIMEOUT = 10.0
SPILL_ROWS_TIME = 10.0  # a spill of the row bound's 100,000 rows
SPILL_BYTES_PER_S = 20 * 1024 * 1024  # of record_buffer bytes
EMBEDDED_STOP_TIME = 10.0


def stop_budget(config: Config, jobs: Iterable[JobSpec] | None = None) -> float:
    """The seconds a stop may take with ``config``: every step at its bound. ``jobs``: those that
    run, when not only the file's (the database's too)."""
    jobs = config.jobs if jobs is None else jobs
    kill = max((j.kill_grace for j in jobs if j.kind == "command"), default=0.0)
    spill = SPILL_ROWS_TIME + config.record_buffer / SPILL_BYTES_PER_S
    close = admin.SHUTDOWN_TIMEOUT + POOL_CLOSE_TIMEOUT + EMBEDDED_STOP_TIME
    return config.shutdown_grace + kill + FLUSH_TIMEOUT + spill + close
