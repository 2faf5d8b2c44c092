"""`python -m bench [--quick]`: every scenario against voucherd and its baseline, then the table."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable

from bench import (
    baselines,
    campaigns,
    claims_during_upload,
    latency,
    memory,
    peer_scenarios,
    report,
    rows,
    scenarios,
    soak,
    standalone,
)
from bench.servers import Fleet


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller volumes, a few minutes")
    parser.add_argument(
        "--skip-voucherd", action="store_true", help="baselines only (voucherd not ready yet)"
    )
    standalone.common_options(parser)
    parser.add_argument(
        "--memory-100m",
        action="store_true",
        help="k. also at 100M codes (a fresh voucherd, 4-7 more minutes)",
    )
    return parser.parse_args(argv)


def voucherd_runs(module: str) -> str:
    """Empty when `python -m voucherd serve --help` works, else why not."""
    cmd = [sys.executable, "-m", module, "serve", "--help"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=standalone.ROOT, timeout=60)
    return "" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-800:]}"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    profile = (scenarios.Profile.quick if args.quick else scenarios.Profile.full)(args.module)
    work_dir = standalone.prepare(
        "bench", args.work_dir, f"{'quick' if args.quick else 'full'} run"
    )

    load_before = report.busy_neighbours()
    notes: list[str] = []
    floor = scenarios.FloorFigures()
    base = baselines.BaselineFigures()
    claims = scenarios.ClaimFigures()
    state = scenarios.StateFigures()
    rewards = campaigns.RewardFigures()
    events = campaigns.EventFigures()
    soaked = soak.SoakFigures()
    lat = latency.LatencyFigures()
    busy = claims_during_upload.BusyFigures(profile.busy_upload_codes)
    mem = memory.MemoryFigures()
    peer_figures = peer_scenarios.PeerFigures()
    fleet = Fleet()

    def run_floor() -> None:
        scenarios.floor_side(fleet, profile, work_dir, notes, floor)

    def run_bare() -> None:
        floor_rps = floor.claims.best.rps if floor.claims else 20_000.0
        scenarios.bare_side(fleet, profile, work_dir, floor_rps, floor)

    def run_claims() -> None:
        floor_rps = floor.claims.best.rps if floor.claims else 20_000.0
        scenarios.voucherd_claims(fleet, profile, work_dir, floor_rps, claims)

    def run_in_turn() -> None:
        scenarios.claims_in_turn(floor, claims, profile, notes)

    def run_state() -> None:
        scenarios.voucherd_state(fleet, profile, work_dir, notes, state)

    def rate_bound() -> float:
        """The fastest single claims seen so far: f and g size their lists from it."""
        best = claims.claims or floor.claims
        return best.best.rps if best else 20_000.0

    def run_rewards() -> None:
        campaigns.rewards_side(fleet, profile, work_dir, rate_bound(), notes, rewards)

    def run_events() -> None:
        campaigns.events_side(fleet, profile, work_dir, rate_bound(), notes, events)

    def vd_max() -> float:
        """voucherd's maximum from scenario a, which i and j take shares of."""
        if claims.claims is None:
            raise RuntimeError("no maximum: scenario a measured none")
        return claims.claims.best.rps

    def run_latency() -> None:
        maxima = (vd_max(), floor.claims.best.rps if floor.claims else None)
        latency.sides(fleet, profile, work_dir, maxima, notes, lat)

    def run_busy() -> None:
        claims_during_upload.busy_side(
            fleet, args.module, work_dir, vd_max(), profile.latency_seconds, notes, busy
        )

    def run_memory() -> None:
        sizes = profile.memory_codes + ((memory.LARGE,) if args.memory_100m else ())
        memory.memory_side(fleet, profile, work_dir, sizes, state, notes, mem)

    def run_soak() -> None:
        soak.soak_side(fleet, args.module, work_dir, None, notes, soaked, rate_bound())

    steps: list[tuple[str, Callable[[], None]]] = [
        ("floor: single claims, batch, upload", run_floor),
        (
            "baselines: SQLite inserts (sequential, random), container memory",
            lambda: baselines.measure(
                base, profile.upload_codes, profile.random_upload_codes, work_dir
            ),
        ),
    ]

    # The peers: PostgreSQL and Redis behind the floor's front door, sized from the floor's rate.
    def run_postgres() -> None:
        floor_rps = floor.claims.best.rps if floor.claims else 20_000.0
        peer_scenarios.postgres_side(fleet, profile, work_dir, floor_rps, notes, peer_figures)

    def run_redis() -> None:
        floor_rps = floor.claims.best.rps if floor.claims else 20_000.0
        peer_scenarios.redis_side(fleet, profile, work_dir, floor_rps, notes, peer_figures)

    steps.append(("peers: PostgreSQL single and batch claims", run_postgres))
    steps.append(("peers: Redis single claims, appendfsync always and everysec", run_redis))
    steps.append(("bare design: single claims, group-committed", run_bare))
    why_not = "skipped (--skip-voucherd)" if args.skip_voucherd else voucherd_runs(args.module)
    if why_not:
        notes.append(f"voucherd not run: {why_not}")
    else:
        steps.append(("voucherd: single claims", run_claims))
    steps.append(("floor, bare design and voucherd: single claims in turn", run_in_turn))
    if not why_not:
        steps.append(("voucherd and floor: open-loop latency at 50/80/95% of max", run_latency))
        steps.append(("voucherd: upload, memory, batch claims, restarts", run_state))
        steps.append(("voucherd: memory at scale, restart holding the codes", run_memory))
        steps.append(("voucherd: claims during an upload", run_busy))
        steps.append(("voucherd: campaign rewards beside direct claims", run_rewards))
        steps.append(
            ("voucherd: events to WebSocket subscribers, claim-to-event latency", run_events)
        )
        if not args.quick:  # ten minutes: full runs only
            steps.append(
                (
                    f"voucherd: soak, {soak.MINUTES:g} minutes at {100 * soak.SHARE:.0f}% of "
                    "capacity, open loop",
                    run_soak,
                )
            )
    standalone.run_steps(steps, notes, fleet)

    table = rows.build(profile, floor, base, claims, state, peer_figures)
    table += campaigns.reward_rows(profile, rewards) + campaigns.event_rows(profile, events)
    if not args.quick:
        table += soak.soak_rows(soaked)
    table += latency.rows(lat)
    table += claims_during_upload.busy_rows(busy) + memory.memory_rows(mem)
    disk = (
        "Disk",
        f"{baselines.commit_ms(work_dir):.2f} ms per SQLite commit "
        f"(WAL, synchronous=FULL, one row) in {work_dir}",
    )
    standalone.finish(
        "python -m bench",
        argv,
        load_before,
        table,
        notes,
        work_dir,
        args.markdown_out,
        [disk],
        "Markdown for bench/RESULTS.md",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
