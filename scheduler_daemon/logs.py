"""structlog setup: JSON lines when stdout is not a terminal, readable console output when it is."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog


class _Stdout:
    """Whatever sys.stdout is at write time (tests and embedders swap it).

    A daemon must outlive its log reader: when stdout is a pipe nobody reads any more, lines are
    dropped (stdout is pointed at /dev/null) instead of raising inside signal handlers and tasks.
    """

    def write(self, text: str) -> int:
        try:
            return sys.stdout.write(text)
        except OSError:  # BrokenPipeError, EIO on a closed terminal, ENOSPC on a full disk
            _silence_stdout()
            return len(text)

    def flush(self) -> None:
        try:
            sys.stdout.flush()
        except OSError:
            _silence_stdout()


def _silence_stdout() -> None:
    # Also spares the interpreter's final flush, which would exit with status 120.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def configure_logging(
    *, level: str = "info", json: bool | None = None, cache: bool = False
) -> None:
    """``cache``: loggers keep this configuration for good once used (the daemon's hot path);
    left off elsewhere, so a later reconfiguration (tests' ``capture_logs``) still applies."""
    if json is None:
        json = not sys.stdout.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            *([structlog.processors.format_exc_info] if json else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(_Stdout()),  # type: ignore[arg-type]
        cache_logger_on_first_use=cache,
    )
