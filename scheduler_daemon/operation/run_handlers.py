"""The admin API's POST /runs: a one-off run of a configured job, or of an ad-hoc job.

``"job": "<name>"`` runs a job that exists (the config file's or the API's); ``"job": {...}``
runs a job that exists nowhere else (adhoc.py: no schedule; checked as an API job is, 422
``invalid_job`` with every problem; a taken name is 409 ``already_exists``). Either takes the
run's own ``priority`` and ``retry`` (422 ``invalid_options``) and overrides (``bad_overrides``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from scheduler_daemon.operation import api_models as m
from scheduler_daemon.operation.adhoc import (
    OPTION_KEYS,
    RunOptions,
    adhoc_job,
    default_name,
)
from scheduler_daemon.operation.api_handlers import Api, body_of, instant_of, overrides_of, reply
from scheduler_daemon.operation.api_models import ApiError, InvalidJob
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.specs.api_job import JobProblems
from scheduler_daemon.storage import queries


async def create_run(api: Api, request: web.Request, query: m.Query) -> web.Response:
    body = await body_of(request)
    if body is None or not isinstance(body.get("job"), str | dict):
        raise ApiError(
            400, "bad_request", 'expected a JSON object with "job": "<name>" or "job": {<job>}'
        )
    at = instant_of(body.get("at")) or datetime.now(UTC)
    options = {k: body[k] for k in OPTION_KEYS if body.get(k) is not None}
    try:
        RunOptions.of(options)
    except JobProblems as exc:
        raise InvalidJob(exc, "invalid_options", "run's options") from None
    setup = queries.RunSetup(options=options or None)
    if isinstance(body["job"], str):
        job = api.t.job(body["job"])
        if job is None:
            raise ApiError(404, "unknown_job", f"no job named {body['job']!r} is configured")
    else:
        job, definition = await _adhoc_job(api, body["job"], at, setup.id)
        setup = dataclasses.replace(setup, job=definition)
    rest = {k: v for k, v in body.items() if k not in ("job", "at", *OPTION_KEYS)}
    overrides = overrides_of(job, rest or None)
    api.pool()
    try:
        run = await api.t.create_run(job, at, overrides, setup)
    except queries.TooManyRuns as exc:
        raise ApiError(429, "too_many_runs", str(exc)) from None
    return reply(api.run_body(run), status=201)


async def _adhoc_job(
    api: Api, body: dict[str, Any], at: datetime, run_id: uuid.UUID
) -> tuple[JobSpec, dict[str, Any]]:
    rules = api.t.api_jobs.rules
    try:
        # In a thread: a python job's target is imported to check it (its module's code runs).
        job, definition = await asyncio.to_thread(
            adhoc_job, body, at, rules, default=default_name(run_id), check_target=True
        )
    except JobProblems as exc:
        raise InvalidJob(exc) from None
    pool = api.pool()
    taken = api.t.job(job.name) is not None or job.name in api.t.api_jobs.stored
    if taken or await queries.job_exists(pool, job.name):
        raise ApiError(
            409,
            "already_exists",
            f'a job named {job.name!r} exists already: run it with "job": {job.name!r}, '
            "or give this run's job another name",
        )
    return job, definition
