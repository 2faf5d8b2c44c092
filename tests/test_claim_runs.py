"""Batch claims are stored a slice to a row (`claim_runs`), and a slice's reward events a run to
a row of `events`; so are a list actor's turns of single claims, stretch by stretch. Everything
read back from them — repeats, the voucher tray, counts, claim rates, campaign limits,
duplicate checks, the event stream from any point inside a run — must be what claims stored one
by one give, before a restart and after it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from support import (
    Client,
    call,
    create_list,
    get_list,
    list_with_codes,
    make_codes,
    nonzero,
    to_schema_6,
    to_schema_7,
    upload,
)

from voucherd.actors.voucher_list import (
    BatchOutcome,
    ClaimOutcome,
    Ids,
    ListActor,
    TakeCode,
    TakeCodes,
)
from voucherd.duplicates import Scope
from voucherd.lists import ListInfo
from voucherd.metrics import Metrics
from voucherd.persistence.claim_store import find_claims
from voucherd.persistence.journal import Journal, Step
from voucherd.pool import CodePool, Segment
from voucherd.settings import Settings
from voucherd.statuses import Status

Restart = Callable[[], Awaitable[Client]]


async def batch(client: Client, list_id: int, user_ids: list[str]) -> dict[str, Any]:
    status, reply = await call(
        client, "POST", f"/v1/lists/{list_id}/claims/batch", {"user_ids": user_ids}
    )
    assert status == 200, reply
    assert isinstance(reply, dict)
    return reply


async def every_event(client: Client, since: int = 0, limit: int = 10_000) -> list[Any]:
    found: list[Any] = []
    while True:
        status, reply = await call(client, "GET", "/v1/events", since=str(since), limit=str(limit))
        assert status == 200, reply
        if not reply["events"]:
            return found
        found.extend(reply["events"])
        since = reply["last_seq"]


async def campaign_batch(
    client: Client, body: dict[str, Any], user_ids: list[str]
) -> tuple[str, list[Any]]:
    """A new campaign's batch of rewards: its path, and the results."""
    status, campaign = await call(client, "POST", "/v1/campaigns", body)
    assert status == 201, campaign
    path = f"/v1/campaigns/{campaign['id']}/rewards/batch"
    status, reply = await call(client, "POST", path, {"user_ids": user_ids})
    assert status == 200, reply
    return path, reply["results"]


def stored_event_runs(settings: Settings) -> list[str]:
    with sqlite3.connect(settings.database) as db:
        return [data for (data,) in db.execute("SELECT data FROM events WHERE count > 1")]


def stored_rows(settings: Settings) -> tuple[list[int], list[int]]:
    """The sizes of the stored runs of claims and of events (rows of one event left out)."""
    with sqlite3.connect(settings.database) as db:
        claims = [n for (n,) in db.execute("SELECT count FROM claim_runs ORDER BY first_id")]
        events = [n for (n,) in db.execute("SELECT count FROM events WHERE count > 1")]
    return claims, events


async def list_actor(data_dir: Path, codes: int) -> tuple[Journal, ListActor]:
    """A real journal, started, and an active list's actor holding `codes` codes, not started."""
    metrics = Metrics()
    journal = Journal(data_dir / "voucherd.sqlite3", "FULL", 100_000, metrics)
    await journal.open()
    journal.start()
    info = ListInfo(1, "P", "t", "n", "", 4e9, Status.ACTIVE, Scope.PARTNER, 0, 0, 0)
    pool = CodePool()
    pool.add([Segment.of(1, 1, [code.encode() for code in make_codes(codes)])])
    info.counts.uploaded = codes
    actor = ListActor(
        info, journal=journal, ids=Ids(), metrics=metrics, mailbox_size=10_000, pool=pool
    )
    return journal, actor


