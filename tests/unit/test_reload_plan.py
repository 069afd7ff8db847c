"""The reload plan: which jobs a new config adds, changes, removes or keeps, and the settings
only a restart can change."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from scheduler_daemon.operation.reload import RESTART_ONLY, _unshared, plan_api_jobs, plan_reload
from scheduler_daemon.specs import AdminSpec, Config, DatabaseSpec, JobSpec
from tests.helpers import make_config, make_job

A, B, C = make_job("a"), make_job("b"), make_job("c")
A_SLOWER = make_job("a", every=5.0)
B_AGAIN = make_job("b")  # an equal spec in another object (the new file's)


def config(*jobs: JobSpec, **settings: Any) -> Config:
    return make_config(*jobs, **settings)


@pytest.mark.parametrize(
    ("old", "new", "added", "changed", "removed", "unchanged"),
    [
        ((A, B), (A, B), (), (), (), ("a", "b")),
        ((A,), (A, B), ("b",), (), (), ("a",)),
        ((A, B), (B,), (), (), ("a",), ("b",)),
        ((A, B), (A_SLOWER, B_AGAIN), (), ("a",), (), ("b",)),
        ((A, B), (C, A_SLOWER), ("c",), ("a",), ("b",), ()),
        ((), (B, A), ("b", "a"), (), (), ()),
        ((C, B, A), (), (), (), ("a", "b", "c"), ()),
    ],
    ids=["same", "add", "remove", "change", "all-three", "from-empty", "to-empty"],
)
def test_jobs_are_told_apart_by_name_and_spec_hash(
    old: tuple[JobSpec, ...],
    new: tuple[JobSpec, ...],
    added: tuple[str, ...],
    changed: tuple[str, ...],
    removed: tuple[str, ...],
    unchanged: tuple[str, ...],
) -> None:
    plan = plan_reload(config(*old), config(*new))
    kept = tuple(job.name for job in plan.config.jobs if job.name not in plan.added + plan.changed)
    assert (plan.added, plan.changed, plan.removed, kept) == (added, changed, removed, unchanged)
    running = {job.name: job for job in old}
    assert all(job is running[job.name] for job in plan.config.jobs if job.name in kept)
    assert [job.name for job in plan.config.jobs] == [job.name for job in new]
    assert plan.by_name == {job.name: job for job in plan.config.jobs}
    assert [job.name for job in plan.to_schedule] == [
        job.name for job in new if job.name in {*added, *changed}
    ]


def test_unchanged_jobs_keep_their_old_spec_object() -> None:
    plan = plan_reload(config(A, B), config(A_SLOWER, B_AGAIN))
    a, b = plan.config.jobs
    assert a is A_SLOWER  # changed: the new spec
    assert b is B and b is not B_AGAIN  # unchanged: scheduled entries and cached actions stay
    same = config(A, B)
    assert plan_reload(config(A, B), same).config.jobs is same.jobs  # the very specs: no copy


@pytest.mark.parametrize("seed", range(30))
def test_the_jobs_two_configs_do_not_share_are_found_wherever_they_are(seed: int) -> None:
    """A reload's jobs are mostly the running spec objects in place; the edits (added, removed,
    moved, swapped jobs) may be anywhere, at the ends too."""
    rng = random.Random(seed)
    old = [make_job(f"j{i}") for i in range(rng.randint(0, 8))]
    new = list(old)
    for _ in range(rng.randint(0, 3)):
        edit, at = rng.choice("ardm"), rng.randint(0, len(new))
        if edit == "a":
            new.insert(at, make_job(f"new{rng.random()}"))
        elif edit == "r" and new:
            new.pop(min(at, len(new) - 1))
        elif edit == "m" and new:
            new.insert(at, new.pop(rng.randrange(len(new))))
        elif edit == "d":
            new.insert(at, make_job(f"j{at}"))  # an equal spec, another object
    fresh, gone = _unshared(tuple(old), tuple(new))
    assert list(map(id, fresh)) == [id(job) for job in new if all(job is not o for o in old)]
    assert list(map(id, gone)) == [id(job) for job in old if all(job is not n for n in new)]


ADMIN = AdminSpec.model_validate({"listen": "127.0.0.1:8089"})


@pytest.mark.parametrize(
    ("old", "new", "restart_only"),
    [
        ({}, {}, ()),
        ({}, {"max_concurrency": 8, "shutdown_grace": 5.0, "timezone": "Europe/Paris"}, ()),
        ({"database": DatabaseSpec(url="postgresql:///a")},
         {"database": DatabaseSpec(url="postgresql:///b")}, ("database",)),
        ({}, {"state_dir": Path("/srv/s")}, ("state_dir",)),
        ({"node": "n1"}, {"node": "n2", "events": False}, ("events", "node")),
        ({}, {"record_buffer": 1024}, ("record_buffer",)),
        ({}, {"admin": ADMIN}, ("admin",)),
        ({"admin": ADMIN}, {}, ("admin",)),
    ],
    ids=["none", "reloadable", "database", "state_dir", "node+events", "record_buffer", "admin-on",
         "admin-off"],
)  # fmt: skip
def test_restart_only_settings_keep_their_running_values(
    old: dict[str, Any], new: dict[str, Any], restart_only: tuple[str, ...]
) -> None:
    running, loaded = config(A, **old), config(A, **new)
    plan = plan_reload(running, loaded)
    assert plan.restart_only == restart_only
    for key in RESTART_ONLY:
        assert getattr(plan.config, key) == getattr(running, key)
    for key in ("max_concurrency", "shutdown_grace", "timezone"):
        assert getattr(plan.config, key) == getattr(loaded, key)


def test_a_change_of_the_databases_jobs_compares_only_those() -> None:
    plan = plan_api_jobs({"a": A, "b": B}, {"b": B_AGAIN, "c": C})
    assert (plan.added, plan.changed, plan.removed, plan.unchanged) == (("c",), (), ("a",), ("b",))
    assert plan.jobs == {"b": B, "c": C}
    assert plan.jobs["b"] is B  # kept: its entry stays
    assert plan.to_schedule == (C,)
    changed = plan_api_jobs({"a": A, "b": B}, {"a": A_SLOWER, "b": B})
    assert changed.changed == ("a",) and changed.to_schedule == (A_SLOWER,)
