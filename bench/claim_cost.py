"""What a single claim costs the server's core: the floor, the bare design and voucherd in turn.

The three servers run at once on core 0 (`floor.py`, `prototype.py`, voucherd); wrk (`-t1`,
`claims.lua`) claims from each in turn from core 1, `--rounds` times after a first round not
counted, so a fast or slow spell of the machine reaches all three alike. For each run: requests
a second, and the server's CPU a request split by thread — the event loop's (the process's
main thread) and every other thread's together (for voucherd and the bare design, SQLite's) —
into user and system time, read from `/proc/PID/task/*/stat`. The floor-to-bare gap is what a
durable claim costs this front door; the bare-to-voucherd gap is what voucherd's features cost.

`taskset -c 1 python -m bench.claim_cost [--rounds N] [--seconds S] [--connections C]`
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import lists, wrk
from bench.scenarios import run_async
from bench.servers import (
    CLIENT_CORE,
    Fleet,
    Server,
    floor_server,
    prototype_server,
    voucherd_server,
)

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Cost:
    """One run: requests/s and µs of CPU a request, by thread and kind."""

    rps: float
    loop_user: float
    loop_system: float
    other_user: float
    other_system: float

    @property
    def total(self) -> float:
        return self.loop_user + self.loop_system + self.other_user + self.other_system

    def describe(self) -> str:
        return (
            f"{self.rps:7,.0f} req/s, {self.total:4.0f} µs a request: event loop "
            f"{self.loop_user:.0f} user + {self.loop_system:.0f} system, other threads "
            f"{self.other_user:.0f} + {self.other_system:.0f}"
        )


def thread_times(pid: int) -> dict[int, tuple[float, float]]:
    """User and system CPU seconds of each thread of a process, by thread id."""
    times = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        times[int(tid)] = (int(fields[11]) / _TICK, int(fields[12]) / _TICK)
    return times


def measure(server: Server, path: str, seconds: int, connections: int, label: str) -> Cost:
    before = thread_times(server.pid)
    run = wrk.run(server.url + path, connections, seconds, label)
    after = thread_times(server.pid)
    spent = [0.0, 0.0, 0.0, 0.0]  # loop user, loop system, others user, others system
    for tid, (user, system) in after.items():
        user0, system0 = before.get(tid, (0.0, 0.0))
        at = 0 if tid == server.pid else 2
        spent[at] += user - user0
        spent[at + 1] += system - system0
    per_request = [1e6 * s / max(run.requests, 1) for s in spent]
    return Cost(run.rps, *per_request)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.claim_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    os.sched_setaffinity(0, {CLIENT_CORE})
    work = Path(tempfile.mkdtemp(prefix="voucherd-cost-"))
    # Enough codes for every run at a rate well past the floor's on this kind of machine.
    codes = 40_000 * args.seconds * (args.rounds + 1)
    servers = {
        "floor": floor_server(work),
        "bare design": prototype_server(work, codes),
        "voucherd": voucherd_server(work, work / "voucherd-data"),
    }
    fleet = Fleet()
    try:
        for server in servers.values():
            fleet.start(server)
        claims = run_async(lists.filled_list(servers["voucherd"], "cost", "t", "C", codes, []))
        paths = {name: "/v1/lists/1/claims" for name in servers}
        paths["voucherd"] = f"/v1/lists/{claims}/claims"
        costs: dict[str, list[Cost]] = {name: [] for name in servers}
        for turn in range(args.rounds + 1):
            for name, server in servers.items():
                cost = measure(server, paths[name], args.seconds, args.connections, f"t{turn}")
                if turn:  # the first round warms every server up
                    costs[name].append(cost)
                    print(f"round {turn} {name:12} {cost.describe()}", flush=True)
        floor = statistics.median(c.rps for c in costs["floor"])
        print(f"\nmedians of {args.rounds} rounds, wrk -t1 -c{args.connections} -d{args.seconds}s:")
        for name, runs in costs.items():
            rps = statistics.median(c.rps for c in runs)
            cpu = statistics.median(c.total for c in runs)
            print(f"  {name:12} {rps:7,.0f} req/s ({100 * rps / floor:3.0f}% of the floor), "
                  f"{cpu:4.0f} µs a request")  # fmt: skip
    finally:
        fleet.stop_all()
        for data in ("voucherd-data", "prototype-data"):
            shutil.rmtree(work / data, ignore_errors=True)
        print(f"logs: {work}")


if __name__ == "__main__":
    main()
