"""How long `load_config` takes on a big config, run by hand: python -m bench.load [N ...]

Generates N `every: 1h` python jobs with a few fields each (defaults, retry, timeout, priority,
args) and prints the median of 3 loads per size.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from scheduler_daemon.specs import load_config


def write_config(directory: Path, jobs: int) -> Path:
    lines = [
        "defaults:",
        "  timeout: 30s",
        "  retry: {attempts: 3, delay: 2s}",
        "jobs:",
    ]
    for i in range(jobs):
        lines += [
            f"  job_{i}:",
            "    every: 1h",
            f"    offset: {i % 3600}s",
            "    python: os:getpid",
            "    priority: low",
            f"    args: {{n: {i}}}",
        ]
    path = directory / f"jobs_{jobs}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = write_config(Path(tmp), size)
            times = []
            for _ in range(3):
                start = time.perf_counter()
                config = load_config(path, environ={})
                times.append(time.perf_counter() - start)
                assert len(config.jobs) == size
            print(f"{size:>7} jobs: median {statistics.median(times):.2f}s  runs {times}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [20_000, 100_000])
