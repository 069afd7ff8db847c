"""Per-run arguments of a manual or one-off run, from the API's JSON to what the runner passes.

`args` (python jobs: keyword arguments, merged over the configured ones), `params` and `json`
(HTTP jobs); command jobs take none. Shared by the admin API and the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler_daemon.specs import CommandSpec, HttpSpec, JobSpec


class BadOverrides(ValueError):
    """The arguments do not fit the job."""


def runner_overrides(job: JobSpec, body: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Per-run arguments: `args` for python jobs, `params` / `json` for HTTP jobs."""
    if not body:
        return None
    if isinstance(job.action, HttpSpec):
        allowed: tuple[str, ...] = ("params", "json")
    elif isinstance(job.action, CommandSpec):
        allowed = ()
    else:
        allowed = ("args",)
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        accepts = f"accepts only {list(allowed)}" if allowed else "takes no overrides"
        raise BadOverrides(f"a {job.kind} job {accepts}; got {unknown}")
    out: dict[str, Any] = {}
    if "args" in body:
        if not isinstance(body["args"], dict):
            raise BadOverrides("`args` must be a JSON object of keyword arguments")
        out.update(body["args"])  # a python job's overrides are its keyword arguments
    if "params" in body:
        params = body["params"]
        if not isinstance(params, dict) or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in params.values()
        ):
            raise BadOverrides("`params` must map names to strings or numbers")
        out["params"] = {str(k): str(v) for k, v in params.items()}
    if "json" in body:
        out["json"] = body["json"]
    return out


def stored_overrides(job: JobSpec, stored: object) -> dict[str, Any] | None:
    """Overrides read back from a `runs` row, in the runner's form: whoever could write to the
    database wrote them, so they pass the same checks as the API's before anything runs."""
    if stored is None:
        return None
    if not isinstance(stored, Mapping):
        raise BadOverrides("overrides must be a JSON object")
    body = {"args": dict(stored)} if job.kind == "python" else stored
    return runner_overrides(job, body)