async def test_a_batch_is_stored_a_slice_to_a_row_and_comes_back_whole_after_a_restart(
    restartable: Restart, settings: Settings
) -> None:
    client = await restartable()
    codes = make_codes(3000)
    list_id = await list_with_codes(client, codes)
    status, single = await call(client, "POST", f"/v1/lists/{list_id}/claims", {"user_id": "one"})
    assert status == 201
    users = [f"user-{n}" for n in range(2500)]
    made = (await batch(client, list_id, users))["claims"]
    status, keyed = await call(
        client,
        "POST",
        f"/v1/lists/{list_id}/claims",
        {"user_id": "user-7", "idempotency_key": "order-1"},
    )
    assert status == 201
    # The single claim without a key is a run of one; the batch's slices of 1,000 are three
    # runs of claims and three of events; the keyed claim is a row of its own.
    assert stored_rows(settings) == ([1, 1000, 1000, 500], [1000, 1000, 500])
    with sqlite3.connect(settings.database) as db:
        assert db.execute("SELECT idempotency_key FROM claims").fetchall() == [("order-1",)]
    events_before = await every_event(client)
    tray_before = (await call(client, "GET", "/v1/users/user-7/vouchers"))[1]
    listing = await get_list(client, list_id)

    client = await restartable()

    # The same batch again: every user gets the same claim back, none a new one.
    again = await batch(client, list_id, users)
    assert again["claims"] == made
    assert again["failed"] == []
    for user_id, key, before in (("one", "", single), ("user-7", "order-1", keyed)):
        status, reply = await call(
            client,
            "POST",
            f"/v1/lists/{list_id}/claims",
            {"user_id": user_id, "idempotency_key": key},
        )
        assert (status, reply["claim"]) == (200, before["claim"])
    assert (await call(client, "GET", "/v1/users/user-7/vouchers"))[1] == tray_before
    assert len(tray_before["vouchers"]) == 2
    after = await get_list(client, list_id)
    assert after["codes"] == listing["codes"]
    assert after["codes"]["distributed"] == 2502
    # The claim rate is counted from the runs too.
    assert after["claim_rate"] == listing["claim_rate"] > 0
    assert await every_event(client) == events_before

    # New claims go on past the runs' ids and codes.
    status, fresh = await call(client, "POST", f"/v1/lists/{list_id}/claims", {"user_id": "new"})
    assert status == 201
    assert fresh["claim"]["id"] > max(claim["id"] for claim in made)
    handed_out = {claim["code"] for claim in made} | {single["claim"]["code"]}
    assert fresh["claim"]["code"] not in handed_out
    assert fresh["claim"]["code"] in codes


async def test_events_of_a_run_are_served_from_any_point_inside_it(
    restartable: Restart,
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(40), low_stock_threshold=0)
    await batch(client, list_id, [f"a-{n}" for n in range(15)])
    await call(client, "POST", f"/v1/lists/{list_id}/claims", {"user_id": "alone"})
    await batch(client, list_id, [f"b-{n}" for n in range(15)])
    whole = await every_event(client)
    assert [event["seq"] for event in whole] == list(range(1, 33))
    rewarded = [e for e in whole if e["type"] == "voucher.rewarded"]
    assert [e["data"]["userId"] for e in rewarded] == [
        *(f"a-{n}" for n in range(15)),
        "alone",
        *(f"b-{n}" for n in range(15)),
    ]

    for _ in range(2):
        for since in (0, 1, 2, 9, 16, 17, 18, 25, 31, 32):
            # Pages of 4 events start and end inside runs.
            assert await every_event(client, since, limit=4) == whole[since:]
        status, reply = await call(
            client, "GET", "/v1/events", since="5", limit="3", type="voucher.rewarded"
        )
        assert (status, reply["events"]) == (200, whole[5:8])
        client = await restartable()

    ws = await client.ws_connect("/v1/events", params={"since": "20"})
    received = [json.loads((await ws.receive(timeout=10)).data) for _ in range(12)]
    assert received == whole[20:]
    # Live: a run published as it commits reaches the subscriber event by event; a batch of
    # one user is a run of one.
    await batch(client, list_id, [f"c-{n}" for n in range(5)])
    await batch(client, list_id, ["d-0"])
    live = [json.loads((await ws.receive(timeout=10)).data) for _ in range(6)]
    await ws.close()
    assert live == (await every_event(client))[32:]
    assert [event["data"]["userId"] for event in live] == [*(f"c-{n}" for n in range(5)), "d-0"]
    client = await restartable()
    assert (await every_event(client))[32:] == live


