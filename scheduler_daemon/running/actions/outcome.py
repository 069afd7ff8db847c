"""What one attempt of an action ended with, and what it returned as data (results.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler_daemon.running.records import Items, Status


@dataclass(slots=True)
class Kept:
    """What the recorder gets of one attempt's result (see ExecutionRecord)."""

    text: str | None = None  # the JSON text kept (None: not kept)
    size: int | None = None  # its size in bytes, kept or not
    value: Any = None  # parsed: for chained jobs
    items: Items | None = None
    problem: str | None = None  # why the result or its items were not kept
    items_failed: bool = False  # `items.required` and no items: the attempt fails


@dataclass(slots=True)
class Outcome:
    status: Status  # SUCCEEDED or FAILED; the runner decides timed_out / cancelled
    retryable: bool
    http_status: int | None = None
    exit_code: int | None = None
    error: str | None = None
    output: str | None = None
    retry_after: float | None = None  # seconds, from an HTTP Retry-After header
    kept: Kept | None = None  # the result, as data (results.py)
