"""Job kinds: each turns a spec into an ``Action`` whose ``run`` yields one attempt's Outcome.

An action never raises for a job's failure (that is an Outcome); the only exception it lets
through is CancelledError — on timeout, replace or shutdown — after cleaning up.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, Protocol

from scheduler_daemon.running.actions.command import CommandAction
from scheduler_daemon.running.actions.http import HttpAction, HttpClient
from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.actions.python import PythonAction
from scheduler_daemon.running.actions.results import ResultReader
from scheduler_daemon.specs import CommandSpec, HttpSpec, JobSpec

__all__ = ["Action", "ActionCache", "HttpClient", "Outcome", "build_action"]


class Action(Protocol):
    async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome: ...


def build_action(job: JobSpec, *, http: HttpClient, threads: Executor) -> Action:
    spec = job.action
    if isinstance(spec, CommandSpec):
        return CommandAction(spec, capture_bytes=job.capture_bytes)
    results = ResultReader(job) if job.result != "none" else None
    if isinstance(spec, HttpSpec):
        return HttpAction(spec, client=http, capture_bytes=job.capture_bytes, results=results)
    return PythonAction(spec, capture_bytes=job.capture_bytes, threads=threads, results=results)


class ActionCache:
    """One Action per job spec, built on first use and rebuilt when the spec changes (a reload
    keeps an unchanged job's spec object, so its action is kept too).

    An entry lives as long as its spec: the spec of an ad-hoc run, or a run's copy of a job with
    its own options, is gone once its fire ends, and so is its action (one per run otherwise)."""

    def __init__(self, http: HttpClient, threads: Executor) -> None:
        self._http = http
        self._threads = threads
        self._actions: dict[str, tuple[weakref.ref[JobSpec], Action]] = {}

    def __call__(self, job: JobSpec) -> Action:
        cached = self._actions.get(job.name)
        if cached is not None and cached[0]() is job:
            return cached[1]
        action = build_action(job, http=self._http, threads=self._threads)
        self._actions[job.name] = (weakref.ref(job, self._forget(job.name)), action)
        return action

    def __len__(self) -> int:
        return len(self._actions)

    def _forget(self, name: str) -> Callable[[weakref.ref[JobSpec]], None]:
        def forget(ref: weakref.ref[JobSpec]) -> None:
            cached = self._actions.get(name)
            if cached is not None and cached[0] is ref:  # not a newer spec's entry
                del self._actions[name]

        return forget
