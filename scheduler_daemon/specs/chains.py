"""Chained jobs (`then:`): every name known, and no job that ends up starting itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from scheduler_daemon.specs.spec import Problem


class Chained(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def then(self) -> tuple[str, ...]: ...


def chain_problems(jobs: Iterable[Chained], known: Iterable[str] = ()) -> list[Problem]:
    """An unknown name in a `then:` list (``known``: names besides ``jobs``'), and each cycle
    once, at the job of the cycle that comes first in ``jobs``."""
    jobs = list(jobs)
    graph = {job.name: job.then for job in jobs}
    names = {*graph, *known}
    problems: list[Problem] = [
        (("jobs", job.name, "then"), f"unknown job {child!r}")
        for job in jobs
        for child in job.then
        if child not in names
    ]
    reported: set[str] = set()
    for job in jobs:
        cycle = find_cycle(graph, job.name)
        if cycle and job.name not in reported:
            reported.update(cycle)
            path = " → ".join([*cycle, cycle[0]])
            problems.append((("jobs", job.name, "then"), f"a cycle of chained jobs: {path}"))
    return problems


def find_cycle(graph: Mapping[str, Sequence[str]], start: str) -> list[str] | None:
    """The jobs of a cycle through ``start`` in chain order, or None (depth first, iterative:
    a chain may be longer than Python's recursion limit)."""
    path = [start]
    children = [iter(graph.get(start, ()))]
    seen = {start}
    while children:
        child = next(children[-1], None)
        if child is None:
            children.pop()
            path.pop()
        elif child == start:
            return path
        elif child not in seen:
            seen.add(child)
            path.append(child)
            children.append(iter(graph.get(child, ())))
    return None
