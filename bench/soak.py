"""h. soak: voucherd held at 80% of its capacity for 10 minutes, its resident memory sampled.

`python -m bench.soak [--minutes 10] [--rate N]` starts voucherd on core 0 on a fresh data dir,
warms it up with wrk on a list of its own (single claims, `claims.lua` as in scenario a, `-t1
-c64`, 2 s) and, unless `--rate` is given, measures its capacity the same way for 10 s. It uploads
to a second list enough codes for the whole soak (rate × seconds × 1.2), reads VmRSS once it has
settled (the start), then sends single claims at 80% of that capacity (or at `--rate`) from the
bench's own process on core 1, and samples VmRSS every 10 s.

The load is open loop at a fixed rate, as wrk cannot hold one (bench.open_loop): claim i is due
at start + i/rate whatever the earlier replies did, and its latency counts from that intended
send time, so a stall of the server shows in full (no coordinated omission). The notes say what
the client reached and how busy its core was, and whether it, rather than the server, fell
short.

At the end the list's counts must balance (uploaded = available + distributed + withdrawn) and
its `distributed` must equal the 201s counted, give or take the claims whose replies were cut off.

`python -m bench` runs it in full runs only (not `--quick`), after the other scenarios.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import lists, report, scenarios, standalone, wrk
from bench.open_loop import HELD, PERCENTILES, Load, OpenLoop, ms
from bench.report import MISSING, Row, shown, times, verdict
from bench.scenarios import run_async
from bench.servers import Fleet, Server, ServerFailed, voucherd_server

MINUTES = 10.0  # the soak's length in full runs
SHARE = 0.8  # of the capacity wrk measured
CAPACITY_SECONDS = 10
WARM_SECONDS = 2  # wrk's warm-up before the capacity run (and before the soak with --rate)
CAPACITY_CONNECTIONS = 64  # wrk's connections for the capacity run: scenario a's quick setting
CONNECTIONS = 64  # the soak client's keep-alive connections
CODES_MARGIN = 1.2  # codes uploaded: rate × seconds × this, plus SPARE_CODES
SPARE_CODES = 10_000
SAMPLE_S = 10.0  # VmRSS every this many seconds
SCENARIO = "h. soak"
MIB = 2**20


@dataclass(frozen=True, slots=True)
class RssSample:
    at_s: float  # seconds since the first intended send
    rss: int  # bytes
    created: int  # 201s counted by then


# ---------------------------------------------------------------------------------------------
# The scenario: capacity, upload, RSS at start, the soak, the counts at the end.


@dataclass
class SoakFigures:
    minutes: float = MINUTES
    connections: int = CONNECTIONS
    capacity: wrk.WrkResult | None = None  # None when --rate was given
    capacity_busy: float | None = None  # the server core's share during the capacity run
    target: float | None = None  # claims/s the soak should hold
    uploaded: int | None = None  # codes the soak list accepted
    rss_start: int | None = None
    load: Load | None = None
    samples: list[RssSample] = field(default_factory=list)  # VmRSS during the soak, and at its end
    codes: dict[str, int] | None = None  # the soak list's counts at the end

    @property
    def rss_end(self) -> int | None:
        return self.samples[-1].rss if self.samples else None

    @property
    def rss_max(self) -> int | None:
        if not self.samples:
            return self.rss_start
        return max([s.rss for s in self.samples] + [self.rss_start or 0])

    def growth_per_million(self) -> float | None:
        """Bytes of RSS growth per million 201s, from the start to the end."""
        end = self.rss_end
        if self.load is None or not self.load.created or end is None or self.rss_start is None:
            return None
        return (end - self.rss_start) / self.load.created * 1e6

    def slope_per_million(self, since_s: float = 0.0) -> float | None:
        """Least-squares slope of RSS over 201s across the samples from `since_s` on (from 0, the
        start included): bytes per million claims, less moved by one odd reading than
        start-to-end. From half-way on, SQLite's page cache (bounded) has mostly filled, so what
        remains is growth that goes on."""
        if self.load is None or self.rss_start is None:
            return None
        points = [(0.0, float(self.rss_start))] if since_s <= 0 else []
        points += [(float(s.created), float(s.rss)) for s in self.samples if s.at_s >= since_s]
        if len(points) < 3:
            return None
        mx = sum(x for x, _ in points) / len(points)
        my = sum(y for _, y in points) / len(points)
        var = sum((x - mx) ** 2 for x, _ in points)
        if var == 0:
            return None
        return sum((x - mx) * (y - my) for x, y in points) / var * 1e6

    def balance(self) -> tuple[bool, int] | None:
        """(the counts balance and match the 201s, distributed − 201s), or None if not read."""
        codes, load = self.codes, self.load
        if codes is None or load is None:
            return None
        extra = codes["distributed"] - load.created
        ok = (
            codes["uploaded"] == codes["available"] + codes["distributed"] + codes["withdrawn"]
            and codes["uploaded"] == self.uploaded
            and 0 <= extra <= load.cut_off + load.lost
        )
        return ok, extra


class _Sampler:
    """VmRSS of the soaked server with the 201s so far, every SAMPLE_S seconds and at the end."""

    def __init__(self, figures: SoakFigures, load: Load, server: Server) -> None:
        self.figures, self.load, self.server = figures, load, server

    def __call__(self, at_s: float, end: bool = False) -> None:
        samples = self.figures.samples
        if end and samples and at_s - samples[-1].at_s < 1.0:
            samples.pop()  # a periodic reading just before the end: the end replaces it
        try:
            rss = self.server.rss()
        except (OSError, ServerFailed) as exc:
            self.load.stopped = self.load.stopped or f"VmRSS unreadable, voucherd gone? {exc!r}"
            return
        samples.append(RssSample(at_s, rss, self.load.created))


def warm_up(
    server: Server, rate_bound: float, measure: bool, run_prefix: str, notes: list[str]
) -> tuple[wrk.WrkResult, float] | None:
    """wrk (`claims.lua`, -t1) on a list of its own: WARM_SECONDS to warm the server up, then,
    if `measure`, CAPACITY_SECONDS for its capacity. Returns that run and the server core's busy
    share during it. `rate_bound`: claims/s the server will not exceed, to size the list."""
    runs = WARM_SECONDS + (CAPACITY_SECONDS if measure else 0)
    needed = int(1.5 * rate_bound * runs) + SPARE_CODES
    list_id = run_async(lists.filled_list(server, "bench-capacity", "capacity", "C", needed, notes))
    url = f"{server.url}/v1/lists/{list_id}/claims"
    wrk.run(url, CAPACITY_CONNECTIONS, WARM_SECONDS, f"{run_prefix}-warm")
    if not measure:
        return None
    cpu = server.cpu()
    capacity = wrk.run(url, CAPACITY_CONNECTIONS, CAPACITY_SECONDS, f"{run_prefix}-cap")
    return capacity, (server.cpu() - cpu) / capacity.duration_s


def describe_capacity(capacity: wrk.WrkResult, busy: float) -> str:
    return (
        f"wrk -t1 c={CAPACITY_CONNECTIONS} {CAPACITY_SECONDS} s (claims.lua) on a list of its "
        f"own: {capacity.rps:,.0f} claims/s, p50 {capacity.p50_ms:.2f} ms, p99 "
        f"{capacity.p99_ms:.2f} ms, {capacity.non_2xx} non-2xx, {capacity.socket_errors} socket "
        f"errors, server core {100 * busy:.0f}% busy"
    )


def soak_side(
    fleet: Fleet,
    module: str,
    work_dir: Path,
    rate: float | None,
    notes: list[str],
    figures: SoakFigures,
    rate_bound: float = 20_000.0,
) -> None:
    """Fills `figures` as it goes, so a failure part-way still leaves what was measured.

    `rate`: claims/s to hold, or None to hold SHARE of the capacity measured here. `rate_bound`:
    claims/s the server will not exceed, to size the capacity run's list.
    """
    server = voucherd_server(work_dir, work_dir / "soak-data", module)
    fleet.start(server)
    seconds = figures.minutes * 60
    # A warm-up on a list of its own, with or without --rate, so the RSS at start is that of a
    # server that has served claims already, not one growing its first buffers and caches.
    measured = warm_up(server, rate_bound, rate is None, "h", notes)
    if measured is not None:
        figures.capacity, figures.capacity_busy = measured
        rate = SHARE * figures.capacity.rps
        notes.append(
            f"scenario h capacity: {describe_capacity(*measured)}; the soak holds "
            f"{100 * SHARE:.0f}% of it, {rate:,.0f}/s"
        )
    assert rate is not None  # measured above unless given
    figures.target = rate

    soak_list = run_async(lists.new_list(server, "bench-soak", "soak"))
    count = int(rate * seconds * CODES_MARGIN) + SPARE_CODES
    up = run_async(lists.upload(server, soak_list, "S", count))
    figures.uploaded = up.accepted
    if up.accepted != count:
        notes.append(f"scenario h: the soak list took {up.accepted:,} of {count:,} codes")
    settled = scenarios.settled_rss(server, 30.0)
    figures.rss_start = settled.rss
    notes.append(
        f"scenario h: {up.accepted:,} codes uploaded to the soak list in {up.seconds:.1f} s; "
        f"RSS at start {settled.rss / MIB:,.1f} MiB, {settled.describe()}"
    )

    load = figures.load = Load(rate, seconds, figures.connections)
    sample = _Sampler(figures, load, server)
    path = f"/v1/lists/{soak_list}/claims"
    opened = OpenLoop(server.url, path, "soak-", load, server, every=(SAMPLE_S, sample))
    try:
        run_async(opened.run())
        sample(time.perf_counter() - opened.start, end=True)  # right after the last reply
    finally:
        soak_notes(figures, notes)
    figures.codes = run_async(lists.codes(server, soak_list))
    notes.append(balance_note(figures))
    lists.stop(server, "soak server", notes)


def soak_notes(figures: SoakFigures, notes: list[str]) -> None:
    load = figures.load
    if load is None:
        return
    notes.append(f"scenario h client: {load.describe()}")
    per_minute = []
    for index, hist in enumerate(load.minutes):
        # Claims of this minute's schedule: those due in it, as far as the schedule got.
        due = min(load.scheduled, math.ceil(load.rate * 60 * (index + 1))) - math.ceil(
            load.rate * 60 * index
        )
        figs = ", ".join(f"{label} {ms(hist, p) or 0:.2f}" for label, p in PERCENTILES)
        per_minute.append(
            f"min {index + 1}: {hist.get_total_count():,} of {max(due, 0):,} answered, {figs} ms"
        )
    if per_minute:
        notes.append(
            "scenario h by minute of intended send (claims due in it answered, then latency from "
            "intended send): " + "; ".join(per_minute)
        )
    if figures.samples:
        samples = ", ".join(
            f"{s.at_s:.0f} s {s.rss / MIB:,.1f} ({s.created:,})" for s in figures.samples
        )
        slopes = [
            f"{label} {slope / MIB:+,.2f}"
            for label, slope in (
                ("whole soak", figures.slope_per_million()),
                ("second half", figures.slope_per_million(load.seconds / 2)),
            )
            if slope is not None
        ]
        notes.append(
            f"scenario h VmRSS every {SAMPLE_S:g} s (MiB, 201s so far), the last right after the "
            f"last reply: {samples}"
            + (
                f"; least-squares slope of RSS over claims, MiB per million: {', '.join(slopes)}"
                if slopes
                else ""
            )
        )


def balance_note(figures: SoakFigures) -> str:
    codes, load = figures.codes, figures.load
    if codes is None or load is None:
        return "scenario h: the soak list's counts were not read"
    checked = figures.balance()
    extra = checked[1] if checked else 0
    return (
        f"scenario h: the soak list at the end: uploaded {codes['uploaded']:,} (the upload "
        f"accepted {figures.uploaded or 0:,}) = available {codes['available']:,} + distributed "
        f"{codes['distributed']:,} + withdrawn {codes['withdrawn']:,}"
        f"{'' if checked and checked[0] else ' (MISMATCH)'}; the client counted "
        f"{load.created:,} 201s, distributed − 201s = {extra:+,} (may be up to "
        f"{load.cut_off + load.lost} for the claims cut off or lost in flight; below 0 would be a "
        "claim answered but not counted)"
    )


def soak_rows(figures: SoakFigures) -> list[Row]:
    load = figures.load
    how = f"open loop, {figures.connections} connections, {figures.minutes:g} min"
    if figures.capacity is not None:
        base = f"target: {100 * SHARE:.0f}% of wrk c={CAPACITY_CONNECTIONS} {CAPACITY_SECONDS} s"
        base += f" ({figures.capacity.rps:,.0f}/s)"
    elif figures.target is not None:
        base = "target: --rate"
    else:
        base = f"target: {100 * SHARE:.0f}% of capacity"
    achieved = load.achieved if load and load.window_s > 0 else None
    target = figures.target
    share = achieved / target if achieved is not None and target else None
    rows = [
        Row(
            SCENARIO,
            f"claims/s held (replies / time), {how}",
            shown(achieved, "{:,.0f}"),
            base,
            shown(target, "{:,.0f}"),
            f"{100 * share:.1f}% of target" if share is not None else "",
            f">= {100 * HELD:.0f}% of target",
            verdict(None if share is None else share >= HELD),
        )
    ]
    for label, percentile in PERCENTILES:
        whole = ms(load.latency, percentile) if load else None
        first = ms(load.minutes[0], percentile) if load and load.minutes else None
        last = ms(load.minutes[-1], percentile) if load and load.minutes else None
        rows.append(
            Row(
                SCENARIO,
                f"{label} latency from intended send, whole soak",
                shown(whole, "{:.2f} ms"),
                "first minute -> last minute",
                f"{first:.2f} -> {last:.2f} ms" if first is not None and last is not None else "",
                times(last, first),
            )
        )
    start, end, top = figures.rss_start, figures.rss_end, figures.rss_max
    rows.append(
        Row(
            SCENARIO,
            "VmRSS at start -> end (max), MiB",
            f"{start / MIB:,.1f} -> {end / MIB:,.1f} ({(top or 0) / MIB:,.1f})"
            if start is not None and end is not None
            else MISSING,
        )
    )
    growth = figures.growth_per_million()
    rows.append(
        Row(
            SCENARIO,
            "VmRSS growth per million claims, start to end",
            f"{growth / MIB:+,.2f} MiB" if growth is not None else MISSING,
        )
    )
    bad = load.errors if load else None
    rows.append(
        Row(
            SCENARIO,
            "non-2xx / socket errors / cut off or never sent",
            f"{load.non_2xx} / {load.socket_errors} / {load.cut_off + load.unsent}"
            if load
            else MISSING,
            target="0 / 0 / 0",
            met=verdict(None if bad is None else bad == 0),
        )
    )
    checked = figures.balance()
    rows.append(
        Row(
            SCENARIO,
            "uploaded = available + distributed + withdrawn; distributed − 201s",
            ("balanced" if checked[0] else "NOT balanced") + f"; {checked[1]:+,}"
            if checked
            else MISSING,
            target="balanced; 0 (+ cut off)",
            met=verdict(None if checked is None else checked[0]),
        )
    )
    return rows


# ---------------------------------------------------------------------------------------------
# On its own: `python -m bench.soak [--minutes 10] [--rate N]`.


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=MINUTES, help="the soak's length")
    parser.add_argument(
        "--rate",
        type=float,
        help=f"claims/s to hold (default: {100 * SHARE:.0f}%% of the capacity wrk measures)",
    )
    parser.add_argument(
        "--connections", type=int, default=CONNECTIONS, help="the soak client's connections"
    )
    standalone.common_options(parser)
    parser.add_argument(
        "--rate-bound",
        type=float,
        default=20_000.0,
        help="claims/s the server will not exceed; sizes the capacity list (default 20,000)",
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or (args.rate is not None and args.rate <= 0) or args.connections < 1:
        parser.error("--minutes, --rate and --connections must be positive")
    command = "python -m bench.soak"
    work_dir = standalone.prepare(command, args.work_dir, f"{args.minutes:g} min")
    load_before = report.busy_neighbours()
    notes: list[str] = []
    figures = SoakFigures(args.minutes, args.connections)
    fleet = Fleet()

    def run() -> None:
        soak_side(fleet, args.module, work_dir, args.rate, notes, figures, args.rate_bound)

    standalone.run_steps([("voucherd: soak", run)], notes, fleet)
    table = soak_rows(figures)
    standalone.finish(command, argv, load_before, table, notes, work_dir, args.markdown_out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
