"""SIGTERM: voucherd stops listening, finishes the requests in flight, flushes the journal, closes
and exits with status 0 — and everything it acknowledged is there after a restart."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from support import ServerProcess, assert_balanced, codes_csv, list_body, make_codes

SLOW_CLAIMS = 20
BATCH_USERS = [f"batch-{n}" for n in range(100)]


async def reply_of(response: aiohttp.ClientResponse) -> tuple[int, dict[str, Any]]:
    reply: dict[str, Any] = await response.json()
    return response.status, reply


async def get(session: aiohttp.ClientSession, path: str) -> dict[str, Any]:
    async with session.get(path) as response:
        status, reply = await reply_of(response)
        assert status == 200, reply
        return reply


async def post(
    session: aiohttp.ClientSession, path: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with session.post(path, json=body) as response:
        return await reply_of(response)


async def create_list_with_codes(session: aiohttp.ClientSession, codes: list[str]) -> int:
    status, created = await post(session, "/v1/lists", list_body())
    assert status == 201, created
    async with session.post(
        f"/v1/lists/{created['id']}/uploads",
        data=io.BytesIO(codes_csv(codes).encode()),
        headers={"Content-Type": "text/csv"},
    ) as response:
        status, uploaded = await reply_of(response)
        assert (status, uploaded["accepted"]) == (201, len(codes)), uploaded
    return int(created["id"])


async def held_back(first: bytes, rest: bytes, release: asyncio.Event) -> AsyncIterator[bytes]:
    """A body sent in two parts, the second only once `release` is set: the request is in
    flight, its handler started and reading, for as long as the test needs."""
    yield first
    await release.wait()
    yield rest


async def slow_post(
    session: aiohttp.ClientSession,
    path: str,
    body: bytes,
    content_type: str,
    release: asyncio.Event,
) -> tuple[int, dict[str, Any]]:
    half = len(body) // 2
    async with session.post(
        path,
        data=held_back(body[:half], body[half:], release),
        headers={"Content-Type": content_type},
    ) as response:
        return await reply_of(response)


async def refuses_new_connections(url: str) -> bool:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            async with session.get(f"{url}/healthz") as response:
                await response.read()
        except aiohttp.ClientConnectorError:
            return True
        except aiohttp.ClientError:
            pass  # accepted just before the listener closed, then dropped: try again
    return False


async def claim_until_refused(
    session: aiohttp.ClientSession,
    list_id: int,
    worker: str,
    acknowledged: dict[tuple[str, str], str],
    refused: list[tuple[int, dict[str, Any]]],
    enough: asyncio.Event,
) -> None:
    """Plain, keyed and batch claims in turn, until the server stops answering."""
    path = f"/v1/lists/{list_id}/claims"
    n = 0
    while True:
        n += 1
        try:
            if n % 3 == 0:
                users = [f"{worker}-{n}-{m}" for m in range(4)]
                status, reply = await post(session, f"{path}/batch", {"user_ids": users})
                made_now = reply.get("claims", [])
                if status not in (200, 503) or reply.get("failed"):
                    refused.append((status, reply))
            else:
                user_id, key = (f"{worker}-keyed", f"k{n}") if n % 3 == 1 else (f"{worker}-{n}", "")
                status, reply = await post(
                    session, path, {"user_id": user_id, "idempotency_key": key}
                )
                made_now = [reply["claim"]] if status in (200, 201) else []
                if not made_now and status != 503:
                    refused.append((status, reply))
        except aiohttp.ClientError:
            return  # the listener is closed, or this connection was: nothing acknowledged
        if status == 503 and reply["error"]["code"] == "not_ready":
            return  # a new request after SIGTERM: refused whole, with Retry-After
        for made in made_now:
            acknowledged[(made["user_id"], made["idempotency_key"])] = made["code"]
        if len(acknowledged) >= 200:
            enough.set()


async def test_sigterm_under_load_answers_every_claim_it_took_and_keeps_them(
    server_process: ServerProcess,
) -> None:
    server_process.start()
    await server_process.wait_ready()
    codes = make_codes(3000)
    acknowledged: dict[tuple[str, str], str] = {}
    refused: list[tuple[int, dict[str, Any]]] = []
    enough = asyncio.Event()

    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        list_id = await create_list_with_codes(session, codes)
        workers = [
            asyncio.create_task(
                claim_until_refused(session, list_id, f"w{i}", acknowledged, refused, enough)
            )
            for i in range(32)
        ]
        await asyncio.wait_for(enough.wait(), timeout=60)
        exit_code = await asyncio.to_thread(server_process.terminate)  # the load keeps going
        await asyncio.gather(*workers)

    assert exit_code == 0, server_process.log()
    assert refused == [], "a claim taken before the shutdown was refused or failed"
    assert "journal flushed and closed" in server_process.log()
    assert len(set(acknowledged.values())) == len(acknowledged)

    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        repeats = await asyncio.gather(
            *(
                post(session, f"/v1/lists/{list_id}/claims", {"user_id": u, "idempotency_key": k})
                for u, k in acknowledged
            )
        )
        for code, (status, reply) in zip(acknowledged.values(), repeats, strict=True):
            assert (status, reply["claim"]["code"]) == (200, code)
        listing = await get(session, f"/v1/lists/{list_id}")
        assert listing["codes"]["uploaded"] == len(codes)
        assert_balanced(listing)


async def test_sigterm_waits_for_requests_whose_bodies_are_still_arriving(
    server_process: ServerProcess,
) -> None:
    # A short grace period: if voucherd drops these requests, the test fails in 10 s, not 30.
    server_process.env["VOUCHERD_SHUTDOWN_TIMEOUT"] = "10"
    # Chunks smaller than half the upload, so its first half is stored while the rest waits.
    server_process.env["VOUCHERD_UPLOAD_CHUNK_CODES"] = "5000"
    server_process.start()
    await server_process.wait_ready()
    url = server_process.url
    codes = make_codes(1000)
    big = make_codes(50_000, prefix="BIG")
    release = asyncio.Event()

    async with aiohttp.ClientSession(base_url=url) as session:
        list_id = await create_list_with_codes(session, codes)
        status, early = await post(session, f"/v1/lists/{list_id}/claims", {"user_id": "early"})
        assert status == 201

        # In flight when SIGTERM arrives: an upload, single claims and a batch claim, each with
        # half its body sent and the rest held back.
        claims_path = f"/v1/lists/{list_id}/claims"
        upload = asyncio.create_task(
            slow_post(
                session,
                f"/v1/lists/{list_id}/uploads?filename=big.csv",
                codes_csv(big).encode(),
                "text/csv",
                release,
            )
        )
        claims = [
            asyncio.create_task(
                slow_post(
                    session,
                    claims_path,
                    json.dumps({"user_id": f"slow-{n}", "idempotency_key": "k"}).encode(),
                    "application/json",
                    release,
                )
            )
            for n in range(SLOW_CLAIMS)
        ]
        batch = asyncio.create_task(
            slow_post(
                session,
                f"{claims_path}/batch",
                json.dumps({"user_ids": BATCH_USERS}).encode(),
                "application/json",
                release,
            )
        )

        async def upload_in_progress() -> bool:
            uploads = (await get(session, f"/v1/lists/{list_id}/uploads"))["uploads"]
            return any(u["status"] == "in_progress" and u["rows"] > 0 for u in uploads)

        deadline = time.monotonic() + 20
        while not await upload_in_progress():
            assert time.monotonic() < deadline, "the upload never showed progress"
            await asyncio.sleep(0.02)

        exiting = asyncio.create_task(asyncio.to_thread(server_process.terminate))
        # Shutdown began once the listener is gone; the held-back requests are still open.
        deadline = time.monotonic() + 10
        while not await refuses_new_connections(url):
            assert time.monotonic() < deadline, "voucherd kept accepting connections"
            await asyncio.sleep(0.02)
        assert not exiting.done(), "voucherd exited with requests still in flight"
        release.set()

        answers = await asyncio.gather(upload, batch, *claims, return_exceptions=True)
        exit_code = await exiting

    dropped = [repr(answer) for answer in answers if isinstance(answer, BaseException)]
    assert not dropped, (
        f"{len(dropped)} of {len(answers)} requests in flight at SIGTERM got no answer:"
        f" {dropped[0]}\n{server_process.log()}"
    )
    replies = [answer for answer in answers if not isinstance(answer, BaseException)]
    (upload_status, uploaded), (batch_status, batch_reply), *claim_replies = replies
    assert exit_code == 0, server_process.log()
    assert upload_status == 201, uploaded
    assert (uploaded["status"], uploaded["accepted"]) == ("completed", len(big))
    assert [status for status, _ in claim_replies] == [201] * SLOW_CLAIMS
    assert batch_status == 200, batch_reply
    assert batch_reply["failed"] == []
    assert len(batch_reply["claims"]) == len(BATCH_USERS)
    assert "journal flushed and closed" in server_process.log()

    acknowledged: dict[tuple[str, str], str] = {("early", ""): early["claim"]["code"]}
    for _, reply in claim_replies:
        acknowledged[(reply["claim"]["user_id"], "k")] = reply["claim"]["code"]
    for made in batch_reply["claims"]:
        acknowledged[(made["user_id"], "")] = made["code"]
    assert len(set(acknowledged.values())) == len(acknowledged)

    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=url) as session:
        for (user_id, key), code in acknowledged.items():
            status, reply = await post(
                session, claims_path, {"user_id": user_id, "idempotency_key": key}
            )
            assert (status, reply["claim"]["code"]) == (200, code)
        listing = await get(session, f"/v1/lists/{list_id}")
        assert listing["codes"]["uploaded"] == len(codes) + len(big)
        assert listing["codes"]["distributed"] == len(acknowledged)
        assert_balanced(listing)
        uploads = (await get(session, f"/v1/lists/{list_id}/uploads"))["uploads"]
        assert [u["status"] for u in uploads] == ["completed", "completed"]


async def test_sigterm_on_an_idle_server_exits_with_status_0(server_process: ServerProcess) -> None:
    server_process.start()
    await server_process.wait_ready()

    exit_code = await asyncio.to_thread(server_process.terminate)

    assert exit_code == 0, server_process.log()
    assert "journal flushed and closed" in server_process.log()


async def test_a_request_outlasting_the_shutdown_timeout_is_cut_off_after_it_not_twice_it(
    server_process: ServerProcess,
) -> None:
    server_process.env["VOUCHERD_SHUTDOWN_TIMEOUT"] = "4"
    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        list_id = await create_list_with_codes(session, make_codes(3))
    # A claim whose body never arrives in full: it waits for the rest until it is cut off.
    _, writer = await asyncio.open_connection("127.0.0.1", server_process.port)
    writer.write(
        f"POST /v1/lists/{list_id}/claims HTTP/1.1\r\nHost: x\r\n".encode()
        + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"user_id": '
    )
    await writer.drain()
    await asyncio.sleep(0.5)
    started = time.monotonic()
    exit_code = await asyncio.to_thread(server_process.terminate)
    took = time.monotonic() - started
    writer.close()
    assert exit_code == 0, server_process.log()
    assert "1 requests cut off after 4 s" in server_process.log()
    # 4 s for the request, then a short grace; twice the timeout would be 8 s.
    assert took < 7, took