async def test_runs_of_events_stored_by_schema_7_are_served_the_same_after_the_upgrade(
    restartable: Restart, settings: Settings
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(40))
    body = {"name": "C", "lists": [list_id],
            "message_template": "Hi {{ Event.userId }}, \"{{ Event.voucherCode }}\""}  # fmt: skip
    _, results = await campaign_batch(client, body, ["r-1", "r-2", "r-é"])
    await batch(client, list_id, [f"a-{n}" for n in range(15)])
    before = await every_event(client)
    with sqlite3.connect(settings.database) as db:
        to_schema_7(db)
    stored = stored_event_runs(settings)
    assert len(stored) == 2
    assert all(data.startswith("{") for data in stored)

    client = await restartable()

    assert await every_event(client) == before
    assert await every_event(client, 2, limit=4) == before[2:]
    assert all(data.startswith("[") for data in stored_event_runs(settings))
    rewards = [event["data"] for event in before if event["type"] == "voucher.rewarded"]
    messages = [data["message"] for data in rewards if data["userId"].startswith("r-")]
    assert messages == [result["reward"]["message"] for result in results]
    assert messages[2].startswith('Hi r-é, "')


async def test_a_campaigns_batch_rewards_count_toward_its_limits_after_a_restart(
    restartable: Restart, settings: Settings
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(50))
    body = {"name": "C", "lists": [list_id], "max_codes_per_campaign": 12,
            "message_template": "Hi {{ Event.userId }}"}  # fmt: skip
    path, made = await campaign_batch(client, body, ["r-1", "r-2", "r-3"])
    assert [result["reward"]["message"] for result in made] == ["Hi r-1", "Hi r-2", "Hi r-3"]
    assert stored_rows(settings) == ([3], [3])

    client = await restartable()

    status, again = await call(client, "POST", path, {"user_ids": ["r-1", "r-2", "r-3"]})
    assert (status, again["results"]) == (200, made)
    status, reply = await call(client, "POST", path, {"user_ids": [f"s-{n}" for n in range(20)]})
    assert status == 200
    # Three of the twelve went before the restart.
    assert sum(1 for result in reply["results"] if "reward" in result) == 9


async def test_codes_claimed_in_a_batch_stay_distributed_when_their_upload_is_withdrawn(
    restartable: Restart,
) -> None:
    # The duplicate check finds the withdrawn upload's claimed code inside a run.
    client = await restartable()
    list_id = (await create_list(client))["id"]
    status, first = await upload(client, list_id, "A1\nA2\nA3\n")
    assert status == 201
    assert [claim["code"] for claim in (await batch(client, list_id, ["u-1"]))["claims"]] == ["A1"]
    status, reply = await call(client, "DELETE", f"/v1/lists/{list_id}/uploads/{first['id']}")
    assert (status, reply) == (200, {"withdrawn": 2})
    for _ in range(2):
        status, again = await upload(client, list_id, "A1\nA2\nA3\n")
        assert status == 201
        assert (again["accepted"], nonzero(again["errors"])) == (2, {"duplicate_in_list": 1})
        path = f"/v1/lists/{list_id}/uploads/{again['id']}"
        assert await call(client, "DELETE", path) == (200, {"withdrawn": 2})
        client = await restartable()


async def test_claims_of_users_whose_batch_is_in_flight_are_that_batchs_claims(
    tmp_path: Path,
) -> None:
    # In-process, with a real journal held by a step on its thread, so the batch's slices are
    # surely still in flight when the same users claim again.
    journal, actor = await list_actor(tmp_path, 3000)
    info = actor.info
    actor.start()
    gate = threading.Event()
    held = journal.submit([Step(lambda _: gate.wait(20))])
    users = [f"u-{n}" for n in range(2500)]
    try:
        # One turn: the batch's slices are taken first, then the messages queued behind it.
        first = actor.ask(TakeCodes(users))
        again = [actor.ask(TakeCode(user_id)) for user_id in ("u-0", "u-1500", "u-2499")]
        second = actor.ask(TakeCodes([*reversed(users), "new"]))
        await asyncio.sleep(0.05)
        assert not any(future.done() for future in (first, *again, second))
    finally:
        gate.set()
    await held
    made: BatchOutcome = await first
    claims = {claim.user_id: claim for claim in made.new_claims()}
    assert [len(run) for run in made.runs] == [1000, 1000, 500]
    assert (made.in_flight, made.repeat_ids, made.failed) == ([], [], [])
    for user_id, future in zip(("u-0", "u-1500", "u-2499"), again, strict=True):
        assert await future == ClaimOutcome(claims[user_id].id, claims[user_id], False)
    repeated: BatchOutcome = await second
    assert sorted(repeated.in_flight) == sorted(claims.values())
    [new] = repeated.new_claims()
    assert new.user_id == "new"
    assert new.code not in {claim.code for claim in claims.values()}
    assert info.counts.distributed == 2501
    await actor.stop()
    await journal.close()


