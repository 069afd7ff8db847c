"""YAML → validated, frozen Config. (Models are the contract; the loader is being written.)"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Overlap = Literal["skip", "allow", "replace"]
Priority = Literal["high", "normal", "low"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(_Frozen):
    attempts: int = Field(default=1, ge=1)  # total attempts, 1 = no retry
    delay: float = Field(default=1.0, ge=0)  # seconds before the 2nd attempt
    backoff: float = Field(default=2.0, ge=1)  # delay multiplier per further attempt
    max_delay: float = Field(default=300.0, ge=0)  # cap on one delay, seconds
    jitter: float = Field(default=0.0, ge=0, le=1)  # ± fraction of the delay, random


class HttpAction(_Frozen):
    kind: Literal["http"] = "http"
    method: str = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    json_body: Any = None  # YAML key `json`
    body: str | None = None
    expect: tuple[int, ...] = ()  # empty: any 2xx


class CommandAction(_Frozen):
    kind: Literal["command"] = "command"
    argv: tuple[str, ...] | None = None  # YAML `command: [...]`
    shell: str | None = None  # YAML `shell: "..."`, run by /bin/sh -c
    env: dict[str, str] = Field(default_factory=dict)  # added to the daemon's environment
    cwd: str | None = None
    kill_grace: float = 5.0  # SIGTERM → SIGKILL delay on timeout/cancel, seconds


class PythonAction(_Frozen):
    kind: Literal["python"] = "python"
    target: str  # "package.module:function"
    args: dict[str, Any] = Field(default_factory=dict)  # passed as keyword arguments


Action = HttpAction | CommandAction | PythonAction


class JobSpec(_Frozen):
    name: str
    # Exactly one of cron / every / at is set.
    cron: str | None = None
    every: float | None = None  # seconds
    offset: float = 0.0  # seconds, shifts an `every` schedule off the epoch grid
    at: datetime | None = None  # aware
    timezone: str = "UTC"  # resolved: the job's own or the config's default
    enabled: bool = True
    timeout: float | None = None  # seconds per attempt; None = no timeout
    retry: RetryPolicy = RetryPolicy()
    overlap: Overlap = "skip"
    max_instances: int = Field(default=1, ge=1)  # with overlap: allow
    priority: Priority = "normal"
    capture_bytes: int = Field(default=65536, ge=0)  # body / output tail kept in `output`
    action: Action = Field(discriminator="kind")


class Config(_Frozen):
    path: Path  # the file it came from (absolute)
    database_url: str | None = None  # None: embedded PostgreSQL under state_dir
    state_dir: Path  # absolute
    timezone: str = "UTC"
    max_concurrency: int = Field(default=64, ge=1)
    shutdown_grace: float = Field(default=30.0, ge=0)
    node: str = ""  # written to executions.node; default: the host name
    jobs: tuple[JobSpec, ...] = ()
