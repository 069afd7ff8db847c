"""Python jobs: "package.module:function", awaited if a coroutine function, else in a thread."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.records import Status
from scheduler_daemon.specs import PythonSpec

# Plain-function jobs run in threads of their own: in the loop's default executor, a few hung
# jobs would hold up the daemon's own blocking work (journal spills, reload parsing, the embedded
# server's start and stop). Past this many at once, further calls wait for a free thread.
JOB_THREADS = 32


def job_threads(size: int = JOB_THREADS) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=size, thread_name_prefix="job")


class PythonAction:
    __slots__ = ("_capture", "_func", "_spec", "_threads")

    def __init__(self, spec: PythonSpec, *, capture_bytes: int, threads: Executor) -> None:
        self._spec = spec
        self._capture = capture_bytes
        self._threads = threads
        self._func: Callable[..., Any] | None = None

    async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome:
        try:
            func = self._resolve()
        except Exception as exc:  # noqa: BLE001 - a bad target fails the attempt, not the daemon
            return Outcome(
                Status.FAILED,
                retryable=False,
                error=f"cannot load {self._spec.target}: {type(exc).__name__}: {exc}",
            )
        kwargs = {**self._spec.args, **(overrides or {})}
        try:
            if inspect.iscoroutinefunction(func):
                result = await func(**kwargs)
            else:
                # A plain function must not block the loop. A thread cannot be cancelled: on
                # timeout the attempt is recorded and the function finishes in the background.
                call = functools.partial(contextvars.copy_context().run, func, **kwargs)
                result = await asyncio.get_running_loop().run_in_executor(self._threads, call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the job's own failure
            return Outcome(Status.FAILED, retryable=True, error=f"{type(exc).__name__}: {exc}")
        return Outcome(Status.SUCCEEDED, retryable=False, output=self._render(result))

    def _resolve(self) -> Callable[..., Any]:
        if self._func is None:
            module_name, _, attr = self._spec.target.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            if not callable(obj):
                raise TypeError(f"{self._spec.target} is not callable")
            self._func = obj
        return self._func

    def _render(self, result: Any) -> str | None:
        if result is None:
            return None
        if isinstance(result, str):
            text = result
        else:
            try:
                text = json.dumps(result, default=str)
            except (TypeError, ValueError):
                text = repr(result)
        return text[: self._capture]
