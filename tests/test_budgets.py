"""Budgets: what requests in flight may hold at once, in all. A request that would pass one is
refused at once with 503 and `Retry-After`, changes nothing, and succeeds once the budget has
room again.

| budget        | what it counts                                   | setting                      |
|---------------|--------------------------------------------------|------------------------------|
| `body_bytes`  | bytes of JSON bodies still arriving              | `max_body_bytes_in_flight`   |
| `batch_users` | users of batch claims and batch rewards          | `max_batch_users_in_flight`  |
| `uploads`     | uploads being read                               | `max_uploads_in_flight`      |
| `subscribers` | event subscribers over WebSocket                 | `max_subscribers`            |

To keep a batch in flight for as long as a test needs, the test holds SQLite's write lock from a
connection of its own (as tests/test_overload.py does): the batch waits for its commit.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import (
    Client,
    RawReply,
    assert_balanced,
    call,
    codes_csv,
    error_code,
    get_list,
    list_with_codes,
    make_codes,
    read_reply,
    request_head,
)
from test_campaigns import create_campaign
from test_events import big_user, slow_subscriber
from test_overload import until, write_lock

from voucherd.persistence.journal import Journal
from voucherd.server.budget import Budget
from voucherd.server.keys import BUDGETS, DIRECTORY, JOURNAL, STREAM
from voucherd.settings import Settings

ClientFactory = Callable[[Settings], Awaitable[Client]]


def assert_refused(status: int, reply: Any, retry_after: str | None) -> None:
    assert status == 503, reply
    assert error_code(reply) == "overloaded"
    assert retry_after is not None
    assert retry_after.isdigit()
    assert int(retry_after) >= 1


async def post(client: Client, path: str, body: Any) -> tuple[int, Any, str | None]:
    response = await client.post(path, json=body)
    return response.status, await response.json(), response.headers.get("Retry-After")


async def trays_are_empty(client: Client, users: list[str]) -> None:
    for user in users:
        status, reply = await call(client, "GET", f"/v1/users/{user}/vouchers")
        assert (status, reply) == (200, {"vouchers": [], "has_more": False})


async def metric(client: Client, name: str, budget: str) -> float:
    text = await (await client.get("/metrics")).text()
    found = re.search(rf'^{name}{{budget="{budget}"}} (\S+)$', text, re.MULTILINE)
    assert found, f"{name} for {budget} is not in /metrics"
    return float(found.group(1))


# -- batch users -------------------------------------------------------------------------------


async def test_a_batch_past_the_users_in_flight_is_refused_at_once_and_claims_nothing(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", max_batch_users=1000, max_batch_users_in_flight=1500
    )
    client = await start_client(settings)
    list_id = await list_with_codes(client, make_codes(5000))
    budget: Budget = client.app[BUDGETS].batch_users
    journal: Journal = client.app[JOURNAL]
    path = f"/v1/lists/{list_id}/claims/batch"
    first = [f"a-{n}" for n in range(1000)]
    refused = [f"b-{n}" for n in range(1000)]
    fits = [f"c-{n}" for n in range(500)]
    async with write_lock(settings.database):
        waiting = asyncio.create_task(post(client, path, {"user_ids": first}))
        await until(lambda: journal.queued_records >= 1, "the first batch waiting for its commit")
        assert budget.used == 1000
        # 1,000 more would pass 1,500: refused while the first still waits, so without it.
        assert_refused(*await post(client, path, {"user_ids": refused}))
        assert budget.used == 1000
        # 500 more fit, and wait like the first.
        fitting = asyncio.create_task(post(client, path, {"user_ids": fits}))
        await until(lambda: budget.used == 1500, "the second batch held")
        assert not waiting.done()
        assert not fitting.done()
    for task, users in ((waiting, first), (fitting, fits)):
        status, reply, _ = await task
        assert status == 200, reply
        assert sorted(claim["user_id"] for claim in reply["claims"]) == sorted(users)
    assert budget.used == 0
    await trays_are_empty(client, refused[:3])
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == 1500
    assert_balanced(listing)
    assert await metric(client, "voucherd_budget_refusals_total", "batch_users") == 1
    assert await metric(client, "voucherd_budget_used", "batch_users") == 0
    assert await metric(client, "voucherd_budget_limit", "batch_users") == 1500
    # With room again, the refused batch goes through.
    status, reply, _ = await post(client, path, {"user_ids": refused})
    assert status == 200, reply
    assert len(reply["claims"]) == 1000


async def test_batch_rewards_share_the_budget_of_batch_claims(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", max_batch_users=1000, max_batch_users_in_flight=1000
    )
    client = await start_client(settings)
    claimed = await list_with_codes(client, make_codes(2000, prefix="A"))
    rewarded = await list_with_codes(client, make_codes(2000, prefix="B"), tag="rewards")
    campaign = await create_campaign(client, [rewarded])
    journal: Journal = client.app[JOURNAL]
    users = [f"r-{n}" for n in range(10)]
    rewards = f"/v1/campaigns/{campaign['id']}/rewards/batch"
    async with write_lock(settings.database):
        waiting = asyncio.create_task(
            post(client, f"/v1/lists/{claimed}/claims/batch", {"user_ids": make_codes(1000, "u")})
        )
        await until(lambda: journal.queued_records >= 1, "the batch claim waiting")
        assert_refused(*await post(client, rewards, {"user_ids": users}))
    status, reply, _ = await waiting
    assert status == 200, reply
    await trays_are_empty(client, users)
    assert (await get_list(client, rewarded))["codes"]["distributed"] == 0
    status, reply, _ = await post(client, rewards, {"user_ids": users})
    assert status == 200, reply
    assert [result["rewarded"] for result in reply["results"]] == [True] * len(users)


async def test_a_batch_reply_the_client_does_not_read_keeps_holding_the_budget(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    """A batch's reply is written before the budget is given back: 50,000 claims make about
    11 MB of reply, more than the sockets take in while the client does not read."""
    settings = Settings(
        data_dir=tmp_path / "data", max_batch_users=50_000, max_batch_users_in_flight=60_000
    )
    client = await start_client(settings)
    list_id = await list_with_codes(client, make_codes(80_000))
    budget: Budget = client.app[BUDGETS].batch_users
    actor = client.app[DIRECTORY].actor(list_id)
    path = f"/v1/lists/{list_id}/claims/batch"
    body = json.dumps({"user_ids": [f"slow-{n}" for n in range(50_000)]}).encode()
    head = request_head(
        "POST", path, {"Content-Type": "application/json", "Content-Length": str(len(body))}
    )
    unread = await send_part(client, head, body)
    await until(lambda: actor.info.counts.distributed == 50_000, "the batch's claims committed")
    await asyncio.sleep(0.5)
    assert budget.used == 50_000
    assert_refused(*await post(client, path, {"user_ids": [f"late-{n}" for n in range(20_000)]}))
    # Once the client reads its reply, the budget has room again.
    reply = await asyncio.wait_for(read_reply(unread.reader), 30)
    unread.writer.close()
    assert reply.status == 200
    assert len(reply.json()["claims"]) == 50_000
    await until(lambda: budget.used == 0, "the budget given back")
    status, claimed, _ = await post(
        client, path, {"user_ids": [f"late-{n}" for n in range(20_000)]}
    )
    assert status == 200, claimed


# -- bodies still arriving ---------------------------------------------------------------------


def batch_body(prefix: str, size: int) -> bytes:
    """A batch claim's body of a little under `size` bytes."""
    # Each user id takes its characters, two quotes and a comma and space.
    users = [f"{prefix}-{n:08d}" for n in range(size // (len(prefix) + 13))]
    body = json.dumps({"user_ids": users}).encode()
    assert len(body) <= size
    return body


@dataclass
class Sending:
    """A request sent over a connection of its own, its body not yet whole."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def finish(self, rest: bytes) -> RawReply:
        self.writer.write(rest)
        await self.writer.drain()
        try:
            return await asyncio.wait_for(read_reply(self.reader), 10)
        finally:
            self.writer.close()


async def send_part(client: Client, head: bytes, part: bytes) -> Sending:
    """Open a connection and send a request's head and the start of its body."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head + part)
    await writer.drain()
    return Sending(reader, writer)


def chunked(data: bytes, *, last: bool) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n" + (b"0\r\n\r\n" if last else b"")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_past_the_bytes_in_flight_is_refused_while_it_arrives(
    start_client: ClientFactory, tmp_path: Path, framing: str
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        max_json_bytes=400_000,
        max_body_bytes_in_flight=600_000,
        max_batch_users=100_000,
    )
    client = await start_client(settings)
    list_id = await list_with_codes(client, make_codes(30_000))
    budget: Budget = client.app[BUDGETS].body_bytes
    path = f"/v1/lists/{list_id}/claims/batch"
    slow, refused = batch_body("slow", 380_000), batch_body("late", 380_000)

    def head(body: bytes) -> bytes:
        framed = (
            {"Content-Length": str(len(body))}
            if framing == "content-length"
            else {"Transfer-Encoding": "chunked"}
        )
        return request_head("POST", path, {"Content-Type": "application/json", **framed})

    def part(body: bytes, start: int, end: int) -> bytes:
        data = body[start:end]
        return data if framing == "content-length" else chunked(data, last=end >= len(body))

    # The first body stops two thirds of the way, holding its bytes.
    first = await send_part(client, head(slow), part(slow, 0, 250_000))
    await until(lambda: budget.used >= 250_000, "the first body's bytes held")
    # The second comes in two parts; its second would pass 600,000 bytes in all.
    second = await send_part(client, head(refused), part(refused, 0, 100_000))
    await until(lambda: budget.used >= 350_000, "the second body's first part held")
    reply = await second.finish(part(refused, 100_000, len(refused)))
    assert_refused(reply.status, reply.json(), reply.headers.get("retry-after"))
    await until(lambda: budget.used == 250_000, "the refused body's bytes given back")
    # The first completes as it would have, and gives its bytes back.
    reply = await first.finish(part(slow, 250_000, len(slow)))
    assert reply.status == 200, reply
    assert len(reply.json()["claims"]) == len(json.loads(slow)["user_ids"])
    assert budget.used == 0
    await trays_are_empty(client, ["late-00000000", "late-00000001"])
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == len(json.loads(slow)["user_ids"])
    # The refused body, sent again whole, is claimed.
    status, claimed, _ = await post(client, path, json.loads(refused))
    assert status == 200, claimed


# -- uploads -----------------------------------------------------------------------------------


async def test_an_upload_past_the_uploads_in_flight_is_refused_and_stores_nothing(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", max_uploads_in_flight=1)
    client = await start_client(settings)
    first_list = await list_with_codes(client, make_codes(10, prefix="A"))
    second_list = await list_with_codes(client, make_codes(10, prefix="B"), tag="second")
    budget: Budget = client.app[BUDGETS].uploads
    rows = codes_csv(make_codes(1000, prefix="S")).encode()
    stalled = await send_part(
        client,
        request_head(
            "POST",
            f"/v1/lists/{first_list}/uploads",
            {"Content-Type": "text/csv", "Content-Length": str(len(rows))},
        ),
        rows[:5000],
    )
    await until(lambda: budget.used == 1, "the stalled upload held")
    late = codes_csv(make_codes(100, prefix="L"))
    response = await client.post(
        f"/v1/lists/{second_list}/uploads", data=late, headers={"Content-Type": "text/csv"}
    )
    assert_refused(response.status, await response.json(), response.headers.get("Retry-After"))
    status, history = await call(client, "GET", f"/v1/lists/{second_list}/uploads")
    assert status == 200, history
    assert len(history["uploads"]) == 1
    assert (await get_list(client, second_list))["codes"]["uploaded"] == 10
    reply = await stalled.finish(rows[5000:])
    assert reply.status == 201, reply
    assert reply.json()["accepted"] == 1000
    assert budget.used == 0
    response = await client.post(
        f"/v1/lists/{second_list}/uploads", data=late, headers={"Content-Type": "text/csv"}
    )
    assert response.status == 201, await response.text()
    assert (await get_list(client, second_list))["codes"]["uploaded"] == 110


# -- event subscribers -------------------------------------------------------------------------


async def test_a_subscriber_past_the_limit_gets_503_and_pages_still_work(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", max_subscribers=1)
    client = await start_client(settings)
    budget: Budget = client.app[BUDGETS].subscribers
    first = await client.ws_connect("/v1/events")
    await until(lambda: budget.used == 1, "the first subscriber held")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/events")
    assert refused.value.status == 503
    assert refused.value.headers is not None
    assert refused.value.headers.get("Retry-After", "").isdigit()
    # Reading events page by page holds no subscription.
    status, page = await call(client, "GET", "/v1/events")
    assert status == 200, page
    await first.close()
    await until(lambda: budget.used == 0, "the first subscriber gone")
    second = await client.ws_connect("/v1/events")
    await second.close()


async def test_a_subscriber_being_closed_keeps_its_place_until_it_takes_the_close(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", max_subscribers=1, event_buffer=5)
    client = await start_client(settings)
    list_id = await list_with_codes(client, make_codes(4000), description="d" * 2000)
    budget: Budget = client.app[BUDGETS].subscribers
    stream = client.app[STREAM]
    async with slow_subscriber(client) as first:
        await until(lambda: stream.subscribers == 1, "the first subscriber subscribed")
        # 2.5 MB of events a batch: the server is soon stuck writing to a socket the
        # subscriber does not read, gives up on it and closes it, and the close waits for
        # its answer.
        for n in range(4):
            users = [big_user(f"u-{n}-{m}") for m in range(1000)]
            path = f"/v1/lists/{list_id}/claims/batch"
            status, reply, _ = await post(client, path, {"user_ids": users})
            assert status == 200, reply
        await until(lambda: stream.subscribers == 0, "the first subscriber given up on")
        assert budget.used == 1
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/v1/events")
        assert refused.value.status == 503
        # Once it reads its way to the close, its place is free.
        while (await first.receive()).type is not aiohttp.WSMsgType.CLOSE:
            pass
        assert first.close_code == 4008
        await until(lambda: budget.used == 0, "the first subscriber's place given back")
    second = await client.ws_connect("/v1/events")
    await second.close()


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            {"max_json_bytes": 1000, "max_body_bytes_in_flight": 999},
            "max_body_bytes_in_flight must be at least max_json_bytes",
        ),
        (
            {"max_batch_users": 10, "max_batch_users_in_flight": 9},
            "max_batch_users_in_flight must be at least max_batch_users",
        ),
        ({"max_uploads_in_flight": 0}, "max_uploads_in_flight must be positive"),
        ({"max_subscribers": 0}, "max_subscribers must be positive"),
    ],
)
def test_a_budget_smaller_than_one_request_is_refused(
    tmp_path: Path, overrides: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        Settings(data_dir=tmp_path, **overrides).validate()
