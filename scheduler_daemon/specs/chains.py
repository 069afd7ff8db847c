"""Chained jobs (`then:`): every name known, and no job that ends up starting itself."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence


def chain_problems(
    graph: Mapping[str, Sequence[str]], jobs: Iterable[str], known: Container[str] = ()
) -> list[tuple[str, str]]:
    """(job, why) for each name in the `then:` of ``jobs`` that is neither in ``graph`` (every
    job's `then:`) nor ``known``, and each cycle through ``jobs`` once, at its first job."""
    jobs = [name for name in jobs if graph.get(name)]  # with no `then:`, none of either
    problems = [
        (name, f"unknown job {child!r}")
        for name in jobs
        for child in graph.get(name, ())
        if child not in graph and child not in known
    ]
    reported: set[str] = set()
    for name in jobs:
        cycle = None if name in reported else find_cycle(graph, name)
        if cycle:
            reported.update(cycle)
            problems.append((name, f"a cycle of chained jobs: {' → '.join([*cycle, name])}"))
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
