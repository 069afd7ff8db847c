"""One exception hierarchy; the CLI prints the cause chain, tracebacks only with --debug."""

from __future__ import annotations


class SchedulerDaemonError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(SchedulerDaemonError):
    """A configuration file is invalid; ``problems`` lists every error found in one pass."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class AdminUnavailable(SchedulerDaemonError):
    """The admin API cannot listen where the config says (address in use, no permission)."""


class DatabaseUnavailable(SchedulerDaemonError):
    """PostgreSQL cannot be reached (or the embedded one cannot start)."""
