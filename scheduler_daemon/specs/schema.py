"""The JSON Schema of config.yaml, from the spec models, for editors (YAML language server).

pydantic describes the models as Python builds them; three things read differently in a file:
`jobs:` is a mapping of name → job (the name is the key, not a field), `defaults:` takes any job
field but the schedule and the action, and a job has exactly one schedule and one action.
"""

from __future__ import annotations

import copy
from typing import Any

from scheduler_daemon.specs.models import ACTION_KEYS, SCHEDULE_KEYS, Config
from scheduler_daemon.specs.values import JOB_NAME_PATTERN

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    job = schema["$defs"]["JobSpec"]
    del job["properties"]["name"]
    job["required"] = [key for key in job.get("required", []) if key != "name"]
    if not job["required"]:
        del job["required"]
    job["allOf"] = [
        {"oneOf": [{"required": [key]} for key in SCHEDULE_KEYS]},
        {"oneOf": [{"required": [key]} for key in ACTION_KEYS]},
    ]
    job["description"] = (
        "A job: exactly one schedule (cron, every, at) "
        "and one action (http, command, shell, python)"
    )
    properties = schema["properties"]
    properties["jobs"] = {
        "type": "object",
        "propertyNames": {"pattern": JOB_NAME_PATTERN},
        "additionalProperties": {"$ref": "#/$defs/JobSpec"},
        "description": "name → job",
    }
    properties["defaults"] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            key: copy.deepcopy(value)
            for key, value in job["properties"].items()
            if key not in (*SCHEDULE_KEYS, *ACTION_KEYS)
        },
        "description": "any job field but its schedule and action; a job's own value wins",
    }
    return {"$schema": DRAFT, **schema}
