"""One exception hierarchy; the CLI prints the cause chain, tracebacks only with --debug."""

from __future__ import annotations

import os
import pwd


class SchedulerDaemonError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(SchedulerDaemonError):
    """A configuration file is invalid; ``problems`` lists every error found in one pass."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ConfigUnreadable(ConfigError):
    """The config file is missing or cannot be read: one problem, said in one line."""

    def __init__(self, problem: str, *, missing: bool = False) -> None:
        super().__init__([problem])
        self.missing = missing


class StateDirUnusable(SchedulerDaemonError):
    """``state_dir`` cannot be created, or written, by the daemon's user."""


class AdminUnavailable(SchedulerDaemonError):
    """The admin API cannot listen where the config says (address in use, no permission)."""


class DatabaseUnavailable(SchedulerDaemonError):
    """PostgreSQL cannot be reached (or the embedded one cannot start)."""


def as_whom() -> str:
    """Who the process is, for a message about a file it cannot read or write: the service's
    dynamic user, or an operator who forgot sudo."""
    try:
        return f" (as user {pwd.getpwuid(os.geteuid()).pw_name})"
    except KeyError:
        return f" (as uid {os.geteuid()})"
