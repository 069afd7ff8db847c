"""A job written over the admin API or by `jobs apply`: checked like a config file's job, plus
what a job from outside the file must obey.

- Its kind: http always; command, shell and python only when ``admin.allow_job_kinds`` lists them
  (whoever may create a shell job owns the host).
- Its secrets: a header or env value is a reference, ``{"env": "NAME"}``, to a variable of the
  daemon's environment listed in ``admin.allow_env``; a credential written in clear (a secret-
  looking header or variable, a password in the URL) is refused, because the definition is
  stored in the database as written. Responses show the reference, never its value.
- Its time zone: the config's when it gives none, written into the stored definition, so a later
  change of the config's zone does not move the job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from scheduler_daemon.specs.loader import target_problem
from scheduler_daemon.specs.models import ACTION_KEYS, Config, JobSpec
from scheduler_daemon.specs.redaction import dump_places, is_secret_header
from scheduler_daemon.specs.spec import Loc, Problem, problems_of
from scheduler_daemon.specs.values import got

ALWAYS_ALLOWED = "http"
_SECRET_VARIABLE = re.compile(
    r"(^|_)(TOKEN|KEY|SECRET|PASSWORD|PASSWD|PASS|AUTH|COOKIE|CREDENTIALS?|APIKEY)(_|$)", re.I
)
# Where a value may be an {"env": "NAME"} reference, and whether a name there marks a secret.
_REFERENCE_PLACES: tuple[tuple[Loc, Any], ...] = (
    (("http", "headers"), is_secret_header),
    (("env",), lambda name: bool(_SECRET_VARIABLE.search(name))),
)


@dataclass(frozen=True, slots=True)
class ApiJobRules:
    kinds: frozenset[str]  # the kinds allowed besides http
    env: frozenset[str]  # the variables a reference may name
    timezone: str  # a job's zone when it gives none

    @classmethod
    def of(cls, config: Config) -> ApiJobRules:
        admin = config.admin
        return cls(
            kinds=frozenset(admin.allow_job_kinds if admin else ()),
            env=frozenset(admin.allow_env if admin else ()),
            timezone=config.timezone,
        )


class JobProblems(Exception):
    """Everything wrong with a job body, each problem at its place in the body."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{_dotted(loc) or 'job'}: {m}" for loc, m in problems))

    def as_list(self) -> list[dict[str, str]]:
        return [{"path": _dotted(loc), "message": message} for loc, message in self.problems]


def build_api_job(
    name: str,
    fields: Mapping[str, Any],
    rules: ApiJobRules,
    *,
    environ: Mapping[str, str] | None,
    check_target: bool = False,
) -> tuple[JobSpec, dict[str, Any]]:
    """The job, and its definition to store (``fields`` as written, its zone made explicit).

    ``environ``: where references are resolved; None (a process other than the daemon, such as
    the CLI) checks only that they are allowed. ``check_target``: import a python job's target
    (runs its module's code) and check its arguments, as a config reload does."""
    definition = _json_safe({**fields})
    definition.setdefault("timezone", rules.timezone)
    problems = _kind_problems(definition, rules) + _url_problems(definition)
    resolved, references, reference_problems = _resolve(definition, rules.env, environ)
    problems += reference_problems
    try:
        job = JobSpec.model_validate({**resolved, "name": name}, by_name=False)
    except ValidationError as exc:
        raise JobProblems(problems + problems_of(exc)) from None
    if check_target and job.python is not None:
        problem = target_problem(job.python, tuple(job.args), partial=not job.enabled)
        if problem is not None:
            problems.append(((problem[0],), problem[1]))
    if problems:
        raise JobProblems(problems)
    job.with_templates(dump_places(references))
    return job, definition


def _kind_problems(fields: Mapping[str, Any], rules: ApiJobRules) -> list[Problem]:
    kind = next((key for key in ACTION_KEYS if key in fields), None)
    if kind is None or kind == ALWAYS_ALLOWED or kind in rules.kinds:
        return []
    return [
        (
            (kind,),
            f"`{kind}` jobs cannot be created through the API unless admin.allow_job_kinds "
            f"lists {kind} (it runs anything as the daemon's user): write the job in the config "
            "file, or ask the operator to allow the kind",
        )
    ]


def _url_problems(fields: Mapping[str, Any]) -> list[Problem]:
    http = fields.get("http")
    url = http.get("url") if isinstance(http, dict) else None
    if not isinstance(url, str):
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        return []  # the model says what is wrong with it
    if password is None:
        return []
    return [
        (
            ("http", "url"),
            "a password in the URL would be stored in clear: send the credential in a header "
            'given as {"env": "NAME"}',
        )
    ]


def _resolve(
    fields: dict[str, Any], allowed: frozenset[str], environ: Mapping[str, str] | None
) -> tuple[dict[str, Any], dict[Loc, Any], list[Problem]]:
    """``fields`` with each reference replaced by its value; the references by place."""
    resolved = json.loads(json.dumps(fields))  # a deep copy: the definition keeps references
    references: dict[Loc, Any] = {}
    problems: list[Problem] = []
    for place, is_secret in _REFERENCE_PLACES:
        values = _at(resolved, place)
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            loc = (*place, key)
            if isinstance(value, dict):
                problem, values[key] = _dereference(value, allowed, environ)
                if problem:
                    problems.append((loc, problem))
                references[loc] = value
            elif isinstance(value, str) and is_secret(key):
                problems.append(
                    (
                        loc,
                        f'{key!r} looks like a secret: give it as {{"env": "NAME"}}, a '
                        "variable of the daemon's environment listed in admin.allow_env (a "
                        "value written here would be stored in the database in clear)",
                    )
                )
    return resolved, references, problems


def _dereference(
    reference: Mapping[str, Any], allowed: frozenset[str], environ: Mapping[str, str] | None
) -> tuple[str | None, str]:
    """(a problem or None, the value to use)."""
    name = reference.get("env")
    if set(reference) != {"env"} or not isinstance(name, str):
        return f'expected a string or {{"env": "NAME"}}, got {got(dict(reference))}', ""
    if name not in allowed:
        return (
            f"{name!r} is not in admin.allow_env: an API job may use only the variables of the "
            "daemon's environment that the operator lists there",
            "",
        )
    if environ is None:
        return None, ""
    if name not in environ:
        return f"{name!r} is not set in the daemon's environment", ""
    return None, environ[name]


def _at(data: Any, place: Loc) -> Any:
    for key in place:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _json_safe(value: Any) -> Any:
    """What JSON stores: a YAML file's dates become ISO text (the models read them back)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)
