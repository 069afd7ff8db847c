"""The runner's actions, one per job spec: kept while the spec lives, rebuilt when it changes,
forgotten when it is gone (each ad-hoc run's job is a spec of its own)."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

from scheduler_daemon.running.actions import ActionCache, HttpClient
from scheduler_daemon.specs import CommandSpec
from tests.helpers import make_job


def test_an_action_lives_as_long_as_its_spec() -> None:
    with ThreadPoolExecutor(1) as threads:
        cache = ActionCache(HttpClient(), threads)
        kept = make_job("kept")
        assert cache(kept) is cache(kept) and len(cache) == 1
        for n in range(50):  # fifty ad-hoc runs, each its own job, each fire over
            cache(make_job(f"adhoc-{n}"))
        gc.collect()
        assert len(cache) == 1  # the configured job's only


def test_a_replaced_spec_going_does_not_take_its_successors_action() -> None:
    with ThreadPoolExecutor(1) as threads:
        cache = ActionCache(HttpClient(), threads)
        old = make_job("job")
        first = cache(old)
        new = make_job("job", action=CommandSpec(argv=("echo", "changed")))
        second = cache(new)
        assert second is not first
        del old
        gc.collect()
        assert len(cache) == 1 and cache(new) is second
