"""The admin API's OpenAPI 3 document (served at /openapi.json; the tests hold the API to it)."""

from __future__ import annotations

from typing import Any

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_NTIME = {"type": ["string", "null"], "format": "date-time"}
_NNUM = {"type": ["number", "null"]}
_NINT = {"type": ["integer", "null"]}
_STATUS = {
    "type": "string",
    "enum": ["running", "succeeded", "failed", "timed_out", "cancelled", "skipped", "missed",
             "abandoned"],
}  # fmt: skip
_TRIGGER = {"type": "string", "enum": ["schedule", "manual", "catchup"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    code: _json(_ref("Error"), text)
    for code, text in {
        "400": "Bad input (parameter, body or cursor)",
        "401": "Missing or wrong bearer token",
        "403": "Changes are refused: no admin.token is configured",
        "404": "No such job or run",
        "409": "Conflict: the fire did not start, or the run already started",
        "503": "The database is unavailable",
    }.items()
}

_NAME = {"name": "name", "in": "path", "required": True, "schema": _STR, "description": "job name"}
_RUN_ID = {"name": "id", "in": "path", "required": True, "schema": _STR, "description": "run id"}
_WINDOW = _query("window", {"type": "string", "example": "24h"}, "statistics window (1s to 366d)")
_HISTORY_FILTERS = [
    _query("status", _STATUS, "only attempts with this status"),
    _query("trigger", _TRIGGER, "only fires of this kind"),
    _query("since", _TIME, "scheduled at or after (ISO 8601 with offset)"),
    _query("until", _TIME, "scheduled before (ISO 8601 with offset)"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size (50)"),
    _query("cursor", _STR, "next_cursor of the previous page"),
]


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _ERRORS[code] for code in codes}


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "scheduler_daemon admin API",
        "version": "1",
        "description": "Health, metrics, jobs, execution history, statistics, manual and "
        "one-off runs, pause and resume. Send `Authorization: Bearer <admin.token>` to every "
        "endpoint but /healthz and /metrics when a token is configured.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": _obj(["error", "message"], error=_STR, message=_STR),
            "Stats": _obj(
                ["job_name", "runs", "succeeded", "failed", "skipped"],
                job_name=_STR,
                runs={"type": "integer"},
                succeeded={"type": "integer"},
                failed={"type": "integer"},
                skipped={"type": "integer"},
                success_rate=_NNUM,
                avg_duration_ms=_NNUM,
                p95_duration_ms=_NNUM,
                avg_drift_ms=_NNUM,
                p95_drift_ms=_NNUM,
                max_drift_ms=_NNUM,
                last_status=_NSTR,
                last_finished_at=_NTIME,
            ),
            "Job": _obj(
                ["name", "kind", "enabled", "paused", "next_fires", "running"],
                name=_STR,
                kind={"type": "string", "enum": ["http", "command", "python"]},
                schedule=_NSTR,
                schedule_in_words=_STR,
                enabled={"type": "boolean"},
                paused={"type": "boolean"},
                paused_at=_NTIME,
                next_fires={"type": "array", "items": _TIME},
                running={"type": "integer"},
                stats={"oneOf": [_ref("Stats"), {"type": "null"}]},
            ),
            "Execution": _obj(
                ["id", "fire_id", "job_name", "scheduled_at", "attempt", "trigger", "status"],
                id={"type": "integer"},
                fire_id=_STR,
                job_name=_STR,
                scheduled_at=_TIME,
                attempt={"type": "integer", "minimum": 1},
                trigger=_TRIGGER,
                status=_STATUS,
                started_at=_NTIME,
                finished_at=_NTIME,
                drift_ms=_NNUM,
                duration_ms=_NNUM,
                http_status=_NINT,
                exit_code=_NINT,
                error=_NSTR,
                output=_NSTR,
                node=_STR,
            ),
            "ExecutionPage": _obj(
                ["executions", "next_cursor"],
                executions={"type": "array", "items": _ref("Execution")},
                next_cursor=_NSTR,
            ),
            "Overrides": {
                "type": "object",
                "description": "Per-run arguments: `args` (python jobs: keyword arguments "
                "merged over the configured ones) or `params` / `json` (HTTP jobs).",
                "properties": {
                    "args": {"type": "object"},
                    "params": {
                        "type": "object",
                        "additionalProperties": {"type": ["string", "number"]},
                    },
                    "json": {},
                },
                "additionalProperties": False,
            },
            "Run": _obj(
                ["id", "job", "run_at", "state"],
                id=_STR,
                job=_STR,
                run_at=_TIME,
                overrides={"type": ["object", "null"]},
                state={"type": "string", "enum": ["pending", "started", "cancelled"]},
                created_at=_NTIME,
                started_at=_NTIME,
                cancelled_at=_NTIME,
                executions=_STR,
            ),
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/healthz": {
            "get": {
                "summary": "Is it up: database connected or buffering, last reload",
                "security": [],
                "parameters": [
                    _query(
                        "ready",
                        {"type": "string", "enum": ["1", "true"]},
                        "503 instead of 200 when degraded (readiness, alerting)",
                    ),
                ],
                "responses": {
                    "200": _json(
                        _obj(
                            ["status", "database", "config"],
                            status={"type": "string", "enum": ["ok", "degraded"]},
                            database=_STR,
                            problems={"type": "array", "items": _STR},
                            config={"type": "object"},
                            pending_rows={"type": "integer"},
                        ),
                        "Up",
                    ),
                    "503": {"description": "Degraded (only with ready=1)"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": _STR}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": _json({"type": "object"}, "OpenAPI 3 document"),
                    **_errors("401"),
                },
            }
        },
        "/jobs": {
            "get": {
                "summary": "Every configured job: state, next fires, statistics",
                "parameters": [_WINDOW],
                "responses": {
                    "200": _json(
                        _obj(["jobs"], since=_TIME, jobs={"type": "array", "items": _ref("Job")}),
                        "Jobs",
                    ),
                    **_errors("400", "401", "503"),
                },
            }
        },
        "/jobs/{name}": {
            "get": {
                "summary": "One job: redacted spec, next fires, last attempts, statistics",
                "parameters": [_NAME, _WINDOW],
                "responses": {
                    "200": _json(
                        {
                            "allOf": [
                                _ref("Job"),
                                _obj(
                                    ["spec"],
                                    spec={"type": "object"},
                                    last_attempts={
                                        "type": ["array", "null"],
                                        "items": _ref("Execution"),
                                    },
                                    running_fires={
                                        "type": "array",
                                        "items": _obj(
                                            ["fire_id", "scheduled_at", "state", "attempt"],
                                            fire_id=_STR,
                                            scheduled_at=_TIME,
                                            state=_STR,
                                            attempt={"type": "integer"},
                                        ),
                                    },
                                ),
                            ]
                        },
                        "The job",
                    ),
                    **_errors("400", "401", "404", "503"),
                },
            }
        },
        "/jobs/{name}/executions": {
            "get": {
                "summary": "A job's attempts, newest first (keyset pagination)",
                "parameters": [_NAME, *_HISTORY_FILTERS],
                "responses": {
                    "200": _json(_ref("ExecutionPage"), "A page"),
                    **_errors("400", "401", "503"),
                },
            }
        },
        "/executions": {
            "get": {
                "summary": "Attempts of every job, newest first (keyset pagination)",
                "parameters": [_query("job", _STR, "only this job"), *_HISTORY_FILTERS],
                "responses": {
                    "200": _json(_ref("ExecutionPage"), "A page"),
                    **_errors("400", "401", "503"),
                },
            }
        },
        "/stats": {
            "get": {
                "summary": "Success rate by job, HTTP response times, runs per minute",
                "parameters": [_WINDOW],
                "responses": {
                    "200": _json(
                        _obj(
                            ["since", "totals", "jobs", "per_minute"],
                            since=_TIME,
                            totals={"type": "object"},
                            jobs={"type": "array", "items": _ref("Stats")},
                            http_response_times={"type": "array"},
                            per_minute={"type": "array"},
                        ),
                        "Statistics",
                    ),
                    **_errors("400", "401", "503"),
                },
            }
        },
        "/jobs/{name}/trigger": {
            "post": {
                "summary": "Run the job now (trigger = manual), optionally with other arguments",
                "parameters": [_NAME],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("Overrides")}},
                },
                "responses": {
                    "202": _json(
                        _obj(
                            ["fire_id", "job", "trigger", "scheduled_at"],
                            fire_id=_STR,
                            job=_STR,
                            trigger=_STR,
                            scheduled_at=_TIME,
                            executions=_STR,
                        ),
                        "Started; its attempts appear in executions",
                    ),
                    **_errors("400", "401", "403", "404", "409"),
                },
            }
        },
        **{
            f"/jobs/{{name}}/{verb}": {
                "post": {
                    "summary": f"{verb.capitalize()} the job (persisted: survives restarts)",
                    "parameters": [_NAME],
                    "responses": {
                        "200": _json(
                            _obj(
                                ["job", "paused"],
                                job=_STR,
                                paused={"type": "boolean"},
                                paused_at=_NTIME,
                            ),
                            "Done",
                        ),
                        **_errors("401", "403", "404", "503"),
                    },
                }
            }
            for verb in ("pause", "resume")
        },
        "/runs": {
            "get": {
                "summary": "One-off runs, newest first",
                "parameters": [
                    _query("pending", {"type": "string", "enum": ["1", "true"]}, "pending only"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "(100)"),
                ],
                "responses": {
                    "200": _json(
                        _obj(["runs"], runs={"type": "array", "items": _ref("Run")}), "Runs"
                    ),
                    **_errors("400", "401", "503"),
                },
            },
            "post": {
                "summary": "Schedule a one-off run of a configured job (persisted)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["job"],
                                "properties": {
                                    "job": _STR,
                                    "at": _TIME,
                                    "args": {"type": "object"},
                                    "params": {"type": "object"},
                                    "json": {},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(_ref("Run"), "Scheduled"),
                    **_errors("400", "401", "403", "404", "503"),
                },
            },
        },
        "/runs/{id}": {
            "get": {
                "summary": "One run",
                "parameters": [_RUN_ID],
                "responses": {
                    "200": _json(_ref("Run"), "The run"),
                    **_errors("401", "404", "503"),
                },
            },
            "delete": {
                "summary": "Cancel a pending run",
                "parameters": [_RUN_ID],
                "responses": {
                    "200": _json(_ref("Run"), "Cancelled (or was already)"),
                    **_errors("401", "403", "404", "409", "503"),
                },
            },
        },
    },
}
