"""The admin API's OpenAPI 3.1 document, generated from its route table and pydantic models.

A route declares its query model, request body and replies (operation/admin.py: ROUTES); the
schemas of components come from the models (operation/api_models.py), so the document cannot
drift from what the handlers answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from scheduler_daemon.operation.api_models import Error, Query

REF = "#/components/schemas/{model}"
# Each error status, what it means on any endpoint that lists it.
ERRORS = {
    400: "Bad input: an unknown or bad query parameter, a bad body or cursor",
    401: "Missing or wrong token (Authorization: Bearer or X-API-Key)",
    403: "Changes are refused: no admin.token is configured",
    404: "No such job, run or execution",
    409: "Conflict: the fire did not start, the run already started, or the job is the config "
    "file's (defined_in_config) or exists already (a job or an ad-hoc run's job)",
    412: "If-Match names another version of the job (version_mismatch): read it again",
    413: "The body is larger than 64 KiB",
    422: "The job in the body (or a run's options) is invalid: every problem is listed in "
    "`problems`",
    429: "Too many one-off runs pending (of the job, or in all): wait until some start",
    503: "The database is unavailable",
}
# The token, in either header (operation/admin.py checks both the same way).
API_KEY_HEADER = "X-API-Key"
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
}
_PATH_PARAMETERS = {"name": "job name", "id": "run id"}
_TEXT = {"type": "string"}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": r'^(W/)?"?[0-9]+"?$'},
    "description": 'the job\'s version as its ETag gave it ("3"): refused (412) if it changed',
}


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A successful answer: a model's JSON, or a plain schema (text, this document itself)."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    schema: Mapping[str, Any] | None = None
    media_type: str = "application/json"


@dataclass(frozen=True, kw_only=True)
class Route:
    method: str
    path: str
    handler: Callable[..., Any]  # (api, request, query) -> response
    summary: str
    replies: tuple[Reply, ...]
    query: type[Query] = Query
    body: type[BaseModel] | None = None
    body_required: bool = False
    errors: tuple[int, ...] = ()  # besides 400 (every route checks its query) and 401
    open: bool = False  # answered without the token
    if_match: bool = False  # takes If-Match: a job's version
    # A path parameter's own description and schema, where not _PATH_PARAMETERS' (a string).
    path_parameters: Mapping[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


def document(routes: tuple[Route, ...], info: Mapping[str, Any]) -> dict[str, Any]:
    keys: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Error, "serialization")]
    for route in routes:
        keys += [(r.model, "serialization") for r in route.replies if r.model is not None]
        keys.append((route.query, "validation"))
        if route.body is not None:
            keys.append((route.body, "validation"))
    refs, top = models_json_schema(list(dict.fromkeys(keys)), ref_template=REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        query = schemas[route.query.__name__]
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs, query)
    for route in routes:  # their properties are parameters now, not components
        schemas.pop(route.query.__name__, None)
    return {
        "openapi": "3.1.0",
        "info": dict(info),
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "schemas": schemas,
        },
        "security": [{name: []} for name in SECURITY_SCHEMES],  # any one of them
        "paths": paths,
    }


def _operation(
    route: Route,
    refs: Mapping[tuple[Any, JsonSchemaMode], Any],
    query: Mapping[str, Any],
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": route.summary, **route.extra}
    if route.open:
        operation["security"] = []
    parameters = [
        _path_parameter(name, *route.path_parameters.get(name, (_PATH_PARAMETERS[name], _TEXT)))
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    parameters += [_query_parameter(n, s) for n, s in query.get("properties", {}).items()]
    if route.if_match:
        parameters.append(_IF_MATCH)
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
        }
    responses: dict[str, Any] = {}
    for reply in route.replies:
        schema = refs[(reply.model, "serialization")] if reply.model else reply.schema
        responses[str(reply.status)] = _content(reply.description, schema, reply.media_type)
    errors = {400, *route.errors} | (set() if route.open else {401})
    error_schema = refs[(Error, "serialization")]
    for status in sorted(errors):
        responses[str(status)] = _content(ERRORS[status], error_schema, "application/json")
    operation["responses"] = responses
    return operation


def _content(description: str, schema: Any, media_type: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": schema}}}


def _path_parameter(name: str, description: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": dict(schema),
        "description": description,
    }


def _query_parameter(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """A query model's property as a parameter: optional, so its null branch and default go."""
    schema = dict(schema)
    description = schema.pop("description", "")
    schema.pop("title", None)
    schema.pop("default", None)
    branches = [s for s in schema.pop("anyOf", []) if s.get("type") != "null"]
    if branches:
        schema.update(branches[0] if len(branches) == 1 else {"anyOf": branches})
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }
