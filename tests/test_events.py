"""The event stream (API section Events): one reward event per code handed out, numbered without
gaps in the order it was made durable; WebSocket subscribers that resume without losing or
repeating an event, across restarts and `kill -9`; slow subscribers that never stall claims
(invariant 7); retention; and the same events page by page over plain HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import aiohttp
import msgpack
import pytest
from aiohttp import WSMsgType
from conftest import ClientFactory
from support import (
    FUTURE,
    Client,
    ServerProcess,
    assert_balanced,
    codes_csv,
    create_list,
    get_list,
    list_body,
    list_with_codes,
    make_codes,
    to_schema_5,
    upload,
)

from voucherd import clock
from voucherd.clock import parse_time
from voucherd.events import Event
from voucherd.server import watch
from voucherd.server.keys import STREAM
from voucherd.settings import Settings
from voucherd.stream import EventStream, delete_events, read_events

Caller = Client | aiohttp.ClientSession
WebSocket = aiohttp.ClientWebSocketResponse[Literal[True]]
Restart = Callable[[], Awaitable[Client]]

# Long enough that only a stall (an event that never comes, a claim that never ends) reaches it;
# nothing here measures how fast anything is.
WAIT = 20.0

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
RESUME = re.compile(r"resume with since=(\d+)")


# -- helpers -----------------------------------------------------------------------------------


@asynccontextmanager
async def wide_session(client: Client) -> AsyncIterator[aiohttp.ClientSession]:
    """A second connection pool to the same server with no cap on connections, so every request
    of a gather is on the wire at once (the test client's session allows 100)."""
    async with aiohttp.ClientSession(
        base_url=f"http://{client.host}:{client.port}",
        connector=aiohttp.TCPConnector(limit=0),
    ) as session:
        yield session


async def post(caller: Caller, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with caller.post(path, json=body) as response:
        reply: dict[str, Any] = await response.json()
        return response.status, reply


async def get_json(caller: Caller, path: str, **params: Any) -> tuple[int, dict[str, Any]]:
    query = {name: str(value) for name, value in params.items() if value is not None}
    async with caller.get(path, params=query) as response:
        reply: dict[str, Any] = await response.json()
        return response.status, reply


async def claim(
    caller: Caller, list_id: int, user_id: str, key: str = ""
) -> tuple[int, dict[str, Any]]:
    return await post(
        caller, f"/v1/lists/{list_id}/claims", {"user_id": user_id, "idempotency_key": key}
    )


async def claim_batch(caller: Caller, list_id: int, user_ids: list[str]) -> dict[str, Any]:
    status, reply = await post(caller, f"/v1/lists/{list_id}/claims/batch", {"user_ids": user_ids})
    assert status == 200, reply
    return reply


async def transition(caller: Caller, list_id: int, action: str) -> dict[str, Any]:
    status, reply = await post(caller, f"/v1/lists/{list_id}/{action}", {})
    assert status == 200, reply
    return reply


async def page(caller: Caller, **params: Any) -> dict[str, Any]:
    status, reply = await get_json(caller, "/v1/events", **params)
    assert status == 200, reply
    return reply


async def all_events(caller: Caller, since: int = 0, **params: Any) -> list[dict[str, Any]]:
    """Every event after `since`, over plain HTTP, in pages of the largest size allowed."""
    found: list[dict[str, Any]] = []
    while True:
        reply = await page(caller, since=since, limit=10_000, **params)
        if not reply["events"]:
            assert reply["last_seq"] == since
            return found
        found.extend(reply["events"])
        since = reply["last_seq"]
        assert since == found[-1]["seq"]


async def last_seq(caller: Caller) -> int:
    events = await all_events(caller)
    return int(events[-1]["seq"]) if events else 0


async def subscribe(client: Client, **params: Any) -> WebSocket:
    query = {name: str(value) for name, value in params.items() if value is not None}
    ws: WebSocket = await client.ws_connect("/v1/events", params=query)
    return ws


async def next_event(ws: WebSocket) -> dict[str, Any]:
    message = await ws.receive(timeout=WAIT)
    assert message.type is WSMsgType.TEXT, message
    event: dict[str, Any] = json.loads(message.data)
    return event


async def next_events(ws: WebSocket, count: int) -> list[dict[str, Any]]:
    return [await next_event(ws) for _ in range(count)]


async def events_until_close(ws: WebSocket) -> tuple[list[dict[str, Any]], aiohttp.WSMessage]:
    """Read every event frame up to the server's close frame; return both."""
    received: list[dict[str, Any]] = []
    while True:
        message = await ws.receive(timeout=WAIT)
        if message.type is not WSMsgType.TEXT:
            return received, message
        received.append(json.loads(message.data))


def _small_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    family, kind, proto, *_ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@asynccontextmanager
async def slow_subscriber(client: Client, **params: Any) -> AsyncIterator[WebSocket]:
    """A subscriber whose socket holds little and who reads only when told: with large events,
    the server soon cannot write to it and waits for it to drain. Uncompressed, so the bytes
    are as many as the events make."""
    query = {name: str(value) for name, value in params.items() if value is not None}
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(socket_factory=_small_socket)
        ) as session,
        session.ws_connect(client.make_url("/v1/events"), params=query, compress=0) as ws,
    ):
        yield ws


def big_user(name: str) -> str:
    """A user id of 200 characters: with a long list description, each event is about 2.5 kB."""
    return name.ljust(200, ".")


def resume_point(closing: aiohttp.WSMessage) -> int:
    assert closing.type is WSMsgType.CLOSE, closing
    assert closing.data == 4008, closing
    found = RESUME.search(closing.extra or "")
    assert found is not None, closing.extra
    return int(found.group(1))


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [event["seq"] for event in events]


def of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == type_]


def type_counts(events: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(event["type"] for event in events))


def rewarded_data(
    listing: dict[str, Any], code: str, user_id: str, claimed_at: str
) -> dict[str, Any]:
    """The reference product's reward properties for a direct claim, exactly."""
    return {
        "CT Source": "Promo Module",
        "campaignId": None,
        "eventTimestamp": int(parse_time(claimed_at)),
        "listDescription": listing["description"],
        "listExpiry": listing["expires_at"],
        "listTag": listing["tag"],
        "partner": listing["partner"],
        "source": "API",
        "voucherCode": code,
        "voucherListId": listing["id"],
        "userId": user_id,
        "message": None,
    }


async def assert_next_is_only(ws: WebSocket, client: Client, list_id: int) -> None:
    """Nothing else is waiting on `ws`: a fresh event (a pause and an activation of `list_id`)
    is what arrives next."""
    await transition(client, list_id, "pause")
    sentinel = await next_event(ws)
    assert (sentinel["type"], sentinel["data"]["list_id"]) == ("list.status_changed", list_id)
    assert sentinel["data"]["status"] == "paused"
    await transition(client, list_id, "activate")
    await next_event(ws)


async def poll(condition: Callable[[], Awaitable[Any]], within: float = WAIT) -> Any:
    """Wait until `condition()` returns something truthy."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if found := await condition():
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {within} s")


# -- the reward event --------------------------------------------------------------------------


async def test_a_claim_produces_one_reward_event_with_the_reference_properties(
    client: Client,
) -> None:
    codes = make_codes(5)
    # The tag is lowercased on creation, and the event carries it as stored.
    list_id = await list_with_codes(client, codes, tag="HOLI2025")
    listing = await get_list(client, list_id)
    ws = await subscribe(client)

    status, reply = await claim(client, list_id, "u-42")
    assert status == 201, reply
    made = reply["claim"]
    event = await next_event(ws)

    assert set(event) == {"seq", "type", "name", "time", "data"}
    assert event["type"] == "voucher.rewarded"
    assert event["name"] == "CT Partner Voucher Rewarded"
    assert RFC3339_UTC.fullmatch(event["time"]), event["time"]
    assert event["time"] == made["claimed_at"]
    assert event["data"] == {
        "CT Source": "Promo Module",
        "campaignId": None,
        "eventTimestamp": int(parse_time(made["claimed_at"])),
        "listDescription": "Orders above $100",
        "listExpiry": FUTURE,
        "listTag": "holi2025",
        "partner": "Puma",
        "source": "API",
        "voucherCode": made["code"],
        "voucherListId": list_id,
        "userId": "u-42",
        "message": None,
    }
    assert event["data"] == rewarded_data(listing, made["code"], "u-42", made["claimed_at"])
    assert isinstance(event["data"]["eventTimestamp"], int)
    # The upload came first: its event is seq 1, the reward the next one.
    assert event["seq"] == 2

    # A repeat returns the same claim and hands out nothing: no event.
    status, again = await claim(client, list_id, "u-42")
    assert status == 200
    assert again["claim"]["code"] == made["code"]
    await assert_next_is_only(ws, client, list_id)

    # The same event, frame for frame, over plain HTTP.
    stored = of_type(await all_events(client), "voucher.rewarded")
    assert stored == [event]
    await ws.close()


async def test_a_claim_with_a_new_idempotency_key_produces_a_new_event_and_a_repeat_none(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    ws = await subscribe(client)

    first = (await claim(client, list_id, "u-1", key="order-1"))[1]["claim"]
    second = (await claim(client, list_id, "u-1", key="order-2"))[1]["claim"]
    status, _ = await claim(client, list_id, "u-1", key="order-1")
    assert status == 200

    events = await next_events(ws, 2)
    assert [e["data"]["voucherCode"] for e in events] == [first["code"], second["code"]]
    assert [e["data"]["userId"] for e in events] == ["u-1", "u-1"]
    await assert_next_is_only(ws, client, list_id)
    await ws.close()


async def test_a_batch_produces_one_event_per_new_claim_and_none_for_repeats(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(50))
    listing = await get_list(client, list_id)
    status, _ = await claim(client, list_id, "old-1")
    assert status == 201
    ws = await subscribe(client)

    # Two users already hold a code (one from before, one repeated within the batch): the batch
    # makes ten new claims, and only those ten events.
    users = ["old-1", *(f"new-{n}" for n in range(10)), "new-3"]
    reply = await claim_batch(client, list_id, users)
    assert reply["failed"] == []
    fresh = {made["user_id"]: made for made in reply["claims"] if made["user_id"] != "old-1"}
    assert len(fresh) == 10

    events = await next_events(ws, 10)
    assert sorted(e["data"]["userId"] for e in events) == sorted(fresh)
    for event in events:
        made = fresh[event["data"]["userId"]]
        assert event["data"] == rewarded_data(
            listing, made["code"], made["user_id"], made["claimed_at"]
        )
        assert event["name"] == "CT Partner Voucher Rewarded"
    assert seqs(events) == list(range(events[0]["seq"], events[0]["seq"] + 10))
    await assert_next_is_only(ws, client, list_id)

    # A repeat of the whole batch hands out nothing new.
    again = await claim_batch(client, list_id, users)
    assert {made["code"] for made in again["claims"]} >= {made["code"] for made in fresh.values()}
    await assert_next_is_only(ws, client, list_id)
    await ws.close()


async def test_a_refused_claim_produces_no_event(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(1))
    assert (await claim(client, list_id, "u-1"))[0] == 201
    before = await last_seq(client)

    status, reply = await claim(client, list_id, "u-2")
    assert (status, reply["error"]["code"]) == (409, "list_exhausted")
    await transition(client, list_id, "pause")
    status, reply = await claim(client, list_id, "u-3")
    assert (status, reply["error"]["code"]) == (409, "list_paused")

    after = await all_events(client, since=before)
    assert [e["type"] for e in after] == ["list.status_changed"]


# -- numbering ---------------------------------------------------------------------------------


async def test_seq_runs_without_gaps_across_concurrent_claims_status_changes_and_a_restart(
    restartable: Restart,
) -> None:
    client = await restartable()
    lists = [
        await list_with_codes(client, make_codes(200, prefix=f"L{n}-"), tag=f"list-{n}")
        for n in range(4)
    ]
    toggled = (await create_list(client, tag="toggled"))["id"]

    async def toggle() -> None:
        for _ in range(10):
            await transition(client, toggled, "pause")
            await transition(client, toggled, "activate")

    async with wide_session(client) as session:
        # 500 claims on four lists at once, and status changes of a fifth in between.
        results, _ = await asyncio.gather(
            asyncio.gather(
                *(claim(session, lists[n % 4], f"user-{n}") for n in range(500)),
            ),
            toggle(),
        )
    assert [status for status, _ in results] == [201] * 500
    claimed = {reply["claim"]["code"]: reply["claim"] for _, reply in results}
    assert len(claimed) == 500

    events = await all_events(client)
    assert seqs(events) == list(range(1, len(events) + 1))
    rewarded = of_type(events, "voucher.rewarded")
    assert len(rewarded) == 500
    assert {e["data"]["voucherCode"]: (e["data"]["userId"], e["data"]["voucherListId"])
            for e in rewarded} == {
        code: (made["user_id"], made["list_id"]) for code, made in claimed.items()
    }  # fmt: skip
    changes = [e["data"] for e in of_type(events, "list.status_changed")]
    assert [(c["list_id"], c["previous_status"], c["status"]) for c in changes] == [
        (toggled, "active", "paused"),
        (toggled, "paused", "active"),
    ] * 10
    last = events[-1]["seq"]

    # After a restart, numbering goes on from the last event: no gap, no number reused.
    client = await restartable()
    assert await all_events(client) == events
    async with wide_session(client) as session:
        more = await asyncio.gather(
            *(claim(session, lists[n % 4], f"later-{n}") for n in range(100))
        )
    assert [status for status, _ in more] == [201] * 100
    events = await all_events(client)
    assert seqs(events) == list(range(1, last + 101))
    later = events[last:]
    assert {e["data"]["userId"] for e in later} == {f"later-{n}" for n in range(100)}


async def test_reward_events_store_their_lists_properties_once_and_read_back_whole(
    restartable: Restart, settings: Settings
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(10))
    claims = []
    for n in range(5):
        status, reply = await claim(client, list_id, f"user-{n}")
        assert status == 201
        claims.append(reply["claim"])
    served = of_type(await all_events(client), "voucher.rewarded")
    listing = await get_list(client, list_id)

    with sqlite3.connect(settings.data_dir / "voucherd.sqlite3") as db:
        stored = db.execute("SELECT data, base FROM events WHERE type = 'voucher.rewarded'")
        rows = stored.fetchall()
        bases = db.execute("SELECT COUNT(*) FROM event_bases").fetchone()[0]
    # One base for the list; each event keeps only what varies per reward.
    assert bases == 1
    assert {base for _, base in rows} == {1}
    assert [set(json.loads(data)) for data, _ in rows] == [
        {"eventTimestamp", "voucherCode", "userId", "message"}
    ] * 5
    assert [e["data"] for e in served] == [
        rewarded_data(listing, made["code"], made["user_id"], made["claimed_at"]) for made in claims
    ]


async def test_events_stored_before_the_compact_layout_are_served_unchanged_after_the_upgrade(
    restartable: Restart, settings: Settings
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(10))
    for n in range(3):
        assert (await claim(client, list_id, f"user-{n}"))[0] == 201
    before = await all_events(client)
    await client.close()
    # Back to the layout of schema 3: every event whole, no bases.
    with sqlite3.connect(settings.data_dir / "voucherd.sqlite3") as db:
        whole = [
            (e.seq, e.type, e.time, e.data.decode())
            for e in read_events(db, 0, 1_000_000, None, 1_000_000)
        ]
        db.execute("DELETE FROM events")
        to_schema_5(db)
        db.execute("ALTER TABLE events DROP COLUMN base")
        db.execute("DROP TABLE event_bases")
        db.executemany("INSERT INTO events (seq, type, time, data) VALUES (?, ?, ?, ?)", whole)
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")

    client = await restartable()
    assert await all_events(client) == before
    status, reply = await claim(client, list_id, "after")
    assert status == 201
    after = await all_events(client)

    assert after[: len(before)] == before
    [new] = after[len(before) :]
    made = reply["claim"]
    listing = await get_list(client, list_id)
    assert new["data"] == rewarded_data(listing, made["code"], "after", made["claimed_at"])


# -- WebSocket subscriptions -------------------------------------------------------------------


async def test_a_subscriber_without_since_gets_only_new_events(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    for n in range(3):
        assert (await claim(client, list_id, f"before-{n}"))[0] == 201
    ws = await subscribe(client)

    status, reply = await claim(client, list_id, "after")
    assert status == 201
    event = await next_event(ws)
    assert event["seq"] == 5
    assert event["data"]["userId"] == "after"
    assert event["data"]["voucherCode"] == reply["claim"]["code"]
    await ws.close()


async def test_since_delivers_every_later_event_in_order_then_continues_live(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(40))
    reply = await claim_batch(client, list_id, [f"u-{n}" for n in range(19)])
    assert len(reply["claims"]) == 19
    stored = await all_events(client)
    assert seqs(stored) == list(range(1, 21))

    ws = await subscribe(client, since=7)
    assert await next_events(ws, 13) == stored[7:]

    for n in range(5):
        assert (await claim(client, list_id, f"live-{n}"))[0] == 201
    live = await next_events(ws, 5)
    assert seqs(live) == list(range(21, 26))
    assert [e["data"]["userId"] for e in live] == [f"live-{n}" for n in range(5)]
    # Nothing is delivered twice: the next frame is the next event.
    await assert_next_is_only(ws, client, list_id)

    # since=0 is every event there is.
    everything = await subscribe(client, since=0)
    assert await next_events(everything, 27) == await all_events(client)
    await everything.close()
    await ws.close()


async def test_a_subscriber_catching_up_misses_nothing_while_claims_go_on(
    client: Client,
) -> None:
    # The default low-stock threshold, said out loud: the backlog runs low and then out, the
    # busy list runs low, and those events are numbered among the rest.
    backlog = await list_with_codes(
        client, make_codes(3000, prefix="B"), tag="backlog", low_stock_threshold=1000
    )
    busy = await list_with_codes(
        client, make_codes(2000, prefix="L"), tag="busy", low_stock_threshold=1000
    )
    for n in range(3):
        reply = await claim_batch(client, backlog, [f"b{n}-{m}" for m in range(1000)])
        assert len(reply["claims"]) == 1000

    async def claims_meanwhile() -> None:
        async with wide_session(client) as session:

            async def singles(worker: int) -> None:
                for n in range(25):
                    status, _ = await claim(session, busy, f"w{worker}-{n}")
                    assert status == 201

            async def batches() -> None:
                for n in range(3):
                    await claim_batch(session, busy, [f"x{n}-{m}" for m in range(200)])

            await asyncio.gather(*(singles(worker) for worker in range(40)), batches())

    received: list[dict[str, Any]] = []

    async def follow(ws: WebSocket) -> None:
        # Until the pause that comes after all the claims.
        while not received or received[-1]["type"] != "list.status_changed":
            received.append(await next_event(ws))

    # The subscriber starts three thousand events behind while a thousand more arrive.
    load = asyncio.create_task(claims_meanwhile())
    ws = await subscribe(client, since=0)
    following = asyncio.create_task(follow(ws))
    await load
    await transition(client, backlog, "pause")
    await following

    stored = await all_events(client)
    assert type_counts(stored) == {
        "upload.completed": 2,
        "voucher.rewarded": 3000 + 1600,
        "list.low_stock": 2,
        "list.exhausted": 1,
        "list.status_changed": 1,
    }
    assert seqs(received) == list(range(1, len(stored) + 1))
    assert received == stored
    await assert_next_is_only(ws, client, busy)
    await ws.close()


async def test_live_events_overflowing_the_buffer_while_catching_up_come_from_the_journal(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    client = await start_client(Settings(data_dir=tmp_path / "data", event_buffer=100))
    # 12 MB of events, far more than the sockets between us and the server hold: while we do
    # not read, the server is stuck in the middle of catching up. The last batch takes the list
    # to its low-stock threshold: that event is in the backlog too, numbered among the rewards.
    list_id = await list_with_codes(
        client, make_codes(6000), description="d" * 2000, low_stock_threshold=1000
    )
    for n in range(5):
        users = [big_user(f"b{n}-{m}") for m in range(1000)]
        assert len((await claim_batch(client, list_id, users))["claims"]) == 1000
    backlog = 1 + 5000 + 1
    async with slow_subscriber(client, since=0) as ws:
        first = await next_event(ws)
        assert first["seq"] == 1

        # 500 live events at once: more than its buffer holds while it catches up. They are
        # dropped from the buffer, and read from the journal instead: it is not closed.
        reply = await claim_batch(client, list_id, [f"live-{m}" for m in range(500)])
        assert len(reply["claims"]) == 500

        received = [first, *await next_events(ws, backlog + 500 - 1)]
        assert seqs(received) == list(range(1, backlog + 500 + 1))
        assert received[1:] == await all_events(client, since=1)
        assert type_counts(received) == {
            "upload.completed": 1,
            "voucher.rewarded": 5500,
            "list.low_stock": 1,
        }
        assert {e["data"]["userId"] for e in received[-500:]} == {f"live-{m}" for m in range(500)}
        await assert_next_is_only(ws, client, list_id)


async def test_a_types_filter_delivers_only_those_types(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    ws = await subscribe(client, since=0, types="list.status_changed,upload.completed")
    everything = await subscribe(client, types="")

    assert (await claim(client, list_id, "u-1"))[0] == 201
    await transition(client, list_id, "pause")
    status, _ = await upload(client, list_id, codes_csv(make_codes(3, prefix="MORE")))
    assert status == 201
    await transition(client, list_id, "activate")
    assert (await claim(client, list_id, "u-2"))[0] == 201

    wanted = await next_events(ws, 4)
    assert [e["type"] for e in wanted] == [
        "upload.completed",
        "list.status_changed",
        "upload.completed",
        "list.status_changed",
    ]
    assert seqs(wanted) == [1, 3, 4, 5]
    # An empty filter is no filter.
    assert [e["type"] for e in await next_events(everything, 5)] == [
        "voucher.rewarded",
        "list.status_changed",
        "upload.completed",
        "list.status_changed",
        "voucher.rewarded",
    ]
    # The same filter over HTTP.
    filtered = await all_events(client, types="list.status_changed,upload.completed")
    assert filtered == wanted
    rewards = await all_events(client, types="voucher.rewarded")
    assert seqs(rewards) == [2, 6]
    await ws.close()
    await everything.close()


async def test_msgpack_frames_decode_to_the_same_events_as_json_frames(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10), description="Ünïcode — €5 off")
    reply = await claim_batch(client, list_id, ["u-1", "u-2", "u-3"])
    assert len(reply["claims"]) == 3
    await transition(client, list_id, "pause")
    packed: WebSocket = await client.ws_connect(
        "/v1/events", params={"since": "0", "format": "msgpack"}
    )
    plain = await subscribe(client, since=0, format="json")

    decoded = []
    for _ in range(5):
        message = await packed.receive(timeout=WAIT)
        assert message.type is WSMsgType.BINARY, message
        decoded.append(msgpack.unpackb(message.data))
    assert decoded == await next_events(plain, 5)
    assert decoded == await all_events(client)
    assert decoded[1]["data"]["listDescription"] == "Ünïcode — €5 off"
    assert decoded[1]["data"]["campaignId"] is None
    # ...and live, after the catch-up.
    await transition(client, list_id, "activate")
    message = await packed.receive(timeout=WAIT)
    assert message.type is WSMsgType.BINARY, message
    assert msgpack.unpackb(message.data) == await next_event(plain)
    await packed.close()
    await plain.close()


@pytest.mark.parametrize(
    "query",
    [
        {"types": "voucher.rewarded,voucher.nope"},
        {"format": "xml"},
        {"since": "4"},  # after the last event
        {"since": "-1"},
        {"since": "one"},
    ],
)
async def test_a_bad_query_is_refused_with_400_before_the_upgrade(
    client: Client, query: dict[str, str]
) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    assert (await claim(client, list_id, "u-1"))[0] == 201
    assert await last_seq(client) == 2

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/events", params=query)
    assert refused.value.status == 400

    # The same query without the upgrade: the same refusal, with the error body.
    status, reply = await get_json(client, "/v1/events", **query)
    assert status == 400, reply
    assert reply["error"]["code"] == "invalid_request"


# -- resuming ----------------------------------------------------------------------------------


async def test_a_subscriber_resumes_after_a_restart_without_losing_an_event(
    restartable: Restart,
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(100))
    ws = await subscribe(client)
    for n in range(5):
        assert (await claim(client, list_id, f"before-{n}"))[0] == 201
    seen = await next_events(ws, 5)
    last = seen[-1]["seq"]
    await ws.close()

    client = await restartable()
    for n in range(10):
        assert (await claim(client, list_id, f"after-{n}"))[0] == 201
    await transition(client, list_id, "pause")
    missed = await all_events(client, since=last)
    assert len(missed) == 11

    ws = await subscribe(client, since=last)
    assert await next_events(ws, 11) == missed
    assert seqs(missed) == list(range(last + 1, last + 12))
    assert [e["data"]["userId"] for e in missed[:10]] == [f"after-{n}" for n in range(10)]
    # ...and then it follows live.
    await transition(client, list_id, "activate")
    live = await next_event(ws)
    assert (live["seq"], live["data"]["status"]) == (last + 12, "active")
    await ws.close()


# -- kill -9 -----------------------------------------------------------------------------------


async def test_after_kill_9_every_acknowledged_claim_has_exactly_one_event_and_every_event_a_claim(
    server_process: ServerProcess,
) -> None:
    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        lists = []
        for n in range(3):
            status, created = await post(session, "/v1/lists", list_body(tag=f"crash-{n}"))
            assert status == 201, created
            lists.append(created["id"])
            async with session.post(
                f"/v1/lists/{created['id']}/uploads",
                data=io.BytesIO(codes_csv(make_codes(3000, prefix=f"K{n}-")).encode()),
                headers={"Content-Type": "text/csv"},
            ) as response:
                assert response.status == 201, await response.text()
        status, created = await post(session, "/v1/lists", list_body(tag="toggled"))
        toggled = created["id"]

    # (user, code) -> list, for every claim answered with a 2xx.
    acknowledged: dict[tuple[str, str], int] = {}
    attempted: set[str] = set()
    enough = asyncio.Event()

    async def load(session: aiohttp.ClientSession, worker: int) -> None:
        """Claim until the server goes away: plain, keyed and batch claims in turn."""
        n = 0
        while True:
            n += 1
            list_id = lists[(worker + n) % 3]
            try:
                if n % 4 == 0:
                    users = [f"w{worker}-{n}-{m}" for m in range(4)]
                    attempted.update(users)
                    status, reply = await post(
                        session, f"/v1/lists/{list_id}/claims/batch", {"user_ids": users}
                    )
                    assert status == 200, reply
                    assert reply["failed"] == []
                    made = reply["claims"]
                else:
                    user, key = (f"w{worker}", f"k{n}") if n % 4 == 1 else (f"w{worker}-{n}", "")
                    attempted.add(user)
                    status, reply = await claim(session, list_id, user, key)
                    assert status == 201, reply
                    made = [reply["claim"]]
                for one in made:
                    acknowledged[(one["user_id"], one["code"])] = one["list_id"]
            except aiohttp.ClientError:
                return  # killed: the load stops only because the server is gone
            if len(acknowledged) >= 600:
                enough.set()

    async def toggle(session: aiohttp.ClientSession) -> None:
        try:
            while True:
                for action in ("pause", "activate"):
                    status, reply = await post(session, f"/v1/lists/{toggled}/{action}", {})
                    assert status == 200, reply
        except aiohttp.ClientError:
            return

    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        workers = [asyncio.create_task(load(session, worker)) for worker in range(24)]
        workers.append(asyncio.create_task(toggle(session)))
        await asyncio.wait_for(enough.wait(), timeout=60)
        server_process.kill()  # the load is still running
        await asyncio.gather(*workers)

    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        events = await all_events(session)
        assert seqs(events) == list(range(1, len(events) + 1))
        rewarded = [e["data"] for e in of_type(events, "voucher.rewarded")]
        by_code = Counter(data["voucherCode"] for data in rewarded)
        assert [code for code, count in by_code.items() if count > 1] == []
        found = {(data["userId"], data["voucherCode"]): data["voucherListId"] for data in rewarded}
        for (user, code), list_id in acknowledged.items():
            assert found.get((user, code)) == list_id, f"no event for {user}'s claim of {code}"

        # Every event names a claim the server holds: the user's tray has that code.
        users = attempted | {data["userId"] for data in rewarded}
        trays = await asyncio.gather(
            *(get_json(session, f"/v1/users/{user}/vouchers") for user in sorted(users))
        )
        held = {
            (user, voucher["code"]): voucher["list_id"]
            for user, (status, tray) in zip(sorted(users), trays, strict=True)
            for voucher in tray["vouchers"]
        }
        assert found == held
        for list_id in lists:
            status, listing = await get_json(session, f"/v1/lists/{list_id}")
            assert_balanced(listing)
            assert listing["codes"]["distributed"] == sum(
                1 for data in rewarded if data["voucherListId"] == list_id
            )

        # Numbering goes on from the last event written before the kill.
        status, reply = await claim(session, lists[0], "after-restart")
        assert status == 201, reply
        after = await all_events(session, since=events[-1]["seq"])
        assert seqs(after) == [events[-1]["seq"] + 1]
        assert after[0]["data"]["voucherCode"] == reply["claim"]["code"]


# -- slow subscribers (invariant 7) ------------------------------------------------------------


def test_a_subscriber_is_closed_as_soon_as_more_than_its_buffer_waits() -> None:
    """The rule alone, on the stream's own objects: more than `limit` events waiting closes a
    live subscriber at once, however they came."""

    async def no_reads(*_: Any) -> list[Event]:
        raise AssertionError("a live subscriber reads nothing from the journal")

    stream = EventStream(no_reads)
    seq = iter(range(1, 10_000))

    def commit(size: int) -> list[Event]:
        return [Event("list.low_stock", b"{}", 0.0, next(seq)) for _ in range(size)]

    def lagging_after(*sizes: int) -> list[bool]:
        subscription = stream.subscribe(None, None, limit=5)
        found = []
        for size in sizes:
            subscription.offer(commit(size))
            found.append(subscription.lagging)
        return found

    assert lagging_after(1, 1, 1, 1, 1, 1) == [False] * 5 + [True]
    assert lagging_after(5) == [False]
    assert lagging_after(4, 2) == [False, True]
    assert lagging_after(6) == [True]  # one commit too large for the buffer: closed at once
    assert lagging_after(1000) == [True]


async def test_a_subscriber_that_never_reads_is_closed_with_4008_and_claims_go_on(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    client = await start_client(Settings(data_dir=tmp_path / "data", event_buffer=50))
    # Every code is claimed: the list runs low (at its threshold) and out on the way, and those
    # two events are among the ones the subscriber must get.
    list_id = await list_with_codes(
        client, make_codes(3000), description="d" * 2000, low_stock_threshold=1000
    )
    start = await last_seq(client)

    async def claims() -> list[dict[str, Any]]:
        async with wide_session(client) as session:

            async def singles(worker: int) -> list[dict[str, Any]]:
                made = []
                for n in range(40):
                    status, reply = await claim(session, list_id, big_user(f"w{worker}-{n}"))
                    assert status == 201, reply
                    made.append(reply["claim"])
                return made

            async def batches() -> list[dict[str, Any]]:
                made = []
                for n in range(4):
                    users = [big_user(f"x{n}-{m}") for m in range(250)]
                    reply = await claim_batch(session, list_id, users)
                    assert reply["failed"] == []
                    made.extend(reply["claims"])
                return made

            done = await asyncio.gather(*(singles(worker) for worker in range(50)), batches())
            return [made for results in done for made in results]

    async with slow_subscriber(client) as stuck:  # and it does not read, until the end
        # Generous: only a stall would reach it.
        async with asyncio.timeout(60):
            made = await claims()
        # Every claim was answered, each with its own code.
        assert len(made) == 3000
        assert len({claim["code"] for claim in made}) == 3000
        listing = await get_list(client, list_id)
        assert listing["codes"]["distributed"] == 3000
        assert_balanced(listing)
        stored = await all_events(client, since=start)
        rewarded = of_type(stored, "voucher.rewarded")
        assert len(rewarded) == 3000
        assert {e["data"]["voucherCode"] for e in rewarded} == {claim["code"] for claim in made}
        assert type_counts(stored) == {
            "voucher.rewarded": 3000,
            "list.low_stock": 1,
            "list.exhausted": 1,
        }

        # Now it reads: what the server sent before giving up on it, then the close, which
        # says where to resume.
        received, closing = await events_until_close(stuck)
    since = resume_point(closing)
    assert since < stored[-1]["seq"]
    assert seqs(received) == list(range(start + 1, start + 1 + len(received)))

    ws = await subscribe(client, since=since)
    rest = await next_events(ws, stored[-1]["seq"] - since)
    # Nothing lost: every event reached it, on the first connection or the second, in order.
    assert {e["seq"]: e for e in received + rest} == {e["seq"]: e for e in stored}
    assert rest == stored[since - start :]
    await assert_next_is_only(ws, client, list_id)
    await ws.close()


async def test_a_subscriber_closed_with_4008_is_sent_nothing_past_its_resume_point(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    """The close names the last event the subscriber was sent, so resuming from it repeats
    nothing — also when the server gave up on it in the middle of writing to its socket."""
    client = await start_client(Settings(data_dir=tmp_path / "data", event_buffer=50))
    # The list runs low and out on the way: those events are resumed across like the rest.
    list_id = await list_with_codes(
        client, make_codes(3000), description="d" * 2000, low_stock_threshold=1000
    )
    start = await last_seq(client)

    async with slow_subscriber(client) as stuck:
        # A few claims at a time, so that the events come in small groups and the subscriber
        # falls behind only once its socket is full.
        async with wide_session(client) as session:

            async def singles(worker: int) -> None:
                for n in range(750):
                    status, reply = await claim(session, list_id, big_user(f"w{worker}-{n}"))
                    assert status == 201, reply

            async with asyncio.timeout(60):
                await asyncio.gather(*(singles(worker) for worker in range(4)))
        received, closing = await events_until_close(stuck)
    since = resume_point(closing)
    stored = await all_events(client, since=start)
    assert type_counts(stored) == {
        "voucher.rewarded": 3000,
        "list.low_stock": 1,
        "list.exhausted": 1,
    }
    assert seqs(stored) == list(range(start + 1, start + 3002 + 1))
    assert received == stored[: len(received)]
    # The frames it got end exactly at the resume point: resuming from there repeats none.
    assert seqs(received)[-1:] == [since]

    ws = await subscribe(client, since=since)
    rest = await next_events(ws, stored[-1]["seq"] - since)
    assert Counter(seqs(received + rest)).most_common(1)[0][1] == 1, "an event came twice"
    assert received + rest == stored
    await ws.close()


async def test_a_subscriber_that_reads_its_close_late_still_gets_the_close_code(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    """The server answers a closing handshake, not just a close frame followed by a dropped
    connection: a client that reads the close frame late and then checks `close_code` sees
    4008 or 4010, not 1006 (abnormal closure)."""
    settings = Settings(data_dir=tmp_path / "data", event_buffer=50, event_retention=0.4)
    client = await start_client(settings)
    list_id = await list_with_codes(client, make_codes(4001), description="d" * 2000)
    assert (await claim(client, list_id, "first"))[0] == 201

    async def purged() -> bool:
        status, _ = await get_json(client, "/v1/events", since=0)
        return status == 410

    await poll(purged)
    expired = await subscribe(client, since=0)
    async with slow_subscriber(client) as lagging:
        # 2.5 MB a batch: the server is soon stuck writing to a socket nobody reads (the
        # kernel holds a few MB of it), a batch waits in the buffer, and the next finds the
        # subscriber behind.
        for n in range(4):
            users = [big_user(f"u-{n}-{m}") for m in range(1000)]
            assert len((await claim_batch(client, list_id, users))["claims"]) == 1000
        # A slow subscriber: it gets to its socket a while after the server closed it.
        await asyncio.sleep(0.5)

        for ws, code in ((lagging, 4008), (expired, 4010)):
            _, closing = await events_until_close(ws)
            assert (closing.type, closing.data) == (WSMsgType.CLOSE, code)
            assert ws.closed
            assert ws.close_code == code


# -- retention ---------------------------------------------------------------------------------


async def test_events_past_retention_are_refused_and_the_newest_is_always_kept(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    # Retention of 0.4 s: the purge runs every 0.1 s.
    settings = Settings(data_dir=tmp_path / "data", event_retention=0.4)
    client = await start_client(settings)
    list_id = await list_with_codes(client, make_codes(20))
    for n in range(5):
        assert (await claim(client, list_id, f"u-{n}"))[0] == 201
    newest = 6

    async def purged() -> bool:
        # Everything but the newest: `since` one before the one before the newest is too old.
        status, _ = await get_json(client, "/v1/events", since=newest - 2)
        return status == 410

    await poll(purged)
    status, reply = await get_json(client, "/v1/events", since=0)
    assert status == 410, reply
    assert reply["error"]["code"] == "events_expired"
    # The newest event stays, whatever its age, so numbering has something to go on from.
    kept = await page(client, since=newest - 1)
    assert seqs(kept["events"]) == [newest]
    assert kept["events"][0]["data"]["userId"] == "u-4"
    assert await page(client, since=newest) == {"events": [], "last_seq": newest}
    # Without `since`, a page starts at the oldest event kept.
    assert await page(client) == kept

    for since in (0, 3):
        ws = await subscribe(client, since=since)
        message = await ws.receive(timeout=WAIT)
        assert (message.type, message.data) == (WSMsgType.CLOSE, 4010), message
        assert f"oldest event kept is {newest}" in (message.extra or "")
        await ws.close()
    ws = await subscribe(client, since=newest - 1)
    assert seqs([await next_event(ws)]) == [newest]
    await ws.close()

    # After a restart numbering goes on from the newest kept.
    await client.close()
    client = await start_client(settings)
    ws = await subscribe(client)
    status, reply = await claim(client, list_id, "after-restart")
    assert status == 201, reply
    event = await next_event(ws)
    assert event["seq"] == newest + 1
    assert event["data"]["voucherCode"] == reply["claim"]["code"]
    assert seqs(await all_events(client, since=newest)) == [newest + 1]
    await ws.close()


async def test_retention_deletes_the_oldest_events_in_contiguous_batches_and_keeps_the_rest(
    start_client: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention finds the last event older than it and deletes every event up to it, a few at
    a time, each batch a contiguous range of seq; events within retention stay. The server's
    clock is held still and moved by hand, so which events are old is exact, not a race with
    the purge; the stream learns the new oldest event before each delete."""
    instant = [time.time()]
    monkeypatch.setattr(clock, "now", lambda: instant[0])
    monkeypatch.setattr(watch, "PURGE_BATCH", 7)
    deletes: list[tuple[int, int]] = []
    stream: list[EventStream] = []

    def spy(db: sqlite3.Connection, upto: int) -> None:
        # (deleted up to, the oldest event the stream says it keeps, as the delete runs)
        deletes.append((upto, stream[-1].first_seq))
        delete_events(db, upto)

    monkeypatch.setattr(watch, "delete_events", spy)
    # Retention of 0.4 s: the purge runs every 0.1 s.
    settings = Settings(data_dir=tmp_path / "data", event_retention=0.4)
    client = await start_client(settings)
    stream.append(client.app[STREAM])
    list_id = await list_with_codes(client, make_codes(100), low_stock_threshold=0)
    for n in range(12):
        assert (await claim(client, list_id, f"old-{n}"))[0] == 201
    # A batch's rewards are stored as one row, 14 to 25: deleted whole, though more than 7.
    reply = await claim_batch(client, list_id, [f"old-{n}" for n in range(12, 24)])
    assert len(reply["claims"]) == 12
    # The clock stands still: however long they wait, these events are not older than 0.4 s.
    await asyncio.sleep(0.6)
    assert seqs(await all_events(client)) == list(range(1, 26))
    assert deletes == []

    instant[0] += 10
    for n in range(5):
        assert (await claim(client, list_id, f"new-{n}"))[0] == 201
    await transition(client, list_id, "pause")
    kept = list(range(26, 32))

    async def purged() -> bool:
        # Until the delete that reaches the old events' end (or passes it) has run: the stream
        # refuses `since=24` a moment before, as soon as it learns the new oldest event.
        return bool(deletes) and deletes[-1][0] >= 25

    await poll(purged)
    # The 25 old events went in batches of at most 7, oldest first, each the range after the
    # last, and the stream knew the new oldest event before each delete; the batch's run went
    # whole, alone. (A purge that runs between the clock's move and the first new event keeps
    # the newest old row, the run, for the next batch: so the batches are not always the same.)
    uptos = [upto for upto, _ in deletes]
    assert uptos[-2:] == [13, 25]
    assert all(
        0 < upto - previous <= 7
        for previous, upto in zip([0, *uptos[:-2]], uptos[:-1], strict=True)
    )
    assert [first for _, first in deletes] == [upto + 1 for upto in uptos]
    new = await all_events(client, since=25)
    assert seqs(new) == kept
    assert [e["data"]["userId"] for e in new[:5]] == [f"new-{n}" for n in range(5)]
    assert await page(client) == {"events": new, "last_seq": 31}
    for since in (0, 24):
        status, refused = await get_json(client, "/v1/events", since=since)
        assert (status, refused["error"]["code"]) == (410, "events_expired")
        assert "oldest event kept is 26" in refused["error"]["message"]
        ws = await subscribe(client, since=since)
        message = await ws.receive(timeout=WAIT)
        assert (message.type, message.data) == (WSMsgType.CLOSE, 4010), message
        assert "oldest event kept is 26" in (message.extra or "")
        await ws.close()
    ws = await subscribe(client, since=25)
    assert await next_events(ws, 6) == new
    await ws.close()

    # After a restart the oldest event kept is found again, and nothing more is deleted.
    await client.close()
    client = await start_client(settings)
    stream.append(client.app[STREAM])
    await asyncio.sleep(0.3)
    assert await all_events(client, since=25) == new
    assert (await get_json(client, "/v1/events", since=24))[0] == 410
    assert [upto for upto, _ in deletes] == uptos

    # Once all of them are old, all go but the newest, in one batch.
    instant[0] += 10

    async def all_but_the_newest() -> bool:
        return len(deletes) > len(uptos)

    await poll(all_but_the_newest)
    assert deletes[len(uptos) :] == [(30, 31)]
    assert (await get_json(client, "/v1/events", since=29))[0] == 410
    assert await page(client) == {"events": new[-1:], "last_seq": 31}


# -- list and upload events --------------------------------------------------------------------


async def test_pause_activate_and_archive_write_status_events(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    ws = await subscribe(client)

    await transition(client, list_id, "pause")
    await transition(client, list_id, "activate")
    await transition(client, list_id, "pause")
    await transition(client, list_id, "archive")
    # A refused transition and an edit that changes no status write nothing.
    status, _ = await post(client, f"/v1/lists/{list_id}/activate", {})
    assert status == 409

    events = await next_events(ws, 4)
    assert {e["type"] for e in events} == {"list.status_changed"}
    assert {e["name"] for e in events} == {"list.status_changed"}
    assert [(e["data"]["previous_status"], e["data"]["status"]) for e in events] == [
        ("active", "paused"),
        ("paused", "active"),
        ("active", "paused"),
        ("paused", "archived"),
    ]
    assert events[0]["data"] == {
        "list_id": list_id,
        "previous_status": "active",
        "status": "paused",
    }
    assert all(RFC3339_UTC.fullmatch(e["time"]) for e in events)
    assert seqs(events) == [1, 2, 3, 4]
    assert await all_events(client) == events
    await ws.close()


async def test_moving_an_expired_lists_date_into_the_future_writes_a_status_event(
    client: Client,
) -> None:
    expired = (await create_list(client, expires_at="2020-01-01T00:00:00Z"))["id"]
    plain = (await create_list(client, tag="plain"))["id"]
    ws = await subscribe(client)

    async with client.patch(f"/v1/lists/{plain}", json={"name": "Renamed"}) as response:
        assert response.status == 200
    async with client.patch(f"/v1/lists/{expired}", json={"expires_at": FUTURE}) as response:
        assert response.status == 200
        assert (await response.json())["status"] == "active"
    await transition(client, expired, "archive")

    events = await next_events(ws, 2)
    assert [e["data"] for e in events] == [
        {"list_id": expired, "previous_status": "expired", "status": "active"},
        {"list_id": expired, "previous_status": "active", "status": "archived"},
    ]
    await ws.close()


def stock_data(list_id: int, available: int, threshold: int) -> dict[str, Any]:
    """The data of a `list.low_stock` or `list.exhausted` event of a list made by list_body()."""
    return {
        "list_id": list_id,
        "partner": "Puma",
        "tag": "holi2025",
        "available": available,
        "low_stock_threshold": threshold,
    }


async def withdraw(client: Client, list_id: int, upload_id: int) -> int:
    async with client.delete(f"/v1/lists/{list_id}/uploads/{upload_id}") as response:
        reply = await response.json()
        assert response.status == 200, reply
        withdrawn: int = reply["withdrawn"]
        return withdrawn


async def test_a_threshold_raised_past_the_stock_writes_low_stock_once(client: Client) -> None:
    """Moving the mark past the stock crosses it as a claim does: one `list.low_stock`, in
    the edit's journal entry; a raise that stays below the stock, or a second raise, none."""
    list_id = await list_with_codes(client, make_codes(50), low_stock_threshold=10)
    start = await last_seq(client)
    for threshold, status in ((40, 200), (100, 200), (200, 200)):
        async with client.patch(
            f"/v1/lists/{list_id}", json={"low_stock_threshold": threshold}
        ) as response:
            assert response.status == status
    for n in range(3):
        assert (await claim(client, list_id, f"u-{n}"))[0] == 201
    events = await all_events(client, since=start)
    lows = [e["data"] for e in events if e["type"] == "list.low_stock"]
    assert lows == [stock_data(list_id, 50, 100)]


async def test_a_list_running_low_and_running_out_writes_low_stock_and_exhausted_events(
    client: Client,
) -> None:
    """The contract's `list.low_stock` (available codes fall to the list's threshold) and
    `list.exhausted` (none left): once each, in the same journal entry as the claim that
    caused it, so right after its reward; again only once a top-up lifted the list back
    above."""
    list_id = await list_with_codes(client, make_codes(5), low_stock_threshold=2)
    start = await last_seq(client)
    stock = await subscribe(client, types="list.low_stock,list.exhausted")
    for n in range(5):
        assert (await claim(client, list_id, f"u-{n}"))[0] == 201
    status, reply = await claim(client, list_id, "one-too-many")
    assert (status, reply["error"]["code"]) == (409, "list_exhausted")

    events = await all_events(client, since=start)
    # Two codes left after the third claim; none after the fifth. The fourth, at the threshold
    # already, writes no second low-stock event.
    assert [e["type"] for e in events] == [
        *["voucher.rewarded"] * 3,
        "list.low_stock",
        *["voucher.rewarded"] * 2,
        "list.exhausted",
    ]
    assert seqs(events) == list(range(start + 1, start + 8))
    low, out = events[3], events[6]
    assert (low["name"], low["data"]) == ("list.low_stock", stock_data(list_id, 2, 2))
    assert (out["name"], out["data"]) == ("list.exhausted", stock_data(list_id, 0, 2))
    # Written with the claim: the same time as its reward.
    assert (low["time"], out["time"]) == (events[2]["time"], events[5]["time"])
    assert RFC3339_UTC.fullmatch(low["time"])
    # A subscriber may ask for just these.
    assert await next_events(stock, 2) == [low, out]

    # A top-up lifts the list above its threshold: running low and out again writes both again.
    mark = await last_seq(client)
    status, reply = await upload(client, list_id, codes_csv(make_codes(4, prefix="TOP")))
    assert status == 201, reply
    answers = [(await claim(client, list_id, f"again-{n}"))[0] for n in range(5)]
    assert answers == [201] * 4 + [409]
    again = await all_events(client, since=mark)
    assert [e["type"] for e in again] == [
        "upload.completed",
        *["voucher.rewarded"] * 2,
        "list.low_stock",
        *["voucher.rewarded"] * 2,
        "list.exhausted",
    ]
    assert again[3]["data"] == stock_data(list_id, 2, 2)
    assert again[6]["data"] == stock_data(list_id, 0, 2)
    assert await next_events(stock, 2) == [again[3], again[6]]

    # A top-up that leaves the list at or below its threshold re-arms nothing: one code in,
    # one claimed, and only the exhaustion is written again (it went from 1 to 0).
    mark = await last_seq(client)
    status, reply = await upload(client, list_id, codes_csv(["ONE"]))
    assert status == 201, reply
    assert (await claim(client, list_id, "last"))[0] == 201
    assert [e["type"] for e in await all_events(client, since=mark)] == [
        "upload.completed",
        "voucher.rewarded",
        "list.exhausted",
    ]

    # One batch that takes the list from above its threshold to nothing writes both, after
    # all of its rewards.
    mark = await last_seq(client)
    status, reply = await upload(client, list_id, codes_csv(make_codes(6, prefix="BATCH")))
    assert status == 201, reply
    made = await claim_batch(client, list_id, [f"batch-{n}" for n in range(8)])
    assert len(made["claims"]) == 6
    batch = await all_events(client, since=mark)
    assert [e["type"] for e in batch] == [
        "upload.completed",
        *["voucher.rewarded"] * 6,
        "list.low_stock",
        "list.exhausted",
    ]
    assert [e["data"] for e in batch[-2:]] == [stock_data(list_id, 0, 2)] * 2

    listing = await get_list(client, list_id)
    assert listing["codes"]["available"] == 0
    assert_balanced(listing)
    await stock.close()


async def test_a_withdrawal_that_takes_a_list_to_its_threshold_writes_the_same_events(
    client: Client,
) -> None:
    """Withdrawing an upload takes its codes out of the list: when that crosses the threshold
    (or empties the list) it writes `list.low_stock` (and `list.exhausted`) like a claim."""
    list_id = (await create_list(client, low_stock_threshold=2))["id"]

    async def add(count: int, prefix: str) -> int:
        status, reply = await upload(client, list_id, codes_csv(make_codes(count, prefix)))
        assert status == 201, reply
        return int(reply["id"])

    first = await add(3, "A")
    second = await add(4, "B")
    mark = await last_seq(client)
    # 7 available, then 3: still above the threshold, nothing written.
    assert await withdraw(client, list_id, second) == 4
    third = await add(1, "C")
    # 4 available, then 1: it ran low. Then 0: it ran out (and was low already).
    assert await withdraw(client, list_id, first) == 3
    assert await withdraw(client, list_id, third) == 1
    # 5 available, then 0 in one withdrawal: both, low stock first.
    fourth = await add(5, "D")
    assert await withdraw(client, list_id, fourth) == 5

    events = await all_events(client, since=mark)
    assert [e["type"] for e in events] == [
        "upload.completed",
        "list.low_stock",
        "list.exhausted",
        "upload.completed",
        "list.low_stock",
        "list.exhausted",
    ]
    assert [e["data"] for e in events if e["type"] != "upload.completed"] == [
        stock_data(list_id, 1, 2),
        stock_data(list_id, 0, 2),
        stock_data(list_id, 0, 2),
        stock_data(list_id, 0, 2),
    ]
    assert [e["data"]["upload_id"] for e in of_type(events, "upload.completed")] == [third, fourth]

    # A withdrawal after claims counts only the codes still there: 5 in, 2 claimed, and the 3
    # withdrawn take the list from 3 to 0.
    fifth = await add(5, "E")
    mark = await last_seq(client)
    for n in range(2):
        assert (await claim(client, list_id, f"u-{n}"))[0] == 201
    assert await withdraw(client, list_id, fifth) == 3
    events = await all_events(client, since=mark)
    assert [e["type"] for e in events] == [
        "voucher.rewarded",
        "voucher.rewarded",
        "list.low_stock",
        "list.exhausted",
    ]
    assert [e["data"] for e in events[2:]] == [stock_data(list_id, 0, 2)] * 2

    listing = await get_list(client, list_id)
    assert listing["codes"] == {"uploaded": 18, "available": 0, "distributed": 2, "withdrawn": 16}


async def test_uploads_write_completed_and_failed_events(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    ws = await subscribe(client)

    status, done = await upload(client, list_id, "code\nA1\nA2\nA2\nbad code\n", "good.csv")
    assert status == 201
    assert (done["status"], done["accepted"], done["rejected"]) == ("completed", 2, 2)
    status, failed = await upload(client, list_id, "B1\nB2,extra\nB3\n", "two-columns.csv")
    assert status == 201
    assert failed["status"] == "failed"

    completed, refused = await next_events(ws, 2)
    assert (completed["type"], completed["name"]) == ("upload.completed", "upload.completed")
    assert completed["data"] == {
        "list_id": list_id,
        "upload_id": done["id"],
        "filename": "good.csv",
        "accepted": 2,
        "rejected": 2,
    }
    assert (refused["type"], refused["name"]) == ("upload.failed", "upload.failed")
    assert refused["data"] == {
        "list_id": list_id,
        "upload_id": failed["id"],
        "filename": "two-columns.csv",
        "error": "multiple_columns",
    }
    assert refused["seq"] == completed["seq"] + 1
    await ws.close()


# -- plain HTTP --------------------------------------------------------------------------------


async def test_http_pages_hold_100_events_by_default_and_at_most_10000(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(300))
    reply = await claim_batch(client, list_id, [f"u-{n}" for n in range(249)])
    assert len(reply["claims"]) == 249

    first = await page(client)
    assert seqs(first["events"]) == list(range(1, 101))
    assert first["last_seq"] == 100
    second = await page(client, since=first["last_seq"])
    assert seqs(second["events"]) == list(range(101, 201))
    tail = await page(client, since=200, limit=10_000)
    assert seqs(tail["events"]) == list(range(201, 251))
    assert tail["last_seq"] == 250
    assert seqs((await page(client, since=10, limit=3))["events"]) == [11, 12, 13]
    # Nothing after the last event: an empty page whose last_seq is the since asked for.
    assert await page(client, since=250, limit=10_000) == {"events": [], "last_seq": 250}
    # A filter that matches nothing in what is left does the same.
    assert await page(client, since=1, types="upload.failed") == {"events": [], "last_seq": 1}

    for limit in ("10001", "0", "-5", "many"):
        status, refused = await get_json(client, "/v1/events", limit=limit)
        assert status == 400, (limit, refused)
        assert refused["error"]["code"] == "invalid_request"


async def test_http_events_are_the_frames_a_subscriber_gets(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    ws = await subscribe(client, since=0)
    reply = await claim_batch(client, list_id, ["a", "b"])
    assert len(reply["claims"]) == 2
    await transition(client, list_id, "archive")
    assert await next_events(ws, 4) == await all_events(client)
    await ws.close()


# -- heartbeats --------------------------------------------------------------------------------


async def test_an_idle_subscriber_stays_open_across_heartbeats(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    client = await start_client(Settings(data_dir=tmp_path / "data", websocket_heartbeat=0.2))
    list_id = await list_with_codes(client, make_codes(5))
    # Pings are handed to us rather than answered for us, to count them.
    ws: WebSocket = await client.ws_connect("/v1/events", autoping=False)

    # Five heartbeats with nothing to send: the server pings, we answer, it stays open.
    for _ in range(5):
        message = await ws.receive(timeout=WAIT)
        assert message.type is WSMsgType.PING, message
        await ws.pong(message.data)
    assert not ws.closed

    status, reply = await claim(client, list_id, "u-1")
    assert status == 201
    while (message := await ws.receive(timeout=WAIT)).type is WSMsgType.PING:
        await ws.pong(message.data)
    assert message.type is WSMsgType.TEXT, message
    assert json.loads(message.data)["data"]["voucherCode"] == reply["claim"]["code"]
    await ws.close()


# -- shutdown ----------------------------------------------------------------------------------


async def test_sigterm_closes_subscribers_with_going_away_and_they_resume_after_the_restart(
    server_process: ServerProcess,
) -> None:
    # Short, so that a shutdown that waits for subscribers to leave costs seconds, not minutes.
    server_process.env["VOUCHERD_SHUTDOWN_TIMEOUT"] = "2"
    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        status, created = await post(session, "/v1/lists", list_body())
        assert status == 201
        list_id = created["id"]
        async with session.ws_connect("/v1/events", params={"since": "0"}) as ws:
            await post(session, f"/v1/lists/{list_id}/pause", {})
            message = await ws.receive(timeout=WAIT)
            assert message.type is WSMsgType.TEXT, message
            last = json.loads(message.data)["seq"]

            exited = asyncio.create_task(asyncio.to_thread(server_process.terminate))
            # A subscriber is not a request to wait for: it is told the server is going away.
            closing = await ws.receive(timeout=WAIT)
            assert (closing.type, closing.data) == (WSMsgType.CLOSE, aiohttp.WSCloseCode.GOING_AWAY)
        assert await exited == 0
        assert "cut off" not in server_process.log()

    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        await post(session, f"/v1/lists/{list_id}/activate", {})
        async with session.ws_connect("/v1/events", params={"since": str(last)}) as ws:
            message = await ws.receive(timeout=WAIT)
            assert message.type is WSMsgType.TEXT, message
            event = json.loads(message.data)
            assert (event["seq"], event["data"]["status"]) == (last + 1, "active")