async def test_a_turn_of_single_claims_is_stored_as_runs_and_read_back_as_made(
    tmp_path: Path,
) -> None:
    # In-process, every message queued before the actor runs, so they are surely one turn:
    # keyless claims, keyed ones, ones with metadata and a campaign's rewards, interleaved.
    journal, actor = await list_actor(tmp_path, 100)
    messages = [
        TakeCode("a-1"),
        TakeCode("a-2"),
        TakeCode("a-3"),
        TakeCode("k-1", "order-1"),
        TakeCode("a-4"),
        TakeCode("m-1", metadata='{"shop":"x"}'),
        TakeCode("c-1", "", None, "Campaign", 9),
        TakeCode("c-2", "", None, "Campaign", 9),
        TakeCode("a-5"),
        TakeCode("a-1"),  # a repeat of a claim made earlier in the same turn
    ]
    futures = [actor.ask(message) for message in messages]
    actor.start()
    outcomes: list[ClaimOutcome] = list(await asyncio.gather(*futures))
    made = [outcome.claim for outcome in outcomes]
    assert [outcome.created for outcome in outcomes] == [True] * 9 + [False]
    assert made[9] == made[0]
    claims = [claim for claim in made[:9] if claim is not None]
    assert [claim.id for claim in claims] == list(range(1, 10))
    assert len({claim.code for claim in claims}) == 9
    await actor.stop()
    await journal.close()

    with sqlite3.connect(tmp_path / "voucherd.sqlite3") as db:
        runs = db.execute(
            "SELECT first_id, count, source, campaign_id FROM claim_runs ORDER BY first_id"
        ).fetchall()
        alone = db.execute("SELECT id FROM claims ORDER BY id").fetchall()
        rewards = db.execute(
            "SELECT seq, count FROM events WHERE type = 'voucher.rewarded' ORDER BY seq"
        ).fetchall()
        stored = find_claims(db, range(1, 10))
    # Keyless stretches of one source are runs; the keyed claim and the one with metadata are
    # rows; the campaign's rewards are a run of their own.
    assert runs == [(1, 3, "API", None), (5, 1, "API", None), (7, 2, "Campaign", 9),
                    (9, 1, "API", None)]  # fmt: skip
    assert alone == [(4,), (6,)]
    # The events: a run for each stretch of one source, numbered as the claims are.
    assert rewards == [(1, 6), (7, 2), (9, 1)]
    assert stored == claims


async def claims_of_every_kind(client: Client) -> list[tuple[str, dict[str, Any]]]:
    """Single claims and rewards with and without keys and metadata, on a new list and a
    campaign of it: their requests, to be sent at once."""
    list_id = await list_with_codes(client, make_codes(200))
    status, campaign = await call(
        client,
        "POST",
        "/v1/campaigns",
        {"name": "C", "lists": [list_id], "message_template": "Hi {{ Event.userId }}"},
    )
    assert status == 201, campaign
    claims, rewards = f"/v1/lists/{list_id}/claims", f"/v1/campaigns/{campaign['id']}/rewards"
    requests: list[tuple[str, dict[str, Any]]] = []
    for n in range(25):
        requests += [
            (claims, {"user_id": f"a-{n}"}),
            (claims, {"user_id": f"k-{n}", "idempotency_key": f"order-{n}"}),
            (claims, {"user_id": f"m-{n}", "metadata": {"n": n}}),
            (rewards, {"user_id": f"c-{n}"}),
            (rewards, {"user_id": f"d-{n}", "idempotency_key": f"order-{n}"}),
        ]
    return requests


