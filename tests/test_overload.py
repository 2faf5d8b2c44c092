"""Overload: when a list's mailbox or the journal's queue is full, a request is refused at once
with `503` and `Retry-After` instead of queueing without bound, and memory stays bounded.

The limits are `mailbox_size` (requests waiting for one list's actor) and `journal_queue_size`
(records waiting for the journal's writer). To show that a refusal does not wait for the journal,
two tests hold SQLite's write lock from a connection of their own: the writer cannot commit
anything meanwhile, so every reply that arrives while the lock is held was decided without it.
The writer waits up to SQLite's busy timeout (5 s) for the lock; the tests let go well before.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from support import (
    Client,
    ServerProcess,
    assert_balanced,
    call,
    codes_csv,
    create_list,
    get_list,
    list_body,
    list_with_codes,
    make_codes,
)

from voucherd import errors
from voucherd.persistence.journal import Journal
from voucherd.server.keys import CODE_INDEX, DIRECTORY, JOURNAL
from voucherd.settings import Settings

ClientFactory = Callable[[Settings], Awaitable[Client]]


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    retry_after: str | None


@asynccontextmanager
async def wide_session(client: Client) -> AsyncIterator[aiohttp.ClientSession]:
    """A connection pool without a cap, so every request of a flood is on the wire at once."""
    async with aiohttp.ClientSession(
        base_url=f"http://{client.host}:{client.port}",
        connector=aiohttp.TCPConnector(limit=0),
    ) as session:
        yield session


async def claim(session: aiohttp.ClientSession, list_id: int, user_id: str) -> Reply:
    async with session.post(f"/v1/lists/{list_id}/claims", json={"user_id": user_id}) as response:
        body: dict[str, Any] = json.loads(await response.read())
        return Reply(response.status, body, response.headers.get("Retry-After"))


def assert_overloaded(reply: Reply) -> None:
    """A refusal for overload: 503, a Retry-After of whole seconds, the contract's error body."""
    assert reply.status == 503, reply
    assert reply.retry_after is not None, reply
    assert reply.retry_after.isdigit(), reply
    assert int(reply.retry_after) >= 1, reply
    assert set(reply.body) == {"error"}, reply
    assert reply.body["error"]["code"] == "overloaded", reply
    assert reply.body["error"]["message"], reply


def assert_each_code_once(replies: list[Reply]) -> list[str]:
    codes = [reply.body["claim"]["code"] for reply in replies if reply.status == 201]
    assert len(codes) == len(set(codes)), "a code was handed out twice"
    return codes


@asynccontextmanager
async def write_lock(database: Path) -> AsyncIterator[sqlite3.Connection]:
    """SQLite's write lock, held by a connection of the test's own until the block ends."""
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, within: float = 4.0
) -> None:
    """Wait for a condition on the server's state, or on what its API answers. `within` stays
    under SQLite's 5 s busy timeout: only a server that never got there would reach it."""
    deadline = time.monotonic() + within
    while not await _holds(condition):
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.005)


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    held = condition()
    return await held if isinstance(held, Awaitable) else held


