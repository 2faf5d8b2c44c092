"""Claims through one list actor and the journal, in-process, without HTTP.

`python -m bench.actor_claims [--claims N] [--claimers N]` prints claims/s and µs per claim: the
cost of voucherd's own claim path (actor turn, code taken from the pool, group commit), which
`python -m bench` can only show as the gap between voucherd and the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import uvloop

from voucherd.actors.voucher_list import Ids, ListActor, TakeCode
from voucherd.duplicates import Scope
from voucherd.lists import ListInfo
from voucherd.metrics import Metrics
from voucherd.persistence.journal import Journal
from voucherd.pool import CodePool, Segment
from voucherd.statuses import Status


async def measure(claims: int, claimers: int, data_dir: Path) -> float:
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

    started = time.perf_counter()
    await asyncio.gather(*(claimer() for _ in range(claimers)))
    elapsed = time.perf_counter() - started
    await actor.stop()
    await journal.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.actor_claims", description=__doc__)
    parser.add_argument("--claims", type=int, default=200_000)
    parser.add_argument("--claimers", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        elapsed = uvloop.run(measure(args.claims, args.claimers, Path(data_dir)))
    print(
        f"{args.claims:,} claims by {args.claimers} claimers: {args.claims / elapsed:,.0f}/s,"
        f" {elapsed / args.claims * 1e6:.1f} µs per claim"
    )


if __name__ == "__main__":
    main()
