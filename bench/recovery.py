"""Time start-up recovery of a data directory in-process: `python -m bench.recovery DATA_DIR`.

Works on a copy, so the directory is left as it was (recovery fails interrupted uploads).
`--make LISTS CLAIMS` first fills DATA_DIR through a real voucherd: LISTS lists sharing CLAIMS
batch claims evenly, each list holding 20% more codes than it gives out (the case of many
lists, where reading each list's claims by scanning the whole table would cost a scan a list).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import string
import tempfile
import time
from pathlib import Path

from bench import client, lists
from bench.servers import voucherd_server
from voucherd.persistence.recovery import recover

# Upload prefixes are one letter, so each list's codes are distinct from every other's.
_PREFIXES = string.ascii_uppercase + string.ascii_lowercase


def make(data_dir: Path, list_count: int, claims: int) -> None:
    if list_count > len(_PREFIXES):
        raise SystemExit(f"--make: at most {len(_PREFIXES)} lists")
    server = voucherd_server(data_dir.parent, data_dir)
    server.start()
    try:
        server.wait_ready()
        each = claims // list_count

        async def fill() -> None:
            async with client.session() as http:
                for n in range(list_count):
                    list_id = await lists.new_list(server, "bench-recovery", f"list-{n}")
                    await lists.upload(server, list_id, _PREFIXES[n], each + each // 5)
                    await client.batch_claims(http, server.url, list_id, f"u{n}-", each, 10_000, 2)

        asyncio.run(fill())
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--make", nargs=2, type=int, metavar=("LISTS", "CLAIMS"))
    args = parser.parse_args()
    if args.make:
        make(args.data_dir, *args.make)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "data"
        shutil.copytree(args.data_dir, copy)
        db = sqlite3.connect(copy / "voucherd.sqlite3", isolation_level=None)
        started = time.perf_counter()
        recovered = recover(db)
        elapsed = time.perf_counter() - started
        db.close()
    claims = sum(len(state.claims) for state in recovered.lists.values())
    codes = sum(state.pool.available for state in recovered.lists.values())
    print(
        f"recovered {len(recovered.lists)} lists, {codes:,} available codes and {claims:,}"
        f" claims in {elapsed:.2f} s"
    )


if __name__ == "__main__":
    main()
