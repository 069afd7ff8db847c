"""What a one-off run carries besides its job's name: an ad-hoc job, and its own options.

An ad-hoc run (`POST /runs` with `"job": {...}`) runs a job that exists nowhere else. Its body
has a YAML job's fields but no schedule: the run's instant is the request's `at`, so `cron`,
`every` and `at` in the body are refused. The body is checked by ``build_api_job`` as an API job
is (kinds, secrets as references), with the run's instant as its `at` (a job needs a schedule);
`runs.job` stores it as written, without that `at`, and the daemon builds it again, under the
rules of the moment, when the run starts.

A run's options (`priority`, `retry`, either form) apply to that run only: `runs.options`.
Rows written straight into `runs` are checked like the API's input before anything runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import ValidationError

from scheduler_daemon.specs import JobSpec, Priority, RetrySpec
from scheduler_daemon.specs import values as v
from scheduler_daemon.specs.api_job import ApiJobRules, JobProblems, build_api_job
from scheduler_daemon.specs.models import SCHEDULE_KEYS
from scheduler_daemon.specs.spec import Problem, Spec, problems_of

OPTION_KEYS = ("priority", "retry")
ADHOC_PREFIX = "adhoc-"


class RunOptions(Spec):
    """A run's own priority and retry (the job's own apply where one is not given)."""

    priority: Annotated[Priority, v.OneOf()] = "normal"
    retry: RetrySpec = RetrySpec()

    @classmethod
    def of(cls, stored: object) -> RunOptions | None:
        """The options of a request or a `runs` row; JobProblems at their keys if invalid."""
        if stored is None:
            return None
        if not isinstance(stored, Mapping):
            raise JobProblems([((), f"options must be a JSON object, got {v.got(stored)}")])
        try:
            return cls.model_validate(dict(stored))
        except ValidationError as exc:
            raise JobProblems(problems_of(exc)) from None

    def applied(self, job: JobSpec) -> JobSpec:
        """``job`` with the options given (only those: the job's own stay otherwise)."""
        update = {name: getattr(self, name) for name in self.model_fields_set}
        return job.model_copy(update=update) if update else job


def default_name(run_id: object) -> str:
    return f"{ADHOC_PREFIX}{str(run_id).replace('-', '')[:8]}"


def adhoc_job(
    body: Mapping[str, Any],
    run_at: datetime,
    rules: ApiJobRules,
    *,
    default: str,
    environ: Mapping[str, str] | None = os.environ,
    check_target: bool = False,
) -> tuple[JobSpec, dict[str, Any]]:
    """An ad-hoc run's job and its definition to store (as written: references, not secrets,
    and no schedule). ``default``: its name when the body gives none. JobProblems lists every
    problem, each at its path in the body."""
    name = body.get("name", default)
    fields = {k: val for k, val in body.items() if k not in (*SCHEDULE_KEYS, "name")}
    problems: list[Problem] = [
        (
            (key,),
            f"a one-off run has no schedule: leave `{key}` out (the run starts at the request's "
            "`at`, by default now; a job that runs on a schedule is created with POST /jobs)",
        )
        for key in SCHEDULE_KEYS
        if key in body
    ]
    if not isinstance(name, str):
        problems.append((("name",), f"expected a job name, got {v.got(name)}"))
        name = default
    try:
        job, definition = build_api_job(
            name,
            {**fields, "at": run_at.isoformat()},
            rules,
            environ=environ,
            check_target=check_target,
        )
    except JobProblems as exc:
        raise JobProblems(problems + exc.problems) from None
    if problems:
        raise JobProblems(problems)
    definition.pop("at", None)
    return job, definition


def shown_spec(run_job: object, run_at: datetime, name: str, rules: ApiJobRules) -> Any:
    """An ad-hoc run's job, secrets redacted, for the API (None: not an ad-hoc run, or a job
    the rules no longer allow). References are not resolved: only their names are shown."""
    if not isinstance(run_job, Mapping):
        return None
    try:
        job, _ = adhoc_job(run_job, run_at, rules, default=name, environ=None)
    except JobProblems:
        return None
    return job.redacted()
