"""i. open-loop latency: single claims at 50%, 80% and 95% of a server's measured maximum.

Each rate runs open loop (bench.open_loop) for a fixed time: claim i is due at start + i/rate and
its latency counts from then, so queueing in the server shows in full rather than being hidden
by a closed loop's waiting connections. Per rate: claims/s achieved against the target, p50,
p90, p99, p99.9 and max, and every claim that did not get a 2xx. The maximum is the one wrk
measured in scenario a (voucherd's best run, the floor's best run).

`run_sweep` takes only a base URL, a claims path and the maximum, so any server with voucherd's
claim route can be put through it; `sweep_rows` sets one sweep beside another in the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench import lists
from bench.open_loop import HELD, Load, OpenLoop, latencies, ms
from bench.report import MISSING, Row, shown, times, verdict
from bench.scenarios import Profile, run_async
from bench.servers import Fleet, Server, floor_server, voucherd_server

SHARES = (0.5, 0.8, 0.95)  # of the measured maximum
CONNECTIONS = 64  # the client's keep-alive connections: scenario a's quick setting
WARM_S = 2.0  # open loop at the lowest share first, not recorded: warm caches and connections
TARGET_SHARE = 0.8
TARGET_P99_MS = 5.0
SCENARIO = "i. open-loop latency"


@dataclass
class LatencySweep:
    maximum: float  # claims/s the rates are shares of
    seconds: float  # each rate's run
    loads: dict[float, Load] = field(default_factory=dict)  # by share of the maximum

    def p99_ms(self, share: float) -> float | None:
        load = self.loads.get(share)
        return ms(load.latency, 99.0) if load else None


def codes_needed(maximum: float, seconds: float) -> int:
    """Codes the sweep may claim, with room for a rate run a little fast and the warm-up."""
    return int(1.2 * maximum * (sum(SHARES) * seconds + min(SHARES) * WARM_S)) + 10_000


def run_sweep(
    base_url: str,
    path: str,
    maximum: float,
    seconds: float,
    users: str,
    server: Server | None = None,
    into: LatencySweep | None = None,
) -> LatencySweep:
    """Open-loop claims to `base_url + path` at each share of `maximum` claims/s for `seconds`.

    `users` prefixes the user ids, which are distinct across the whole sweep. `server`, when
    given, is the process whose CPU share the notes report and whose exit stops a run. `into`
    is filled as it goes, so a failure part-way keeps the rates already run.
    """
    figures = into or LatencySweep(maximum, seconds)
    warm = Load(min(SHARES) * maximum, WARM_S, CONNECTIONS)
    run_async(OpenLoop(base_url, path, f"{users}warm-", warm, server).run())
    for share in SHARES:
        load = figures.loads[share] = Load(share * maximum, seconds, CONNECTIONS)
        run_async(OpenLoop(base_url, path, f"{users}{100 * share:.0f}-", load, server).run())
    return figures


def note(name: str, figures: LatencySweep) -> str:
    runs = "; ".join(
        f"at {100 * share:.0f}%: {load.describe()}" for share, load in figures.loads.items()
    )
    return f"scenario i {name}, of a maximum of {figures.maximum:,.0f} claims/s: {runs}"


# ---------------------------------------------------------------------------------------------
# voucherd and the floor, each on a fresh server.


@dataclass
class LatencyFigures:
    voucherd: LatencySweep | None = None
    floor: LatencySweep | None = None


def sides(
    fleet: Fleet,
    profile: Profile,
    work_dir: Path,
    maxima: tuple[float, float | None],
    notes: list[str],
    figures: LatencyFigures,
) -> None:
    """voucherd's sweep, then the floor's; `maxima`: each one's claims/s from scenario a (no
    floor sweep without one)."""
    server = voucherd_server(work_dir, work_dir / "latency-data", profile.module)
    fleet.start(server)
    seconds = profile.latency_seconds
    count = codes_needed(maxima[0], seconds)
    list_id = run_async(lists.filled_list(server, "bench-latency", "latency", "L", count, notes))
    figures.voucherd = LatencySweep(maxima[0], seconds)
    _measure(server, f"/v1/lists/{list_id}/claims", figures.voucherd, notes)
    if maxima[1] is None:
        return
    server = floor_server(work_dir)
    fleet.start(server, timeout=30)
    figures.floor = LatencySweep(maxima[1], seconds)
    _measure(server, "/v1/lists/1/claims", figures.floor, notes)


def _measure(server: Server, path: str, sweep: LatencySweep, notes: list[str]) -> None:
    try:
        run_sweep(server.url, path, sweep.maximum, sweep.seconds, "lat-", server, sweep)
    finally:
        notes.append(note(server.name, sweep))
    lists.stop(server, "latency server", notes)


# ---------------------------------------------------------------------------------------------
# The table.


def sweep_rows(
    subject: LatencySweep | None, baseline_name: str, baseline: LatencySweep | None
) -> list[Row]:
    """Two rows a rate, voucherd's sweep beside `baseline`'s, and the target row."""
    rows: list[Row] = []
    for share in SHARES:
        pct = f"{100 * share:.0f}% of max"
        mine = subject.loads.get(share) if subject else None
        theirs = baseline.loads.get(share) if baseline else None
        base = f"{baseline_name}, {pct}" + (f" {baseline.maximum:,.0f}/s" if baseline else "")
        rows.append(
            Row(
                SCENARIO,
                f"{pct}"
                + (f" {subject.maximum:,.0f}/s" if subject else "")
                + ": claims/s achieved / target; claims without a 2xx",
                _held(mine),
                base,
                _held(theirs),
                "",
                f">= {100 * HELD:.0f}% of target; 0",
                verdict(None if mine is None else mine.held and mine.errors == 0),
            )
        )
        p99, their_p99 = _p99(mine), _p99(theirs)
        rows.append(
            Row(
                SCENARIO,
                f"{pct}: p50 / p90 / p99 / p99.9 / max from intended send, ms",
                latencies(mine.latency) if mine else MISSING,
                base,
                latencies(theirs.latency) if theirs else MISSING,
                f"p99 {p99 / their_p99:.2f}x" if p99 is not None and their_p99 else "",
            )
        )
    # A reply costs the server more CPU at a lower rate: fewer requests share each wake-up of
    # the event loop and, for voucherd, each commit.
    rows.append(
        Row(
            SCENARIO,
            " / ".join(f"{100 * share:.0f}%" for share in SHARES)
            + " of max: server CPU a reply, µs",
            _cpu(subject),
            baseline_name,
            _cpu(baseline),
        )
    )
    p99 = subject.p99_ms(TARGET_SHARE) if subject else None
    their_p99 = baseline.p99_ms(TARGET_SHARE) if baseline else None
    rows.append(
        Row(
            SCENARIO,
            f"p99 at {100 * TARGET_SHARE:.0f}% of max",
            shown(p99, "{:.2f} ms"),
            f"{baseline_name}, {100 * TARGET_SHARE:.0f}% of max",
            shown(their_p99, "{:.2f} ms"),
            times(p99, their_p99),
            f"<= {TARGET_P99_MS:g} ms",
            verdict(None if p99 is None else p99 <= TARGET_P99_MS),
        )
    )
    return rows


def rows(figures: LatencyFigures) -> list[Row]:
    return sweep_rows(figures.voucherd, "floor", figures.floor)


def _held(load: Load | None) -> str:
    if load is None or load.window_s <= 0:
        return MISSING
    return f"{load.achieved:,.0f} / {load.rate:,.0f}; {load.errors:,}"


def _cpu(sweep: LatencySweep | None) -> str:
    if sweep is None:
        return MISSING
    each = [sweep.loads[share] for share in SHARES if share in sweep.loads]
    costs = [load.server_cpu_per_reply_us for load in each]
    if not costs or any(cost is None for cost in costs):
        return MISSING
    return " / ".join(f"{cost:,.0f}" for cost in costs if cost is not None)


def _p99(load: Load | None) -> float | None:
    return ms(load.latency, 99.0) if load else None
