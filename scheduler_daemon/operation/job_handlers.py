"""The admin API's job writes: POST /jobs, PUT / PATCH / DELETE /jobs/{name}.

A body is a job in JSON, the fields of a config file's job (plus `name` when creating), checked by
the same models; every problem comes back at once (422 ``invalid_job``). Only the API's own jobs
change here (the config file's: 409 ``defined_in_config``). ``If-Match: "<version>"`` makes a
write conditional (412 ``version_mismatch``); every answer about an API job carries its version
as ``ETag``. The change is scheduled before the answer (api_jobs.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from scheduler_daemon.operation import api_models as m
from scheduler_daemon.operation.api_handlers import Api, body_of, reply
from scheduler_daemon.operation.api_models import ApiError, InvalidJob
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.specs.api_job import JobProblems
from scheduler_daemon.storage import job_store
from scheduler_daemon.storage.job_store import JobWriteRefused, StoredJob

# How a refusal of the store reads over HTTP.
_STATUS = {
    job_store.DefinedInConfig: 409,
    job_store.AlreadyExists: 409,
    job_store.UnknownJob: 404,
    job_store.VersionMismatch: 412,
}
_PATCH_ATTEMPTS = 3  # a PATCH without If-Match re-reads when another write came in between


async def create_job(api: Api, request: web.Request, query: m.Query) -> web.Response:
    body = await _job_body(request)
    name = body.pop("name", None)
    if not isinstance(name, str):
        raise _invalid([(("name",), 'expected the job\'s "name" beside its fields')])
    return await _write(api, name, body, if_version=None, create_only=True)


async def replace_job(api: Api, request: web.Request, query: m.Query) -> web.Response:
    name = request.match_info["name"]
    body = await _job_body(request)
    if body.pop("name", name) != name:
        raise _invalid([(("name",), _RENAME)])
    return await _write(api, name, body, if_version=_if_match(request))


async def patch_job(api: Api, request: web.Request, query: m.Query) -> web.Response:
    """A JSON merge patch (RFC 7396) over the job as written: null removes a field."""
    name = request.match_info["name"]
    patch = await _job_body(request)
    if "name" in patch and patch["name"] != name:
        raise _invalid([(("name",), _RENAME)])
    wanted = _if_match(request)
    for attempt in range(_PATCH_ATTEMPTS):
        stored = _stored_or_refused(api, name)
        if wanted is not None and stored.version != wanted:
            raise _refused(job_store.VersionMismatch(name, wanted, stored.version))
        fields = merge_patch(stored.definition, {k: v for k, v in patch.items() if k != "name"})
        try:
            version = wanted if wanted is not None else stored.version
            return await _write(api, name, fields, if_version=version)
        except ApiError as exc:
            if exc.code != "version_mismatch" or wanted is not None:
                raise
            if attempt + 1 == _PATCH_ATTEMPTS:
                raise
            await api.t.api_jobs.reread(
                api.pool(), [name]
            )  # changed meanwhile: patch the newer one
    raise AssertionError("unreachable")


async def delete_job(api: Api, request: web.Request, query: m.Query) -> web.Response:
    name = request.match_info["name"]
    try:
        job = await api.t.api_jobs.delete(api.pool(), name, if_version=_if_match(request))
    except JobWriteRefused as exc:
        raise _refused(exc) from None
    return reply(m.Deleted(name=job.name, deleted=True, version=job.version + 1))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: ``patch`` over ``target``; a null member removes that member."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


# -- helpers ---------------------------------------------------------------------------------------

_RENAME = "a job cannot be renamed: create it under the new name (POST /jobs), then delete this one"


async def _write(
    api: Api,
    name: str,
    fields: Mapping[str, Any],
    *,
    if_version: int | None,
    create_only: bool = False,
) -> web.Response:
    pool = api.pool()
    try:
        stored, spec, created = await api.t.api_jobs.write(
            pool, name, fields, if_version=if_version, create_only=create_only
        )
    except JobProblems as exc:
        raise InvalidJob(exc) from None
    except JobWriteRefused as exc:
        raise _refused(exc) from None
    response = reply(stored_job(api, stored, spec), status=201 if created else 200)
    response.headers["ETag"] = etag(stored.version)
    if created:
        response.headers["Location"] = f"/jobs/{name}"
    return response


def stored_job(api: Api, job: StoredJob, spec: JobSpec) -> m.StoredJob:
    return m.StoredJob(
        name=job.name,
        source="api",
        version=job.version,
        created_at=job.created_at,
        updated_at=job.updated_at,
        definition=dict(job.definition),
        spec=spec.redacted(),
        next_fires=api.t.scheduler.upcoming(job.name, 5),
    )


def etag(version: int) -> str:
    return f'"{version}"'


def _stored_or_refused(api: Api, name: str) -> StoredJob:
    stored = api.t.api_jobs.stored.get(name)
    if stored is not None:
        return stored
    if api.t.job(name) is not None:
        raise _refused(job_store.DefinedInConfig(name))
    raise _refused(job_store.UnknownJob(name))


def _if_match(request: web.Request) -> int | None:
    """The version an If-Match header names ("3", W/"3" or 3), or None without one."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    text = header.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise ApiError(
            400, "bad_if_match", f'If-Match: expected a job\'s version like "3", got {header!r}'
        )
    return int(text)


async def _job_body(request: web.Request) -> dict[str, Any]:
    body = await body_of(request)
    if body is None:
        raise ApiError(400, "bad_request", "expected a JSON object: the job's fields")
    return body


def _invalid(problems: list[tuple[tuple[str | int, ...], str]]) -> ApiError:
    return InvalidJob(JobProblems(problems))


def _refused(exc: JobWriteRefused) -> ApiError:
    return ApiError(_STATUS.get(type(exc), 409), exc.code, str(exc))
