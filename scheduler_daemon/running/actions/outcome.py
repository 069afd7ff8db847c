"""What one attempt of an action ended with."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_daemon.running.records import Status


@dataclass(slots=True)
class Outcome:
    status: Status  # SUCCEEDED or FAILED; the runner decides timed_out / cancelled
    retryable: bool
    http_status: int | None = None
    exit_code: int | None = None
    error: str | None = None
    output: str | None = None
    retry_after: float | None = None  # seconds, from an HTTP Retry-After header
