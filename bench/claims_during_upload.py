"""Claim latency on one list while another list takes a large upload of random codes.

`python -m bench.claims_during_upload [--codes N] [--claimers N]` starts voucherd on core 0 in a
scratch directory, runs a few claimers against list B (on core 1, closed loop) for 2 s alone, then
again while N random codes upload to list A, and prints p50/p99/max of both and the upload's
rate. Random codes are the hard case: each one writes a page of the code index.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from bench.codes import csv_chunks, random_csv_chunks
from bench.servers import Server, free_port

EXPIRES = "2099-12-31T23:59:59Z"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)] * 1000


async def measure(url: str, codes: int, claimers: int) -> None:
    async with aiohttp.ClientSession(url) as http:
        for tag in ("upload", "claims"):
            new_list = {"partner": "Bench", "tag": tag, "name": tag, "expires_at": EXPIRES}
            async with http.post("/v1/lists", json=new_list) as response:
                assert response.status == 201, await response.text()
        async with http.post(
            "/v1/lists/2/uploads", data=b"".join(csv_chunks("B", 200_000)),
            headers={"Content-Type": "text/csv"},
        ) as response:  # fmt: skip
            assert response.status == 201, await response.text()
        latencies: list[float] = []
        running = True

        async def claimer(worker: int) -> None:
            n = 0
            while running:
                n += 1
                started = time.perf_counter()
                async with http.post(
                    "/v1/lists/2/claims", json={"user_id": f"w{worker}-{n}"}
                ) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)

        tasks = [asyncio.create_task(claimer(worker)) for worker in range(claimers)]
        await asyncio.sleep(2)
        alone = list(latencies)
        latencies.clear()

        async def body() -> AsyncIterator[bytes]:
            for chunk in random_csv_chunks(codes):
                yield chunk

        started = time.perf_counter()
        async with http.post(
            "/v1/lists/1/uploads", data=body(), headers={"Content-Type": "text/csv"}
        ) as response:
            reply = await response.json()
        elapsed = time.perf_counter() - started
        running = False
        await asyncio.gather(*tasks)
    during = latencies
    print(f"upload of {codes:,} random codes: {reply['accepted'] / elapsed:,.0f} codes/s")
    for label, values in (("claims alone", alone), ("claims during the upload", during)):
        print(
            f"{label}: {len(values):,} claims, p50 {percentile(values, 0.5):.1f} ms,"
            f" p99 {percentile(values, 0.99):.1f} ms, max {max(values) * 1000:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.claims_during_upload", description=__doc__
    )
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--claimers", type=int, default=4)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        server = Server(
            "voucherd",
            [sys.executable, "-m", "voucherd", "serve", "--port", str(port),
             "--data-dir", str(Path(scratch) / "data")],
            port,
            Path(scratch) / "voucherd.log",
        )  # fmt: skip
        server.start()
        try:
            server.wait_ready()
            asyncio.run(measure(server.url, args.codes, args.claimers))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