async def send_all(client: Client, requests: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    return list(await asyncio.gather(*(call(client, "POST", p, b) for p, b in requests)))


async def test_single_claims_of_every_kind_made_at_once_are_the_same_after_a_restart(
    restartable: Restart,
) -> None:
    client = await restartable()
    requests = await claims_of_every_kind(client)

    made = await send_all(client, requests)
    assert {status for status, _ in made} == {201}
    codes = [reply.get("claim", reply.get("reward"))["code"] for _, reply in made]
    assert len(set(codes)) == len(requests)
    events_before = await every_event(client)
    rewarded = {(e["data"]["userId"], e["data"]["voucherCode"]) for e in events_before[1:]}
    sent = zip(requests, codes, strict=True)
    assert rewarded == {(body["user_id"], code) for (_, body), code in sent}

    client = await restartable()

    again = await send_all(client, requests)
    assert again == [(200, reply) for _, reply in made]
    assert await every_event(client) == events_before
    list_id = made[0][1]["claim"]["list_id"]
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == len(requests)


async def test_claims_stored_a_row_each_before_runs_are_repeats_after_the_upgrade(
    restartable: Restart, settings: Settings
) -> None:
    """A journal of schema 6 holds every claim and reward as a row of `claims`: each must be
    found again by its user (and key), directly and through its campaign."""
    client = await restartable()
    requests = await claims_of_every_kind(client)
    made = await send_all(client, requests)
    list_id = made[0][1]["claim"]["list_id"]
    made += [(200, await batch(client, list_id, [f"b-{n}" for n in range(5)]))]
    await client.close()
    with sqlite3.connect(settings.database) as db:
        to_schema_6(db)
        assert db.execute("SELECT count(*) FROM claims").fetchone() == (len(requests) + 5,)

    client = await restartable()

    again = await send_all(client, requests)
    again += [(200, await batch(client, list_id, [f"b-{n}" for n in range(5)]))]
    assert again == [(200, reply) for _, reply in made]
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == len(requests) + 5
    status, tray = await call(client, "GET", "/v1/users/a-3/vouchers")
    assert status == 200
    assert [voucher["code"] for voucher in tray["vouchers"]] == [made[15][1]["claim"]["code"]]


async def test_claims_past_the_first_dict_are_repeats_before_and_after_a_restart(
    tiny_first_dict: None, restartable: Restart
) -> None:
    client = await restartable()
    requests = await claims_of_every_kind(client)
    made = await send_all(client, requests)
    assert {status for status, _ in made} == {201}
    list_id = made[0][1]["claim"]["list_id"]
    users = [f"b-{n}" for n in range(30)]
    batched = await batch(client, list_id, users)
    assert len(batched["claims"]) == 30

    assert await send_all(client, requests) == [(200, reply) for _, reply in made]
    assert await batch(client, list_id, users) == batched

    client = await restartable()

    assert await send_all(client, requests) == [(200, reply) for _, reply in made]
    assert await batch(client, list_id, users) == batched
    # New claims after the restart land beside the recovered ones and are found again.
    more = [f"n-{n}" for n in range(30)]
    fresh = codes_by_user(await batch(client, list_id, [*users[:5], *more]))
    assert {user: fresh[user] for user in users[:5]} == {
        user: code for user, code in codes_by_user(batched).items() if user in users[:5]
    }
    assert codes_by_user(await batch(client, list_id, more)) == {u: fresh[u] for u in more}
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == len(requests) + 60
    for user, code in (("k-3", made[16][1]["claim"]["code"]), ("n-7", fresh["n-7"])):
        status, tray = await call(client, "GET", f"/v1/users/{user}/vouchers")
        assert status == 200
        assert [voucher["code"] for voucher in tray["vouchers"]] == [code]


def codes_by_user(reply: dict[str, Any]) -> dict[str, str]:
    assert reply["failed"] == []
    return {claim["user_id"]: claim["code"] for claim in reply["claims"]}


async def test_one_user_claiming_many_times_at_once_past_the_first_dict_gets_one_code(
    tiny_first_dict: None, client: Client
) -> None:
    list_id = await list_with_codes(client, make_codes(100))
    await batch(client, list_id, [f"pre-{n}" for n in range(20)])
    path = f"/v1/lists/{list_id}/claims"
    replies = await send_all(client, [(path, {"user_id": "same"})] * 50)
    replies += await send_all(client, [(path, {"user_id": "same"})] * 50)
    assert len({reply["claim"]["code"] for _, reply in replies}) == 1
    assert sorted(status for status, _ in replies) == [200] * 99 + [201]
