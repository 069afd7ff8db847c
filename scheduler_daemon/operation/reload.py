"""What a reload changes: the job set's differences and the settings only a restart can change.

Pure: ``plan_reload(old, new)`` compares two validated configs; the daemon applies the plan
(scheduler, limiter, metrics, the ``jobs`` table) and logs it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import compress, count
from operator import is_not, not_
from pathlib import Path

from scheduler_daemon.specs import Config, JobSpec, load_config
from scheduler_daemon.specs.cron import REBOOT
from scheduler_daemon.specs.job_blocks import JobBlocks
from scheduler_daemon.timing.schedules import CronSchedule, build_schedule

# The database connection, its files and this node's identity are fixed for a process's life.
RESTART_ONLY = ("database", "state_dir", "node", "admin", "events", "record_buffer", "cluster")


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    added: tuple[str, ...]  # job names, in the new config's order
    changed: tuple[str, ...]  # same name, different spec_hash()
    removed: tuple[str, ...]  # sorted
    restart_only: tuple[str, ...]  # settings that differ but keep their running values (sorted)
    config: Config  # what to run from now on
    by_name: dict[str, JobSpec]  # its jobs
    to_schedule: tuple[JobSpec, ...]  # the added and the changed ones


def plan_reload(
    old: Config, new: Config, old_jobs: Mapping[str, JobSpec] | None = None
) -> ReloadPlan:
    """Compare ``old`` (running; ``old_jobs``: its jobs by name, when known) with ``new`` (just
    loaded and valid).

    The config to adopt is ``new`` with two exceptions: an unchanged job keeps its OLD spec
    object (its scheduled entry and cached action stay valid), and a restart-only setting keeps
    its running value. A job loaded from unchanged text is the running spec object itself, so
    only the others are looked at by name: reading a name off each of 100k specs took 0.2 s."""
    if old_jobs is None:
        old_jobs = {job.name: job for job in old.jobs}
    fresh, unkept = _unshared(old.jobs, new.jobs)
    gone = [job.name for job in unkept]
    added, changed, to_schedule = [], [], []
    swapped: dict[int, JobSpec] = {}  # an unchanged job's new spec → its running one
    for job in fresh:
        before = old_jobs.get(job.name)
        if before is None:
            added.append(job.name)
            to_schedule.append(job)
        elif before.spec_hash() != job.spec_hash():
            changed.append(job.name)
            to_schedule.append(job)
        else:
            swapped[id(job)] = before
    jobs = tuple(swapped.get(id(job), job) for job in new.jobs) if swapped else new.jobs
    by_name = dict(old_jobs)
    fresh_names = {job.name for job in fresh}
    removed = sorted(name for name in gone if name not in fresh_names)
    for name in removed:
        del by_name[name]
    for job in fresh:
        by_name[job.name] = swapped.get(id(job), job)
    restart_only = {
        key: getattr(old, key) for key in RESTART_ONLY if getattr(old, key) != getattr(new, key)
    }
    return ReloadPlan(
        added=tuple(added),
        changed=tuple(changed),
        removed=tuple(removed),
        restart_only=tuple(sorted(restart_only)),
        config=new.model_copy(update={"jobs": jobs, **restart_only}),
        by_name=by_name,
        to_schedule=tuple(to_schedule),
    )


def _unshared(
    old: Sequence[JobSpec], new: Sequence[JobSpec]
) -> tuple[list[JobSpec], list[JobSpec]]:
    """(the jobs of ``new`` that are not objects of ``old``, those of ``old`` not in ``new``),
    each in its order. A reload keeps most of them in place: the shared runs at both ends are
    skipped at C speed (a Python loop over 100k jobs takes 50 ms, a set of their ids 80)."""
    shortest = min(len(old), len(new))
    head = next(compress(count(), map(is_not, old, new)), shortest)
    tail = next(compress(count(), map(is_not, reversed(old), reversed(new))), shortest)
    tail = min(tail, shortest - head)  # the same objects throughout: both runs are all of them
    old_rest, new_rest = old[head : len(old) - tail], new[head : len(new) - tail]
    return _objects_not_in(new_rest, old_rest), _objects_not_in(old_rest, new_rest)


def _objects_not_in(jobs: Sequence[JobSpec], others: Sequence[JobSpec]) -> list[JobSpec]:
    theirs = set(map(id, others))
    return list(compress(jobs, map(not_, map(theirs.__contains__, map(id, jobs)))))


@dataclass(frozen=True, slots=True)
class ApiJobsPlan:
    added: tuple[str, ...]  # job names, sorted
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]
    jobs: dict[str, JobSpec]  # what to run from now on, by name (sorted)
    to_schedule: tuple[JobSpec, ...]  # the added and the changed ones


def plan_api_jobs(before: Mapping[str, JobSpec], after: Mapping[str, JobSpec]) -> ApiJobsPlan:
    """A change of the database's jobs (``before`` → ``after``, by name): only those are
    compared, so that one API write to a config of 100k jobs costs what its own jobs cost; an
    unchanged job keeps its running spec object."""
    added, changed, unchanged = [], [], []
    jobs: dict[str, JobSpec] = {}
    for name in sorted(after):
        job, old = after[name], before.get(name)
        if old is None:
            added.append(name)
        elif old is not job and old.spec_hash() != job.spec_hash():
            changed.append(name)
        else:
            unchanged.append(name)
            job = old
        jobs[name] = job
    return ApiJobsPlan(
        added=tuple(added),
        changed=tuple(changed),
        removed=tuple(sorted(before.keys() - after.keys())),
        unchanged=tuple(unchanged),
        jobs=jobs,
        to_schedule=tuple(jobs[name] for name in (*added, *changed)),
    )


def first_fire(job: JobSpec) -> datetime | None:
    """The job's first fire from now: computed while loading, so a schedule that cannot compute
    one is a config error instead of an exception in the running daemon."""
    if job.cron is not None:
        return _cron_first_fire(job.cron, job.timezone)
    return build_schedule(job).next_after(datetime.now(UTC))


@functools.lru_cache(maxsize=4096)
def _cron_first_fire(expr: str, timezone: str) -> datetime | None:
    """Jobs with the same expression and zone share one answer: building a cron schedule costs
    ~1 ms, which 100k jobs would pay again on every reload (their schedules are built anyway)."""
    if expr.strip().lower() == REBOOT:
        return None
    return CronSchedule(expr, timezone).next_after(datetime.now(UTC))


def load_checked(
    path: str | Path,
    *,
    environ: Mapping[str, str] | None = None,
    import_targets: bool = False,
    blocks: JobBlocks | None = None,
) -> Config:
    """``load_config`` with every job's first fire computed (what the daemon and the CLI use);
    ``import_targets`` (`check`, `run`, a reload): python_path applied, python targets imported;
    ``blocks``: the daemon's jobs as last loaded, reused where their text is unchanged."""
    return load_config(
        path, environ=environ, first_fire=first_fire, import_targets=import_targets, blocks=blocks
    )


def load_for_reload(
    path: Path, blocks: JobBlocks, running: Config, running_jobs: Mapping[str, JobSpec]
) -> ReloadPlan:
    """Load a config (its python targets imported) and plan it against ``running`` (its jobs
    by name), in the reload's worker thread: importing a module runs whatever code it has, and
    comparing 100k jobs on the event loop delayed every fire by 0.4 s (hashing their specs:
    seconds). A job whose text is unchanged is the running spec itself (``blocks``)."""
    new = load_checked(path, import_targets=True, blocks=blocks)
    return plan_reload(running, new, running_jobs)
