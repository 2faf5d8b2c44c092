"""Connections held open before any key is checked: voucherd's memory, and what one more gets.

`python -m bench.connections [--connections N] [--lines H]` starts voucherd (default settings:
`max_connections` 1,000, `max_headers` 32) and opens N connections twice, on a fresh server
each time: first idle ones (the baseline), then ones that each send a request head of H header
lines of 8,000 bytes and never finish it. For each it prints the server's VmRSS before and once
the connections are open, and what a request on one more connection gets then (200 below the
limit, 503 past it) and how long it took. Connections past `max_connections` are answered 503
and hold nothing; more than `max_headers` lines get 400 and the connection closes.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.servers import Fleet, rss_bytes, voucherd_server

LINE = b"X-Pad: " + b"a" * 8000 + b"\r\n"
HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
SETTLE_S = 2.0
MIB = 2**20


async def hold(port: int, connections: int, lines: int) -> list[asyncio.StreamWriter]:
    """Open the connections, each sending its unfinished head."""
    writers = []
    for n in range(connections):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        if lines:
            writer.write(HEAD + LINE * lines)
        writers.append(writer)
        if n % 100 == 99:
            await asyncio.sleep(0.01)  # let the server accept and read as they come
    await asyncio.sleep(SETTLE_S)
    return writers


async def one_more(port: int) -> str:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + b"\r\n")
    status = (await asyncio.wait_for(reader.readline(), 30)).decode().strip()
    writer.close()
    return f"{status} in {(time.perf_counter() - started) * 1e3:.1f} ms"


def run(work: Path, connections: int, lines: int) -> str:
    fleet = Fleet()
    server = voucherd_server(work, work / f"data-{lines}")
    try:
        fleet.start(server)
        assert server.proc is not None
        pid = server.proc.pid
        before = rss_bytes(pid)

        async def measure() -> str:
            writers = await hold(server.port, connections, lines)
            held = rss_bytes(pid)
            answer = await one_more(server.port)
            for writer in writers:
                writer.close()
            grown = (held - before) / connections / 1024
            return (
                f"{connections:,} connections, {lines} header lines each: VmRSS "
                f"{before / MIB:.0f} -> {held / MIB:.0f} MiB ({grown:,.0f} KiB a connection); "
                f"one more connection: {answer}"
            )

        return asyncio.run(measure())
    finally:
        fleet.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.connections", description=__doc__)
    parser.add_argument("--connections", type=int, default=999)
    parser.add_argument("--lines", type=int, default=31)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voucherd-connections-") as work:
        print(run(Path(work), args.connections, 0))
        print(run(Path(work), args.connections, args.lines))


if __name__ == "__main__":
    main()
