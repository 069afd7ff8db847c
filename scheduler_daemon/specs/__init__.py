"""The config and job specs, their values, and loading them from YAML.

The public names, importable from here: the specs (``Config``, ``JobSpec``, its ``HttpSpec`` /
``CommandSpec`` / ``PythonSpec`` action, ``RetrySpec``, ``AdminSpec``), ``load_config``, and the
value parsing others reuse (``parse_duration``, ``Invalid``).
"""

from scheduler_daemon.specs.loader import load_config
from scheduler_daemon.specs.models import (
    ActionSpec,
    CatchUp,
    CommandSpec,
    Config,
    HttpSpec,
    JobSpec,
    Overlap,
    Priority,
    PythonSpec,
    RetrySpec,
)
from scheduler_daemon.specs.settings import AdminSpec, ClusterSpec, DatabaseSpec
from scheduler_daemon.specs.values import Invalid, parse_duration

__all__ = [
    "ActionSpec",
    "AdminSpec",
    "CatchUp",
    "ClusterSpec",
    "CommandSpec",
    "Config",
    "DatabaseSpec",
    "HttpSpec",
    "Invalid",
    "JobSpec",
    "Overlap",
    "Priority",
    "PythonSpec",
    "RetrySpec",
    "load_config",
    "parse_duration",
]
