"""Python jobs: "package.module:function", awaited if a coroutine function, else in a thread."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.actions.results import ResultReader, succeeded
from scheduler_daemon.running.records import Status
from scheduler_daemon.specs import PythonSpec
from scheduler_daemon.specs.pytargets import (
    TargetError,
    bad_arguments,
    resolve,
    signature_of,
    takes,
)

# Plain-function jobs run in threads of their own: in the loop's default executor, a few hung
# jobs would hold up the daemon's own blocking work (journal spills, reload parsing, the embedded
# server's start and stop). Past this many at once, further calls wait for a free thread.
JOB_THREADS = 32

P = ParamSpec("P")
T = TypeVar("T")


class JobThreads(ThreadPoolExecutor):
    """The jobs' threads, counting the calls that have not returned: the interpreter joins an
    executor's threads at exit, so a stopping daemon must know whether one is hung (see
    ``unfinished_job_calls``)."""

    def __init__(self, size: int) -> None:
        super().__init__(max_workers=size, thread_name_prefix="job")
        self._count_lock = threading.Lock()
        self.unfinished = 0  # submitted, neither returned nor cancelled
        _ALL.add(self)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future = super().submit(fn, *args, **kwargs)
        with self._count_lock:
            self.unfinished += 1
        future.add_done_callback(self._finished)  # at once if it is done already
        return future

    def _finished(self, future: Future[Any]) -> None:
        with self._count_lock:
            self.unfinished -= 1


_ALL: weakref.WeakSet[JobThreads] = weakref.WeakSet()


def job_threads(size: int = JOB_THREADS) -> JobThreads:
    return JobThreads(size)


def unfinished_job_calls() -> int:
    """Plain-function jobs called in this process that have not returned (hung, or finishing
    after their attempt timed out or was cancelled)."""
    return sum(threads.unfinished for threads in list(_ALL))


class PythonAction:
    __slots__ = ("_capture", "_configured", "_func", "_results", "_signature", "_spec", "_threads")

    def __init__(
        self,
        spec: PythonSpec,
        *,
        capture_bytes: int,
        threads: Executor,
        results: ResultReader | None = None,
    ) -> None:
        self._spec = spec
        self._results = results
        self._capture = capture_bytes
        self._threads = threads
        self._func: Callable[..., Any] | None = None
        self._signature: inspect.Signature | None = None
        self._configured: str | None = None  # why the configured args alone do not fit, if so

    async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome:
        try:
            func = self._resolve()
        except TargetError as exc:  # a bad target fails the attempt, not the daemon
            return Outcome(
                Status.FAILED, retryable=False, error=f"cannot load {self._spec.target}: {exc}"
            )
        if overrides and "result" in overrides and not takes(self._signature, "result"):
            # A chained job's parent result: for a function that asks for it.
            overrides = {k: val for k, val in overrides.items() if k != "result"}
        kwargs = {**self._spec.args, **overrides} if overrides else self._spec.args
        # Checked before the call: a TypeError from the call itself is the job's own (retryable),
        # arguments the function does not take will not fit any better on a retry.
        bad = bad_arguments(self._signature, kwargs) if overrides else self._configured
        if bad is not None:
            error = f"bad arguments for {self._spec.target}: {bad}"
            return Outcome(Status.FAILED, retryable=False, error=error)
        try:
            if inspect.iscoroutinefunction(func):
                result = await func(**kwargs)
            else:
                # A plain function must not block the loop. A thread cannot be cancelled: on
                # timeout the attempt is recorded and the function finishes in the background.
                call = functools.partial(contextvars.copy_context().run, func, **kwargs)
                result = await asyncio.get_running_loop().run_in_executor(self._threads, call)
                if inspect.isawaitable(result):  # a plain wrapper around a coroutine function
                    result = await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the job's own failure
            return Outcome(Status.FAILED, retryable=True, error=f"{type(exc).__name__}: {exc}")
        if self._results is not None:
            kept = await self._results.from_value(result)
            if kept is not None:
                return succeeded(kept, output=self._render(result, kept.text))
        return Outcome(Status.SUCCEEDED, retryable=False, output=self._render(result))

    def _resolve(self) -> Callable[..., Any]:
        # Imported once per action (a reload that changes the job builds a new one); the config's
        # load has normally imported the module already, so this is a lookup in sys.modules.
        if self._func is None:
            func = resolve(self._spec.target)
            self._signature = signature_of(func)
            self._configured = bad_arguments(self._signature, self._spec.args)
            self._func = func
        return self._func

    def _render(self, result: Any, json_text: str | None = None) -> str | None:
        if result is None:
            return None
        if isinstance(result, str):
            text = result
        elif json_text is not None:
            text = json_text
        else:
            try:
                text = json.dumps(result, default=str)
            except (TypeError, ValueError):
                text = repr(result)
        return text[: self._capture]
