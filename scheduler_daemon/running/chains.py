"""Chained jobs: a fire that succeeds starts the jobs of its `then:` list, passing its result.

The chained fire's id is derived from its job and its parent's fire id (a replay or a replica
computes the same one), its trigger is `chain` and its row names the parent (`parent_fire_id`).
Its job gets the parent's result: a python function as its `result` keyword argument (when it
takes one), an HTTP job wherever its `json:` body says "$result".
"""

from __future__ import annotations

from collections.abc import Callable, Container
from datetime import UTC, datetime
from typing import Any

import structlog

from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.fire import Fire, Submit
from scheduler_daemon.running.records import FireKind
from scheduler_daemon.specs import HttpSpec, JobSpec, PythonSpec

log = structlog.get_logger("scheduler_daemon.running.chains")

RESULT_PLACEHOLDER = "$result"
# A chain is checked for cycles when jobs are loaded; this bounds one that slipped through (API
# jobs changed one at a time), so that a loop of jobs can never keep a daemon busy forever.
MAX_DEPTH = 32


class Chains:
    """Starts the chained jobs of each fire that succeeded (the runner calls ``succeeded``)."""

    def __init__(
        self,
        jobs: Callable[[str], JobSpec | None],
        clock: Callable[[], float],
        paused: Container[str] = (),
    ) -> None:
        """``jobs``: the job of a name now (the job set changes with reloads and the API)."""
        self._jobs = jobs
        self._now = clock
        self._paused = paused
        self.started = 0

    def succeeded(self, fire: Fire, outcome: Outcome | None, submit: Submit) -> None:
        if not fire.job.then:
            return
        value = outcome.kept.value if outcome is not None and outcome.kept is not None else None
        now = datetime.fromtimestamp(self._now(), UTC)
        for name in fire.job.then:
            child = self._jobs(name)
            refused = "the job is paused" if name in self._paused else _refused(fire, name, child)
            if refused is not None or child is None:
                log.error("chain_not_started", job=name, parent=fire.job.name,
                          parent_fire_id=str(fire.fire_id), reason=refused)  # fmt: skip
                continue
            submit(child, now, trigger=FireKind.CHAIN, overrides=_passed(child, value),
                        parent=fire)  # fmt: skip
            self.started += 1


def _refused(parent: Fire, name: str, child: JobSpec | None) -> str | None:
    if child is None:
        return "no such job (removed since its parent was loaded?)"
    if name in parent.chain or name == parent.job.name:
        return f"a cycle: {' → '.join([*parent.chain, parent.job.name, name])}"
    if len(parent.chain) >= MAX_DEPTH:
        return f"a chain deeper than {MAX_DEPTH} jobs"
    return None  # `enabled: false` only stops its schedule: a step of a chain is written so


def _passed(job: JobSpec, value: Any) -> dict[str, Any] | None:
    """What the chained job gets of its parent's result (None: nothing to pass)."""
    action = job.action
    if isinstance(action, PythonSpec):
        return {"result": value}
    if isinstance(action, HttpSpec) and _mentions(action.json_body):
        return {"json": substitute(action.json_body, value)}
    return None


def substitute(body: Any, value: Any) -> Any:
    """``body`` with every string "$result" replaced by ``value``."""
    if body == RESULT_PLACEHOLDER:
        return value
    if isinstance(body, dict):
        return {k: substitute(v, value) for k, v in body.items()}
    if isinstance(body, list):
        return [substitute(v, value) for v in body]
    return body


def _mentions(body: Any) -> bool:
    if body == RESULT_PLACEHOLDER:
        return True
    if isinstance(body, dict):
        return any(_mentions(v) for v in body.values())
    if isinstance(body, list):
        return any(_mentions(v) for v in body)
    return False
