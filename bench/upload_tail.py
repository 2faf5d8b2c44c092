"""Claims' latency tail while an upload runs, closed loop: a quick look at what an upload costs
the claims beside it, steadier than scenario j.'s open loop on this noisy machine.

`python -m bench.upload_tail [--codes N] [--connections N]` starts voucherd on core 0, runs
`wrk -cN` single claims on one list for 12 s alone, then again while N sequential codes (3M by
default) upload to a second list from core 1, and prints for each: claims/s, p50, p99 and max,
and how many journal commits took longer than 10, 25 and 50 ms (from /metrics).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench import lists, wrk
from bench.scenarios import run_async
from bench.servers import CLIENT_CORE, Server, voucherd_server

SECONDS = 12
_COMMITS = "voucherd_journal_commit_duration_seconds_bucket"
_SLOWER_THAN = ("0.01", "0.025", "0.05")


def commits(server: Server) -> dict[str, float]:
    """The journal's commit-duration histogram: commits at or under each bound (seconds)."""
    text = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith(_COMMITS):
            found[line.split('le="')[1].split('"')[0]] = float(line.split()[-1])
    return found


def measure(server: Server, url: str, connections: int, upload: tuple[int, int] | None) -> str:
    before = commits(server)
    uploaded: list[float] = []
    uploader = None
    if upload is not None:
        list_id, codes = upload

        def send() -> None:
            time.sleep(1)
            result = run_async(lists.upload(server, list_id, "A", codes))
            uploaded.append(result.count / result.seconds)

        uploader = threading.Thread(target=send)
        uploader.start()
    claims = wrk.run(url, connections, SECONDS, f"tail-{time.time()}")
    if uploader is not None:
        uploader.join()
    after = commits(server)
    total = after["+Inf"] - before.get("+Inf", 0)
    slow = [int(total - (after[bound] - before.get(bound, 0))) for bound in _SLOWER_THAN]
    line = (
        f"{claims.rps:,.0f} claims/s, p50 {claims.p50_ms:.1f} ms, p99 {claims.p99_ms:.1f} ms,"
        f" max {claims.max_ms:.1f} ms; {total:,.0f} commits, longer than 10/25/50 ms: {slow}"
    )
    return line + (f"; upload {uploaded[0]:,.0f} codes/s" if uploaded else "")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upload_tail", description=__doc__)
    parser.add_argument("--codes", type=int, default=3_000_000)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="voucherd-tail-"))
    server = voucherd_server(work, work / "data")
    server.start()
    try:
        server.wait_ready()
        os.sched_setaffinity(0, {CLIENT_CORE})
        claimed = run_async(lists.new_list(server, "bench-tail", "claims"))
        run_async(lists.upload(server, claimed, "B", 500_000))
        target = run_async(lists.new_list(server, "bench-tail", "upload"))
        url = f"{server.url}/v1/lists/{claimed}/claims"
        print("alone:          ", measure(server, url, args.connections, None))
        print("during upload:  ", measure(server, url, args.connections, (target, args.codes)))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
