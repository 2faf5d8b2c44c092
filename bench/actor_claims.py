"""Claims through one list actor and the journal, in-process, without HTTP.

`python -m bench.actor_claims [--claims N] [--claimers N] [--batch SIZE]` prints claims/s, µs
per claim, and the CPU per claim of the event loop's thread and of every thread together (the
journal's writer too): the cost of voucherd's own claim path
(actor turn, codes taken from the pool, group commit, and for batches the reply rendered),
which `python -m bench` can only show as the gap between voucherd and the floor. `--batch`
claims for SIZE users a request, one request at a time, instead of single claims.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import uvloop

from voucherd import clock, wire
from voucherd.actors.voucher_list import Ids, ListActor, TakeCode, TakeCodes
from voucherd.duplicates import Scope
from voucherd.lists import ListInfo
from voucherd.metrics import Metrics
from voucherd.persistence.journal import Journal
from voucherd.pool import CodePool, Segment
from voucherd.statuses import Status


async def measure(
    claims: int, claimers: int, batch: int, data_dir: Path
) -> tuple[float, float, float]:
    """Wall, event-loop CPU and process CPU (every thread: the loop, the journal's) seconds for
    `claims` claims."""
    metrics = Metrics()
    journal = Journal(data_dir / "voucherd.sqlite3", "FULL", 10**7, metrics)
    await journal.open()
    journal.start()
    info = ListInfo(1, "Bench", "actor", "actor", "", 4e9, Status.ACTIVE, Scope.PARTNER, 0, 0, 0)
    pool = CodePool()
    codes = [f"A{n:011d}".encode() for n in range(claims)]
    pool.add(
        Segment.of(1, start + 1, codes[start : start + 5000]) for start in range(0, claims, 5000)
    )
    info.counts.uploaded = claims
    actor = ListActor(
        info, journal=journal, ids=Ids(), metrics=metrics, mailbox_size=claims, pool=pool
    )
    actor.start()
    users = iter(range(claims))

    async def claimer() -> None:
        for user in users:
            await actor.ask(TakeCode(f"user-{user}"))

    async def batches() -> None:
        for start in range(0, claims, batch):
            part = [f"user-{user}" for user in range(start, min(start + batch, claims))]
            outcome = await actor.ask(TakeCodes(part))
            expires = clock.format_time(info.expires_at)
            wire.dumps({"claims": [view for run in outcome.runs for view in run.shown(expires)]})

    started, cpu, process = time.perf_counter(), time.thread_time(), time.process_time()
    if batch:
        await batches()
    else:
        await asyncio.gather(*(claimer() for _ in range(claimers)))
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
    process = time.process_time() - process
    await actor.stop()
    await journal.close()
    return elapsed, cpu, process


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.actor_claims", description=__doc__)
    parser.add_argument("--claims", type=int, default=200_000)
    parser.add_argument("--claimers", type=int, default=64)
    parser.add_argument("--batch", type=int, default=0, metavar="SIZE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        elapsed, cpu, process = uvloop.run(
            measure(args.claims, args.claimers, args.batch, Path(data_dir))
        )
    how = f"in batches of {args.batch:,}" if args.batch else f"by {args.claimers} claimers"
    print(
        f"{args.claims:,} claims {how}: {args.claims / elapsed:,.0f}/s,"
        f" {elapsed / args.claims * 1e6:.1f} µs per claim,"
        f" event loop CPU {cpu / args.claims * 1e6:.1f} µs per claim,"
        f" all threads {process / args.claims * 1e6:.1f} µs per claim"
    )


if __name__ == "__main__":
    main()
