"""One upload to a fresh voucherd: `python -m bench.upload [--codes N] [--random] [--repeat N]`.

Scenario c of the table on its own, for trying a change to the upload path: voucherd starts on
the server core with an empty data directory, the codes (sequential, or random like real partner
codes) stream from this process on the other core, and the rate is codes / wall time of the POST.
Each repeat uses a fresh server, so every upload starts with an empty code index.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench import lists
from bench.scenarios import run_async
from bench.servers import CLIENT_CORE, Fleet, voucherd_server


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upload", description=__doc__)
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--random", action="store_true", help="random codes, not sequential")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    os.sched_setaffinity(0, {CLIENT_CORE})
    kind = "random" if args.random else "sequential"
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as scratch:
            fleet = Fleet()
            server = voucherd_server(Path(scratch), Path(scratch) / "data")
            try:
                fleet.start(server)
                list_id = run_async(lists.new_list(server, "Bench", "upload"))
                if args.random:
                    result = run_async(lists.upload_random(server, list_id, args.codes))
                else:
                    result = run_async(lists.upload(server, list_id, "U", args.codes))
            finally:
                fleet.stop_all()
        print(
            f"{args.codes:,} {kind} codes: {result.accepted:,} accepted in {result.seconds:.2f} s,"
            f" {result.accepted / result.seconds:,.0f} codes/s"
        )


if __name__ == "__main__":
    main()
