"""Per-fire cost of a command job, with and without its shepherd, run by hand:

    python -m bench.command [--fires 200] [--rounds 5] [--argv true]     # prints one JSON object

One CommandAction (`true` by default) is run `--fires` times in a row on uvloop (the daemon's
loop), alternately under the shepherd that kills escaped descendants (running/actions/shepherd.py)
and spawned directly, `--rounds` times each. Per mode: the median over rounds of the median wall
time of one fire, and of the CPU time one fire costs the daemon and its children (the shepherd
and the command) per fire.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from typing import Any

import uvloop

from scheduler_daemon.running.actions.command import CommandAction, shepherd_available
from scheduler_daemon.specs import CommandSpec

MODES = {"shepherd": True, "direct": False}


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


async def one_round(argv: tuple[str, ...], shepherd: bool, fires: int) -> dict[str, float]:
    action = CommandAction(CommandSpec(argv=argv), capture_bytes=65536, shepherd=shepherd)
    walls: list[float] = []
    own, children = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    for _ in range(fires):
        began = time.perf_counter()
        outcome = await action.run()
        walls.append(time.perf_counter() - began)
        assert outcome.exit_code == 0, outcome
    return {
        "wall_ms": statistics.median(walls) * 1000,
        "daemon_cpu_ms": (_cpu(resource.RUSAGE_SELF) - own) / fires * 1000,
        "children_cpu_ms": (_cpu(resource.RUSAGE_CHILDREN) - children) / fires * 1000,
    }


async def compare(argv: tuple[str, ...], fires: int, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode, shepherd in MODES.items():  # alternating: drift in machine load hits both
            runs[mode].append(await one_round(argv, shepherd, fires))
    result: dict[str, Any] = {"argv": list(argv), "fires": fires, "rounds": rounds}
    for mode, rows in runs.items():
        result[mode] = {
            key: round(statistics.median(row[key] for row in rows), 2) for key in rows[0]
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--argv", nargs="+", default=["true"])
    args = parser.parse_args()
    if not shepherd_available():
        raise SystemExit("no shepherd on this machine: nothing to compare")
    result = uvloop.run(compare(tuple(args.argv), args.fires, args.rounds))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
