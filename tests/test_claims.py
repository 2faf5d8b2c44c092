"""Claims over HTTP: one code per (list, user, idempotency key), batches, the voucher tray, and
invariants 1, 3 and 4 under concurrency and across a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from support import (
    FUTURE,
    Client,
    assert_balanced,
    create_list,
    get_list,
    list_with_codes,
    make_codes,
    pages,
)

from voucherd.server import pieces as server_pieces

Caller = Client | aiohttp.ClientSession


@asynccontextmanager
async def wide_session(client: Client) -> AsyncIterator[aiohttp.ClientSession]:
    """A session to the same server with no cap on connections, so every request of a gather is
    on the wire at once (the test client's session allows 100)."""
    async with aiohttp.ClientSession(
        base_url=f"http://{client.host}:{client.port}",
        connector=aiohttp.TCPConnector(limit=0),
    ) as session:
        yield session


async def claim(
    client: Caller, list_id: int, user_id: str, **fields: Any
) -> tuple[int, dict[str, Any]]:
    response = await client.post(f"/v1/lists/{list_id}/claims", json={"user_id": user_id, **fields})
    reply: dict[str, Any] = await response.json()
    return response.status, reply


async def claim_batch(client: Client, list_id: int, user_ids: list[str]) -> dict[str, Any]:
    response = await client.post(f"/v1/lists/{list_id}/claims/batch", json={"user_ids": user_ids})
    assert response.status == 200, await response.text()
    reply: dict[str, Any] = await response.json()
    return reply


async def vouchers(client: Client, user_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/users/{user_id}/vouchers")
    assert response.status == 200, await response.text()
    reply: dict[str, Any] = await response.json()
    found: list[dict[str, Any]] = reply["vouchers"]
    return found


async def exhaust(client: Client, list_id: int, prefix: str) -> list[str]:
    """Claim every code left in a list, one user each; return the codes handed out."""
    available = (await get_list(client, list_id))["codes"]["available"]
    reply = await claim_batch(client, list_id, [f"{prefix}-{n}" for n in range(available + 1)])
    assert len(reply["claims"]) == available
    assert [failure["error"]["code"] for failure in reply["failed"]] == ["list_exhausted"]
    return [claim["code"] for claim in reply["claims"]]


# -- one claim ---------------------------------------------------------------------------------


async def test_a_claim_gets_201_and_a_code(client: Client) -> None:
    codes = make_codes(3)
    list_id = await list_with_codes(client, codes)

    status, reply = await claim(client, list_id, "u-42")

    assert status == 201
    made = reply["claim"]
    assert made["code"] in codes
    assert made["list_id"] == list_id
    assert made["user_id"] == "u-42"
    assert made["idempotency_key"] == ""
    assert made["source"] == "API"
    assert made["expires_at"] == FUTURE
    assert isinstance(made["id"], int)


async def test_the_same_user_again_gets_200_and_the_same_claim(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    _, first = await claim(client, list_id, "u-42")

    status, again = await claim(client, list_id, "u-42")

    assert status == 200
    assert again["claim"] == first["claim"]
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == 1
    assert_balanced(listing)


async def test_different_idempotency_keys_get_different_codes(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(5))

    answers = [await claim(client, list_id, "u-42", idempotency_key=f"order-{n}") for n in range(3)]
    repeated = await claim(client, list_id, "u-42", idempotency_key="order-1")

    assert [status for status, _ in answers] == [201, 201, 201]
    codes = [reply["claim"]["code"] for _, reply in answers]
    assert len(set(codes)) == 3
    assert [reply["claim"]["idempotency_key"] for _, reply in answers] == [
        "order-0",
        "order-1",
        "order-2",
    ]
    assert repeated == (200, answers[1][1])


async def test_a_user_without_a_key_holds_at_most_one_code_per_list(client: Client) -> None:
    first_list = await list_with_codes(client, make_codes(3, "A"), tag="first")
    second_list = await list_with_codes(client, make_codes(3, "B"), tag="second")

    answers = [await claim(client, first_list, "u-42") for _ in range(4)]
    other = await claim(client, second_list, "u-42")

    assert [status for status, _ in answers] == [201, 200, 200, 200]
    assert len({reply["claim"]["code"] for _, reply in answers}) == 1
    assert other[0] == 201
    assert other[1]["claim"]["code"].startswith("B")
    assert len(await vouchers(client, "u-42")) == 2


async def test_metadata_round_trips(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(2))
    metadata = {"order": "o-7", "amount": 120.5, "tags": ["vip", "app"], "nested": {"a": None}}

    status, made = await claim(client, list_id, "u-42", metadata=metadata)
    _, again = await claim(client, list_id, "u-42")

    assert status == 201
    assert made["claim"]["metadata"] == metadata
    assert again["claim"]["metadata"] == metadata


# -- the voucher tray --------------------------------------------------------------------------


async def test_the_voucher_tray_lists_every_code_a_user_holds_with_its_list(
    client: Client,
) -> None:
    puma = await list_with_codes(client, make_codes(2, "P"), tag="holi")
    nike = await list_with_codes(
        client,
        make_codes(2, "N"),
        partner="Nike",
        tag="diwali",
        name="Diwali",
        description="Shoes only",
        expires_at="2031-06-30T12:00:00Z",
    )
    _, first = await claim(client, puma, "u-42")
    _, second = await claim(client, nike, "u-42")
    _, third = await claim(client, nike, "u-42", idempotency_key="again")
    await claim(client, puma, "someone-else")

    tray = await vouchers(client, "u-42")

    by_code = {voucher["code"]: voucher for voucher in tray}
    assert len(tray) == 3
    assert by_code[first["claim"]["code"]] == {
        "claim_id": first["claim"]["id"],
        "code": first["claim"]["code"],
        "list_id": puma,
        "partner": "Puma",
        "tag": "holi",
        "name": "Holi 2025 Sale",
        "description": "Orders above $100",
        "expires_at": FUTURE,
        "claimed_at": first["claim"]["claimed_at"],
        "campaign_id": None,
    }
    for made in (second, third):
        voucher = by_code[made["claim"]["code"]]
        assert voucher["list_id"] == nike
        assert voucher["partner"] == "Nike"
        assert voucher["tag"] == "diwali"
        assert voucher["name"] == "Diwali"
        assert voucher["description"] == "Shoes only"
        assert voucher["expires_at"] == "2031-06-30T12:00:00Z"
        assert voucher["campaign_id"] is None


async def test_a_tray_gathered_a_piece_at_a_time_holds_every_claim_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tray goes through the lists, and then through the user's claims, a few at a time
    (here two), other requests running between pieces."""
    monkeypatch.setattr(server_pieces, "PIECE", 2)
    lists = [await list_with_codes(client, make_codes(5, f"L{n}"), tag=f"t{n}") for n in range(5)]
    codes = []
    for list_id in lists[1:]:
        _, made = await claim(client, list_id, "u-42")
        codes.append(made["claim"]["code"])
    for key in ("a", "b", "c"):
        _, made = await claim(client, lists[3], "u-42", idempotency_key=key)
        codes.append(made["claim"]["code"])
    batch = await claim_batch(client, lists[4], ["u-7", "u-42", "u-8"])
    await claim(client, lists[0], "someone-else")

    tray = await vouchers(client, "u-42")

    assert sorted(voucher["code"] for voucher in tray) == sorted(codes)
    assert [voucher["list_id"] for voucher in tray] == [*lists[1:], *[lists[3]] * 3]
    # The batch repeated the claim u-42 held on that list already.
    assert {made["user_id"]: made["code"] for made in batch["claims"]}["u-42"] == codes[3]


async def test_a_tray_comes_in_pages_in_claim_order(client: Client) -> None:
    lists = [await list_with_codes(client, make_codes(5, f"L{n}"), tag=f"t{n}") for n in range(3)]
    made = []
    for n in range(7):
        _, reply = await claim(client, lists[n % 3], "u-42", idempotency_key=f"k{n}")
        made.append(reply["claim"])
    await claim(client, lists[0], "someone-else")

    tray = await pages(client, "/v1/users/u-42/vouchers", "vouchers", "claim_id", 3)

    assert [[voucher["claim_id"] for voucher in page] for page in tray] == [
        [claim["id"] for claim in made[at : at + 3]] for at in (0, 3, 6)
    ]
    assert [voucher["code"] for page in tray for voucher in page] == [c["code"] for c in made]
    # A page that takes the last voucher says none follow: no empty page after it.
    whole = await pages(client, "/v1/users/u-42/vouchers", "vouchers", "claim_id", 7)
    assert [[voucher["claim_id"] for voucher in page] for page in whole] == [
        [claim["id"] for claim in made]
    ]
    response = await client.get("/v1/users/u-42/vouchers", params={"after": str(made[-1]["id"])})
    assert await response.json() == {"vouchers": [], "has_more": False}


async def test_a_user_without_claims_has_an_empty_tray(client: Client) -> None:
    assert await vouchers(client, "nobody") == []


# -- batches -----------------------------------------------------------------------------------


async def test_a_batch_gives_one_claim_per_distinct_user(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))

    reply = await claim_batch(client, list_id, ["a", "b", "a", "c", "b", "a"])

    assert reply["failed"] == []
    users = [made["user_id"] for made in reply["claims"]]
    assert sorted(users) == ["a", "b", "c"]
    assert len({made["code"] for made in reply["claims"]}) == 3
    assert all(made["idempotency_key"] == "" for made in reply["claims"])
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == 3
    assert_balanced(listing)


async def test_a_batch_takes_any_printable_user_id_and_keys_it_as_a_single_claim(
    client: Client,
) -> None:
    # The batch checks its user ids all at once, then one by one only when that check fails;
    # text beyond ASCII takes the slow way and must pass it.
    list_id = await list_with_codes(client, make_codes(10))
    users = ["zoë", "用户-7", "plain", "a b"]

    reply = await claim_batch(client, list_id, users)

    assert reply["failed"] == []
    by_user = {made["user_id"]: made for made in reply["claims"]}
    assert set(by_user) == set(users)
    for user in users:
        # The batch keyed each claim as a single claim keys it: asking again repeats it.
        assert await claim(client, list_id, user) == (200, {"claim": by_user[user]})


async def test_a_batch_gives_users_who_hold_a_code_their_existing_claim(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    _, held = await claim(client, list_id, "a")

    reply = await claim_batch(client, list_id, ["a", "b"])

    by_user = {made["user_id"]: made for made in reply["claims"]}
    assert set(by_user) == {"a", "b"}
    assert by_user["a"]["id"] == held["claim"]["id"]
    assert by_user["a"]["code"] == held["claim"]["code"]
    assert by_user["b"]["code"] != held["claim"]["code"]
    # And a single claim afterwards sees the batch's claim as its own.
    assert await claim(client, list_id, "b") == (200, {"claim": by_user["b"]})


async def test_a_batch_that_exhausts_the_list_fails_the_rest(client: Client) -> None:
    codes = make_codes(3)
    list_id = await list_with_codes(client, codes)
    users = [f"u-{n}" for n in range(5)]

    reply = await claim_batch(client, list_id, users)

    assert sorted(made["code"] for made in reply["claims"]) == codes
    assert len(reply["failed"]) == 2
    assert {failure["user_id"] for failure in reply["failed"]} | {
        made["user_id"] for made in reply["claims"]
    } == set(users)
    for failure in reply["failed"]:
        assert failure["error"]["code"] == "list_exhausted"
        assert failure["error"]["message"]
    listing = await get_list(client, list_id)
    assert listing["codes"] == {"uploaded": 3, "available": 0, "distributed": 3, "withdrawn": 0}


async def test_a_batch_on_a_paused_list_refuses_each_new_user(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    _, held = await claim(client, list_id, "holder")
    assert (await client.post(f"/v1/lists/{list_id}/pause")).status == 200

    reply = await claim_batch(client, list_id, ["holder", "x", "y"])

    assert [made["code"] for made in reply["claims"]] == [held["claim"]["code"]]
    assert sorted(failure["user_id"] for failure in reply["failed"]) == ["x", "y"]
    assert {failure["error"]["code"] for failure in reply["failed"]} == {"list_paused"}
    assert (await get_list(client, list_id))["codes"]["distributed"] == 1


async def test_a_paused_list_still_returns_an_existing_claim(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    _, held = await claim(client, list_id, "holder")
    assert (await client.post(f"/v1/lists/{list_id}/pause")).status == 200

    assert await claim(client, list_id, "holder") == (200, held)
    status, refused = await claim(client, list_id, "newcomer")
    assert status == 409
    assert refused["error"]["code"] == "list_paused"


# -- concurrency (invariants 1 and 3) ----------------------------------------------------------


async def test_many_more_concurrent_claimers_than_codes_get_each_code_once(
    client: Client,
) -> None:
    codes = make_codes(50)
    list_id = await list_with_codes(client, codes)

    async with wide_session(client) as session:
        answers = await asyncio.gather(*(claim(session, list_id, f"u-{n}") for n in range(500)))

    won = [reply["claim"]["code"] for status, reply in answers if status == 201]
    assert sorted(won) == codes
    refused = [reply for status, reply in answers if status != 201]
    assert len(refused) == 450
    assert all(status in (201, 409) for status, _ in answers)
    assert {reply["error"]["code"] for reply in refused} == {"list_exhausted"}
    listing = await get_list(client, list_id)
    assert listing["codes"] == {"uploaded": 50, "available": 0, "distributed": 50, "withdrawn": 0}


async def test_one_user_claiming_many_times_at_once_gets_one_code(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(100))

    answers = await asyncio.gather(*(claim(client, list_id, "u-42") for _ in range(50)))

    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 49 + [201]
    assert len({reply["claim"]["code"] for _, reply in answers}) == 1
    assert len({reply["claim"]["id"] for _, reply in answers}) == 1
    assert (await get_list(client, list_id))["codes"]["distributed"] == 1


async def test_many_lists_claimed_at_once_give_each_list_codes_to_its_own_claimers(
    client: Client,
) -> None:
    lists: dict[int, set[str]] = {}
    for index in range(10):
        codes = make_codes(60, prefix=f"L{index}-")
        lists[await list_with_codes(client, codes, tag=f"list-{index}")] = set(codes)

    async def claim_from(
        session: aiohttp.ClientSession, list_id: int, n: int
    ) -> tuple[int, int, dict[str, Any]]:
        status, reply = await claim(session, list_id, f"u-{n}")
        return list_id, status, reply

    async with wide_session(client) as session:
        answers = await asyncio.gather(
            *(claim_from(session, list_id, n) for n in range(100) for list_id in lists)
        )

    for list_id, own_codes in lists.items():
        mine = [(status, reply) for owner, status, reply in answers if owner == list_id]
        won = [reply["claim"]["code"] for status, reply in mine if status == 201]
        assert sorted(won) == sorted(own_codes)
        assert [reply["error"]["code"] for status, reply in mine if status != 201] == [
            "list_exhausted"
        ] * 40
        listing = await get_list(client, list_id)
        assert listing["codes"]["distributed"] == 60
        assert_balanced(listing)


async def test_concurrent_batches_and_single_claims_never_share_a_code(client: Client) -> None:
    codes = make_codes(400)
    list_id = await list_with_codes(client, codes)

    async def single(n: int) -> list[str]:
        status, reply = await claim(client, list_id, f"single-{n}")
        return [reply["claim"]["code"]] if status == 201 else []

    async def batch(n: int) -> list[str]:
        reply = await claim_batch(client, list_id, [f"batch-{n}-{m}" for m in range(30)])
        return [made["code"] for made in reply["claims"]]

    handed_out = await asyncio.gather(
        *(single(n) for n in range(200)), *(batch(n) for n in range(10))
    )

    won = [code for part in handed_out for code in part]
    assert len(won) == len(set(won))
    assert set(won) <= set(codes)
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == len(won)
    assert_balanced(listing)


async def test_the_same_users_in_concurrent_batches_and_single_claims_get_one_code_each(
    client: Client,
) -> None:
    # Batches and single claims for the same users, all at once: whichever comes first makes
    # a user's claim, in flight or committed; every other answer is that claim.
    # (test_claim_runs holds the journal to be sure they meet in flight.)
    list_id = await list_with_codes(client, make_codes(1000))
    users = [f"u-{n}" for n in range(300)]

    async def single(user_id: str) -> tuple[int, dict[str, Any]]:
        status, reply = await claim(client, list_id, user_id)
        assert status in (200, 201), reply
        return status, reply["claim"]

    answers = await asyncio.gather(
        *(claim_batch(client, list_id, users[start:] + users[:start]) for start in (0, 100, 200)),
        *(single(user_id) for user_id in users[::3]),
    )

    batches, singles = answers[:3], answers[3:]
    held: dict[str, dict[str, Any]] = {}
    for reply in batches:
        assert isinstance(reply, dict)
        assert reply["failed"] == []
        assert sorted(made["user_id"] for made in reply["claims"]) == sorted(users)
        for made in reply["claims"]:
            assert held.setdefault(made["user_id"], made) == made
    for answer in singles:
        assert isinstance(answer, tuple)
        made = answer[1]
        assert held[made["user_id"]] == made
    assert len({made["code"] for made in held.values()}) == len(users)
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == len(users)
    assert_balanced(listing)


# -- idempotency across a restart (invariants 1 and 4) -----------------------------------------


async def test_claims_made_before_a_restart_come_back_the_same_after_it(
    restartable: Callable[[], Awaitable[Client]],
) -> None:
    client = await restartable()
    codes = make_codes(40)
    created = await create_list(client)
    list_id = created["id"]
    response = await client.post(
        f"/v1/lists/{list_id}/uploads",
        data="".join(f"{code}\n" for code in codes),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status == 201

    before: dict[tuple[str, str], dict[str, Any]] = {}
    for n in range(5):
        _, reply = await claim(client, list_id, f"u-{n}")
        before[(f"u-{n}", "")] = reply["claim"]
        _, reply = await claim(client, list_id, f"u-{n}", idempotency_key="order-1")
        before[(f"u-{n}", "order-1")] = reply["claim"]
    batch = await claim_batch(client, list_id, [f"b-{n}" for n in range(5)])
    for made in batch["claims"]:
        before[(made["user_id"], "")] = made

    client = await restartable()

    for (user_id, key), made in before.items():
        status, reply = await claim(client, list_id, user_id, idempotency_key=key)
        assert status == 200
        assert reply["claim"]["id"] == made["id"]
        assert reply["claim"]["code"] == made["code"]
    listing = await get_list(client, list_id)
    assert listing["codes"] == {"uploaded": 40, "available": 25, "distributed": 15, "withdrawn": 0}

    after = await exhaust(client, list_id, "after")
    earlier = {made["code"] for made in before.values()}
    assert len(after) == 25
    assert not earlier & set(after)
    assert earlier | set(after) == set(codes)


async def test_a_restart_brings_back_the_claims_of_large_and_small_lists_alike(
    restartable: Callable[[], Awaitable[Client]],
) -> None:
    # Recovery scans the table of claims stored alone for a list holding a large share of them
    # and reads the others through their index: both ways must give back the same claims, and
    # so must the runs that batches are stored in.
    client = await restartable()
    sizes = {"big": 60, "small-1": 2, "small-2": 2, "small-3": 1, "small-4": 1}
    before: dict[tuple[int, str, str], dict[str, Any]] = {}
    list_ids = []
    for n, (tag, size) in enumerate(sizes.items()):
        list_id = await list_with_codes(client, make_codes(size + 2, "ABCDE"[n]), tag=tag)
        list_ids.append(list_id)
        users = [f"{tag}-{k}" for k in range(size - 1)]
        if tag == "big":
            for user_id in users:
                _, reply = await claim(client, list_id, user_id)
                before[(list_id, user_id, "")] = reply["claim"]
        elif users:
            for made in (await claim_batch(client, list_id, users))["claims"]:
                before[(list_id, made["user_id"], "")] = made
        _, reply = await claim(client, list_id, f"{tag}-keyed", idempotency_key="order-1")
        before[(list_id, f"{tag}-keyed", "order-1")] = reply["claim"]

    client = await restartable()

    for (list_id, user_id, key), made in before.items():
        status, reply = await claim(client, list_id, user_id, idempotency_key=key)
        assert status == 200
        assert reply["claim"] == made
    for list_id, size in zip(list_ids, sizes.values(), strict=True):
        listing = await get_list(client, list_id)
        assert listing["codes"]["distributed"] == size
        assert listing["codes"]["available"] == 2
