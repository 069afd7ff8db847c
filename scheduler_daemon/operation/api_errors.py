"""The admin API's refusals: an HTTP status, a stable code, words for humans (README: Admin API)."""

from __future__ import annotations

from scheduler_daemon.specs.api_job import JobProblems


class ApiError(Exception):
    """A refusal with an HTTP status and a stable code; the API answers it as an Error body.
    ``problems``: each thing wrong with a body, at its place in it (a 422)."""

    def __init__(
        self, status: int, code: str, message: str, problems: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.problems = problems


class InvalidJob(ApiError):
    """422: a job body (or a run's options) with problems, every one listed at its path."""

    def __init__(self, exc: JobProblems, code: str = "invalid_job", what: str = "job") -> None:
        count = len(exc.problems)
        message = f"the {what} has {count} problem{'s' * (count != 1)}: {exc}"
        super().__init__(422, code, message, exc.as_list())
