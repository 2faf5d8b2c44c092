"""`python -m bench [--quick]`: every scenario against voucherd and its baseline, then the table."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import baselines, campaigns, report, rows, scenarios, soak, wrk
from bench.servers import CLIENT_CORE, Fleet

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller volumes, a few minutes")
    parser.add_argument(
        "--skip-voucherd", action="store_true", help="baselines only (voucherd not ready yet)"
    )
    parser.add_argument(
        "--module", default="voucherd", help="server to bench, run as `python -m MODULE serve`"
    )
    parser.add_argument("--work-dir", type=Path, help="keep data dirs and logs here")
    parser.add_argument("--markdown-out", type=Path, help="also write the Markdown to this file")
    return parser.parse_args(argv)


def voucherd_runs(module: str) -> str:
    """Empty when `python -m voucherd serve --help` works, else why not."""
    cmd = [sys.executable, "-m", module, "serve", "--help"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    return "" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-800:]}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # SIGTERM (and SIGINT even where a shell ignored it) unwind through the finally-block below,
    # which stops every server the bench started.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    profile = (scenarios.Profile.quick if args.quick else scenarios.Profile.full)(args.module)
    # The bench's own client work (batch bodies, upload stream) stays off the server's core.
    os.sched_setaffinity(0, {CLIENT_CORE})
    wrk.ensure_wrk()
    os.chdir(ROOT)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="voucherd-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"bench: {'quick' if args.quick else 'full'} run, logs and data in {work_dir}", flush=True
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
    fleet = Fleet()

    def run_floor() -> None:
        scenarios.floor_side(fleet, profile, work_dir, notes, floor)

    def run_claims() -> None:
        floor_rps = floor.claims.best.rps if floor.claims else 20_000.0
        scenarios.voucherd_claims(fleet, profile, work_dir, floor_rps, notes, claims)

    def run_floor_again() -> None:
        scenarios.floor_claims_again(floor, profile, notes)

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
    why_not = "skipped (--skip-voucherd)" if args.skip_voucherd else voucherd_runs(args.module)
    if why_not:
        notes.append(f"voucherd not run: {why_not}")
    else:
        steps.append(("voucherd: single claims", run_claims))
        steps.append(("floor: single claims again, for drift", run_floor_again))
        steps.append(("voucherd: upload, memory, batch claims, restarts", run_state))
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
    try:
        for title, run in steps:
            print(f"bench: {title} ...", flush=True)
            scenarios.attempt(title, notes, run)
    except KeyboardInterrupt as exc:
        notes.append(f"interrupted ({exc or 'SIGINT'}): the figures are partial")
    finally:
        fleet.stop_all()

    table = rows.build(profile, floor, base, claims, state)
    table += campaigns.reward_rows(profile, rewards) + campaigns.event_rows(profile, events)
    if not args.quick:
        table += soak.soak_rows(soaked)
    load_after = report.busy_neighbours()
    if load_before[1] or load_after[1]:
        notes.insert(0, report.BUSY_WARNING)
    facts = report.machine_facts(argv, load_before[0], load_after[0])
    facts.append(
        (
            "Disk",
            f"{baselines.commit_ms(work_dir):.2f} ms per SQLite commit "
            f"(WAL, synchronous=FULL, one row) in {work_dir}",
        )
    )
    print()
    for key, value in facts:
        print(f"{key}: {value}")
    print()
    print(report.plain_table(table))
    if notes:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in notes))
    md = report.markdown(table, facts, notes)
    print("\n----- Markdown for bench/RESULTS.md -----\n")
    print(md)
    if args.markdown_out:
        args.markdown_out.write_text(md)
    print(f"logs: {work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
