"""A `jobs apply` file: `jobs:` as in the config file, each job checked as an API job.

Every problem of every job is reported at once as ``FILE:LINE: jobs.NAME.path: message`` (the
config loader's form), so nothing is written until the whole file is right. A ``${VAR}`` is not
expanded: the job is stored as written, and a secret is given as ``{env: NAME}`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from scheduler_daemon.errors import ConfigError
from scheduler_daemon.specs import yamlsource
from scheduler_daemon.specs.api_job import ApiJobRules, JobProblems, build_api_job
from scheduler_daemon.specs.models import JobSpec
from scheduler_daemon.specs.spec import Loc
from scheduler_daemon.specs.values import got

_TEMPLATE = (
    "${...} is not expanded in a job stored in the database (it is stored as written): give a "
    "secret as {env: NAME}, a variable of the daemon's environment listed in admin.allow_env"
)


@dataclass(frozen=True, slots=True)
class FileJob:
    name: str
    job: JobSpec
    definition: dict[str, Any]  # what is stored: the fields as written, the zone made explicit


def read_jobs_file(text: str, display: str, rules: ApiJobRules) -> list[FileJob]:
    """The file's jobs in its order; ConfigError listing every problem of the file."""
    try:
        source = yamlsource.parse(text, environ={})
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{display}:{line}: invalid YAML: {problem}"]) from None
    problems: list[tuple[Loc, str]] = [
        (path, message) for path, _, message in source.problems if path not in source.templates
    ]
    problems += [(path, _TEMPLATE) for path in source.templates]
    found: list[tuple[Loc, str]] = []
    jobs = _jobs(source.data, rules, found)
    # A ${VAR} value has its own problem: not also "looks like a secret" (it is only a name).
    problems += [(loc, m) for loc, m in found if loc not in source.templates]
    if problems:
        raise ConfigError([_where(display, source, loc, m) for loc, m in _sorted(source, problems)])
    return jobs


def _jobs(data: Any, rules: ApiJobRules, problems: list[tuple[Loc, str]]) -> list[FileJob]:
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
        found = data.get("jobs") if isinstance(data, dict) else data
        problems.append(
            ((), f"expected a mapping with `jobs:`, name → job fields, got {got(found)}")
        )
        return []
    for key in data:
        if key != "jobs":
            why = "write each field on each job" if key == "defaults" else "only `jobs:` is read"
            problems.append(((key,), f"`{key}:` is not taken by `jobs apply`: {why}"))
    jobs: list[FileJob] = []
    for name, fields in data["jobs"].items():
        at: Loc = ("jobs", name)
        if not isinstance(fields, dict):
            problems.append((at, f"expected a mapping of job fields, got {got(fields)}"))
            continue
        if "name" in fields:
            problems.append(((*at, "name"), "unknown key 'name' (a job is named by its key)"))
            continue
        try:
            job, definition = build_api_job(str(name), fields, rules, environ=None)
        except JobProblems as exc:
            problems += [((*at, *loc), message) for loc, message in exc.problems]
            continue
        jobs.append(FileJob(str(name), job, definition))
    return jobs


def _sorted(source: yamlsource.Source, problems: list[tuple[Loc, str]]) -> list[tuple[Loc, str]]:
    return sorted(problems, key=lambda problem: source.line(problem[0]))


def _where(display: str, source: yamlsource.Source, loc: Loc, message: str) -> str:
    dotted = ".".join(str(part) for part in loc)
    return f"{display}:{source.line(loc)}: {dotted + ': ' if dotted else ''}{message}"