async def test_a_full_journal_queue_refuses_claims_at_once_while_the_writer_is_stuck(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    # A mailbox large enough that only the journal's limit can refuse.
    settings = Settings(data_dir=tmp_path / "data", journal_queue_size=32, mailbox_size=10_000)
    client = await start_client(settings)
    list_id = await list_with_codes(client, make_codes(1000))
    journal: Journal = client.app[JOURNAL]
    flood = 400
    async with wide_session(client) as session:
        async with write_lock(settings.database):
            tasks = [asyncio.create_task(claim(session, list_id, f"u-{n}")) for n in range(flood)]
            # Every claim is either refused already or waiting in the journal's queue.
            await until(
                lambda: sum(t.done() for t in tasks) + journal.queued_records == flood,
                "every claim refused or queued",
            )
            answered = [task.result() for task in tasks if task.done()]
            # The writer has committed nothing, so every answer so far is a refusal made
            # without waiting for it; and the queue never held more than its limit allows
            # (one entry may exceed it alone, when the queue was empty).
            assert answered, "no claim was refused"
            for reply in answered:
                assert_overloaded(reply)
            waiting = journal.queued_records
            assert waiting >= 1
        replies = await asyncio.gather(*tasks)
    created = [reply for reply in replies if reply.status == 201]
    refused = [reply for reply in replies if reply.status != 201]
    # Once the lock is gone, exactly the queued claims are written and answered.
    assert len(created) == waiting
    assert len(refused) == flood - waiting
    for reply in refused:
        assert_overloaded(reply)
    codes = assert_each_code_once(replies)
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == len(codes)
    assert_balanced(listing)


async def test_a_full_mailbox_refuses_claims_at_once_while_the_list_is_busy(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    mailbox = 16
    settings = Settings(data_dir=tmp_path / "data", mailbox_size=mailbox, journal_queue_size=64)
    client = await start_client(settings)
    list_id = await list_with_codes(client, make_codes(1000))
    actor = client.app[DIRECTORY].actor(list_id)
    flood = 300
    async with wide_session(client) as session:
        async with write_lock(settings.database):
            # An edit makes the list's actor wait for its commit, which cannot happen yet:
            # claims meanwhile wait in its mailbox, up to its size.
            edit = asyncio.create_task(
                session.patch(f"/v1/lists/{list_id}", json={"name": "Renamed under load"})
            )
            journal: Journal = client.app[JOURNAL]
            await until(
                lambda: actor.mailbox_depth == 0 and journal.queued_records == 1,
                "the edit waiting in the journal",
            )
            tasks = [asyncio.create_task(claim(session, list_id, f"u-{n}")) for n in range(flood)]
            await until(
                lambda: sum(t.done() for t in tasks) == flood - mailbox,
                "every claim past the mailbox's size refused",
            )
            assert actor.mailbox_depth == mailbox
            for task in tasks:
                if task.done():
                    assert_overloaded(task.result())
            assert not edit.done()
        replies = await asyncio.gather(*tasks)
        async with await edit as edited:
            assert edited.status == 200, await edited.text()
    created = [reply for reply in replies if reply.status == 201]
    assert len(created) == mailbox
    for reply in replies:
        if reply.status != 201:
            assert_overloaded(reply)
    codes = assert_each_code_once(replies)
    listing = await get_list(client, list_id)
    assert listing["name"] == "Renamed under load"
    assert listing["codes"]["distributed"] == len(codes) == mailbox
    assert_balanced(listing)


async def test_a_flood_against_tiny_limits_gets_refusals_and_every_other_claim_succeeds(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    """No lock this time: the journal is merely busy with its fsyncs while the flood arrives."""
    settings = Settings(data_dir=tmp_path / "data", mailbox_size=8, journal_queue_size=16)
    client = await start_client(settings)
    list_id = await list_with_codes(client, make_codes(3000))
    flood = 1000
    async with wide_session(client) as session:
        replies = await asyncio.gather(*(claim(session, list_id, f"u-{n}") for n in range(flood)))
    statuses = {reply.status for reply in replies}
    assert statuses <= {201, 503}, statuses
    refused = [reply for reply in replies if reply.status == 503]
    assert refused, "a flood 40 times the limits was never refused"
    for reply in refused:
        assert_overloaded(reply)
    codes = assert_each_code_once(replies)
    assert codes, "nothing got through"
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == len(codes)
    assert_balanced(listing)
    # Refused users retry, a few at a time as a client honouring Retry-After would, and each
    # gets a code then.
    users = {f"u-{n}": reply for n, reply in enumerate(replies)}
    waiting = [user for user, reply in users.items() if reply.status == 503]
    async with wide_session(client) as session:

        async def retry() -> None:
            tries = 0
            while waiting:
                user = waiting.pop()
                users[user] = reply = await claim(session, list_id, user)
                if reply.status == 503:
                    tries += 1
                    assert tries < 1000, "retries never got through"
                    waiting.append(user)
                    await asyncio.sleep(0.001)

        await asyncio.gather(*(retry() for _ in range(4)))
        repeat = await claim(session, list_id, "u-0")
    assert repeat.status == 200
    assert repeat.body["claim"] == users["u-0"].body["claim"]
    assert len(set(assert_each_code_once(list(users.values())))) == flood
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == flood
    assert_balanced(listing)


# -- memory under a flood ----------------------------------------------------------------------


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/PID/status")


# Headroom for what a flood may legitimately leave behind: pymalloc arenas and glibc heap kept
# after use, buffers and a parsed request queue per connection (aiohttp parses at most 32
# pipelined requests ahead per connection, then stops reading), prometheus series, the claims
# made. Measured here: about 25 MiB for the first flood, then about 2 MiB per further flood of
# 20,000 (the claims it made, kept for idempotency). A server that queued the flood instead of
# refusing it would hold all 20,000 requests at once, each with its parsed request, handler
# task and future (several KiB each), and would grow with the flood instead of levelling off.
GROWTH_BOUND = 100 * 1024**2
CONNECTIONS = 200
PIPELINED = 100  # requests each connection sends at once, before reading any reply
FLOOD = CONNECTIONS * PIPELINED


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return Reply(status, json.loads(body), headers.get("retry-after"))


async def pipelined_claims(port: int, list_id: int, users: list[str]) -> list[Reply]:
    """Every request written at once on one connection, then every reply read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for user in users:
            body = json.dumps({"user_id": user}).encode()
            writer.write(
                f"POST /v1/lists/{list_id}/claims HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                .encode() + body
            )  # fmt: skip
        await writer.drain()
        return [await read_reply(reader) for _ in users]
    finally:
        writer.close()
        await writer.wait_closed()


async def test_an_upload_waits_for_room_in_a_small_journal_queue_instead_of_failing(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    # Chunks of 200 to 800 codes against a queue of 100 records: each chunk is more than the
    # queue holds, so the next one must wait for the last to be written, not be refused.
    settings = Settings(data_dir=tmp_path / "data", journal_queue_size=100, upload_chunk_codes=200)
    client = await start_client(settings)
    list_id = await list_with_codes(client, make_codes(20_000, prefix="Q"))
    listing = await get_list(client, list_id)
    assert listing["codes"]["available"] == 20_000
    assert_balanced(listing)


@dataclass
class HalfSent:
    """An upload whose first chunk is stored, and whose body ends when told."""

    reply: asyncio.Future[aiohttp.ClientResponse]
    end: asyncio.Event


async def half_sent(client: Client, list_id: int, codes: list[str]) -> HalfSent:
    """Start an upload of `codes`, one chunk's worth, and wait until that chunk is stored."""
    end = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield codes_csv(codes).encode()
        await end.wait()

    reply = asyncio.ensure_future(
        client.post(
            f"/v1/lists/{list_id}/uploads", data=body(), headers={"Content-Type": "text/csv"}
        )
    )
    journal = client.app[JOURNAL]

    async def stored() -> bool:
        # The upload's progress is written with its chunk; the queue empties right after.
        uploads = (await call(client, "GET", f"/v1/lists/{list_id}/uploads"))[1]["uploads"]
        accepted = bool(uploads) and uploads[0]["accepted"] == len(codes)
        return accepted and not journal.queued_records

    await until(stored, "the chunk stored")
    return HalfSent(reply, end)


async def test_an_upload_ending_while_claims_fill_the_journal_queue_completes(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    """The upload's last write waits for room, as its chunks do, rather than failing it with a
    503 that would send the client back with a file whose codes still count as taken."""
    settings = Settings(data_dir=tmp_path / "data", journal_queue_size=4, upload_chunk_codes=500)
    client = await start_client(settings)
    other = await list_with_codes(client, make_codes(200, prefix="O"))
    list_id = (await create_list(client, tag="upload"))["id"]
    journal = client.app[JOURNAL]
    upload = await half_sent(client, list_id, make_codes(500, prefix="U"))
    async with wide_session(client) as session:
        async with write_lock(settings.database):
            # One claim at a time, so that each is a record of its own and the queue fills
            # to its very last place: claims sent at once come in turns of any size, and a
            # turn larger than the room left is refused whole, leaving the queue short. A
            # short queue fills well within the writer's 5 s wait for the lock.
            claims: list[asyncio.Future[Reply]] = []
            while len(claims) < settings.journal_queue_size:
                claims.append(asyncio.ensure_future(claim(session, other, f"u-{len(claims)}")))
                await until(lambda: journal.queued_records == len(claims), "the claim queued")
            upload.end.set()
            await asyncio.sleep(0.2)  # the upload's end meets the full queue
        response = await upload.reply
        assert response.status == 201, await response.text()
        reply = await response.json()
        assert (reply["status"], reply["accepted"]) == ("completed", 500), reply
        assert [reply.status for reply in await asyncio.gather(*claims)] == [201] * len(claims)
    listing = await get_list(client, list_id)
    assert listing["codes"]["uploaded"] == 500
    assert_balanced(listing)


async def test_a_file_sent_again_at_once_after_its_upload_failed_unrecorded_is_accepted(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    """The journal cannot write (another connection holds SQLite's lock past its 5 s wait)
    when an upload ends, nor when its failure is to be recorded: the client is told 503, and
    the same file sent at once is accepted whole, though the first upload still reads in
    progress in the database until its failure is recorded a little later."""
    settings = Settings(data_dir=tmp_path / "data", upload_chunk_codes=500)
    client = await start_client(settings)
    list_id = (await create_list(client))["id"]
    codes = make_codes(500, prefix="U")
    upload = await half_sent(client, list_id, codes)
    async with write_lock(settings.database):
        upload.end.set()
        response = await upload.reply
    assert response.status == 503, await response.text()
    path = f"/v1/lists/{list_id}/uploads"
    headers = {"Content-Type": "text/csv"}
    response = await client.post(path, data=codes_csv(codes), headers=headers)
    assert response.status == 201, await response.text()
    reply = await response.json()
    assert (reply["status"], reply["accepted"]) == ("completed", 500), reply
    await until(lambda: not client.app[CODE_INDEX].failing, "the failure recorded")
    states = [upload["status"] for upload in (await call(client, "GET", path))[1]["uploads"]]
    assert states == ["failed", "completed"]
    listing = await get_list(client, list_id)
    assert (listing["codes"]["uploaded"], listing["codes"]["available"]) == (500, 500)


async def test_memory_stays_bounded_under_a_flood_far_beyond_capacity(
    server_process: ServerProcess,
) -> None:
    # The codes go in first, under the default limits: a journal queue smaller than two
    # upload chunks refuses every upload of more than one chunk.
    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        async with session.post("/v1/lists", json=list_body()) as response:
            list_id = (await response.json())["id"]
        async with session.post(
            f"/v1/lists/{list_id}/uploads",
            data=codes_csv(make_codes(FLOOD)),
            headers={"Content-Type": "text/csv"},
        ) as response:
            assert response.status == 201, await response.text()
    assert server_process.terminate() == 0
    server_process.env.update({"VOUCHERD_MAILBOX_SIZE": "16", "VOUCHERD_JOURNAL_QUEUE_SIZE": "32"})
    server_process.start()
    await server_process.wait_ready()
    assert server_process.process is not None
    pid = server_process.process.pid
    port = server_process.port
    # Warm up: every code path run once, the way the flood will run it.
    await asyncio.gather(
        *(pipelined_claims(port, list_id, [f"warm-{c}-{n}" for n in range(PIPELINED)])
          for c in range(20))
    )  # fmt: skip
    before = resident_bytes(pid)
    peak = before

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, resident_bytes(pid))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        batches = await asyncio.gather(
            *(pipelined_claims(port, list_id, [f"u-{c}-{n}" for n in range(PIPELINED)])
              for c in range(CONNECTIONS))
        )  # fmt: skip
    finally:
        watcher.cancel()
    after = resident_bytes(pid)
    peak = max(peak, after)
    replies = [reply for batch in batches for reply in batch]
    statuses = {status: sum(r.status == status for r in replies) for status in {201, 503}}
    assert len(replies) == FLOOD
    assert statuses[201] + statuses[503] == FLOOD, statuses
    assert statuses[503] > 0, "a flood far beyond the limits was never refused"
    for reply in replies:
        if reply.status == 503:
            assert_overloaded(reply)
    assert_each_code_once(replies)
    print(
        f"RSS before {before / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB,"
        f" after {after / 2**20:.1f} MiB; replies {statuses}"
    )
    assert peak - before < GROWTH_BOUND
    assert after - before < GROWTH_BOUND


ROUNDS = 5


async def test_the_failures_of_batches_refused_by_a_paused_list_do_not_pile_up(
    client: Client,
) -> None:
    """A refused batch's failures are freed with its reply. The server collects cycles
    rarely (see `serve`), so what only a full collection frees piles up under a stream of
    refused batches: once, 60 refusals of 100,000 users held 1.9 GB."""
    list_id = await list_with_codes(client, make_codes(3))
    response = await client.post(f"/v1/lists/{list_id}/pause")
    assert response.status == 200
    gc.collect()
    gc.disable()
    try:
        for round_ in range(ROUNDS):
            users = [f"r{round_}-{n}" for n in range(2_000)]
            response = await client.post(
                f"/v1/lists/{list_id}/claims/batch", json={"user_ids": users}
            )
            reply = await response.json()
            assert response.status == 200, reply
            assert {failed["error"]["code"] for failed in reply["failed"]} == {"list_paused"}
        del reply
        left = [o for o in gc.get_objects() if isinstance(o, errors.ListPaused)]
    finally:
        gc.enable()
    # At most the last batch's own (one a slice, its reply just sent), not every round's.
    assert len(left) <= 2, len(left)
