"""The few API calls the bench makes, each failing loudly with what it sent and what it got."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from bench.codes import acsv_chunks, arandom_csv_chunks

# No overall deadline: a 10M-code upload may take minutes; a silent server still fails.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=900)
FAR_FUTURE = "2099-12-31T23:59:59Z"


class ApiError(RuntimeError):
    """A reply the bench did not expect; the message names the request and the reply."""


async def _json(resp: aiohttp.ClientResponse, what: str, ok: tuple[int, ...]) -> Any:
    text = await resp.text()
    if resp.status not in ok:
        raise ApiError(f"{what} -> {resp.status}: {text[:2000]}")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ApiError(f"{what} -> {resp.status}, not JSON: {text[:2000]}") from exc


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=64))


async def create_list(http: aiohttp.ClientSession, base: str, partner: str, tag: str) -> int:
    body = {"partner": partner, "tag": tag, "name": f"bench {tag}", "expires_at": FAR_FUTURE}
    async with http.post(f"{base}/v1/lists", json=body) as resp:
        reply = await _json(resp, f"POST /v1/lists {body}", (201,))
    return int(reply["id"])


async def get_list(http: aiohttp.ClientSession, base: str, list_id: int) -> dict[str, Any]:
    async with http.get(f"{base}/v1/lists/{list_id}") as resp:
        reply: dict[str, Any] = await _json(resp, f"GET /v1/lists/{list_id}", (200,))
    return reply


@dataclass(frozen=True, slots=True)
class UploadResult:
    count: int
    accepted: int
    seconds: float
    reply: dict[str, Any]


async def upload(
    http: aiohttp.ClientSession, base: str, list_id: int, prefix: str, count: int
) -> UploadResult:
    """Stream `count` fresh sequential codes as text/csv; the reply comes when the upload has
    finished."""
    chunks = acsv_chunks(prefix, count)
    return await _upload(http, base, list_id, f"bench-{prefix}.csv", count, chunks)


async def upload_random(
    http: aiohttp.ClientSession, base: str, list_id: int, count: int
) -> UploadResult:
    """The same with `count` random codes (bench.codes.RANDOM_SEED)."""
    chunks = arandom_csv_chunks(count)
    return await _upload(http, base, list_id, "bench-random.csv", count, chunks)


async def _upload(
    http: aiohttp.ClientSession,
    base: str,
    list_id: int,
    filename: str,
    count: int,
    chunks: AsyncIterator[bytes],
) -> UploadResult:
    url = f"{base}/v1/lists/{list_id}/uploads?filename={filename}"
    headers = {"Content-Type": "text/csv"}
    began = time.perf_counter()
    async with http.post(url, data=chunks, headers=headers) as resp:
        reply = await _json(resp, f"POST {url} ({count} codes)", (200, 201))
    seconds = time.perf_counter() - began
    return UploadResult(count, int(reply.get("accepted", -1)), seconds, reply)


@dataclass(frozen=True, slots=True)
class BatchResult:
    users: int
    claimed: int
    failed: int
    seconds: float
    client_cpu_s: float  # this process's CPU time meanwhile: near `seconds` means client-bound
    first_failure: str

    @property
    def per_second(self) -> float:
        return self.users / self.seconds


async def batch_claims(
    http: aiohttp.ClientSession,
    base: str,
    list_id: int,
    user_prefix: str,
    users: int,
    batch_size: int,
    in_flight: int,
) -> BatchResult:
    """Claim for `users` distinct users, `batch_size` per request, `in_flight` requests at once.

    The bodies are made before the clock starts and the replies parsed by orjson: at 10,000
    claims a request the client's own JSON work otherwise bounds the rate it can measure."""
    url = f"{base}/v1/lists/{list_id}/claims/batch"
    spans = [(start, min(start + batch_size, users)) for start in range(0, users, batch_size)]
    # Shared by the workers: each body is taken by exactly one.
    bodies = iter(
        [orjson.dumps({"user_ids": [f"{user_prefix}{n}" for n in range(*s)]}) for s in spans]
    )
    claimed = failed = 0
    first_failure = ""

    async def worker() -> None:
        nonlocal claimed, failed, first_failure
        headers = {"Content-Type": "application/json"}
        for body in bodies:
            async with http.post(url, data=body, headers=headers) as resp:
                data = await resp.read()
            if resp.status != 200:
                raise ApiError(f"POST {url} -> {resp.status}: {data[:2000]!r}")
            reply = orjson.loads(data)
            claimed += len(reply["claims"])
            failed += len(reply["failed"])
            if reply["failed"] and not first_failure:
                first_failure = json.dumps(reply["failed"][0])

    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    return BatchResult(users, claimed, failed, seconds, cpu, first_failure)
