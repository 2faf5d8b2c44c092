"""A list's map of claim keys: past its first dict it spreads keys over many, and must answer
every lookup as one dict would. The first dict is made tiny here, so a few keys reach the others;
the server tests run whole claims, repeats, batches and a restart through it the same way."""

from __future__ import annotations

import asyncio
import random
from typing import Any
from unittest.mock import ANY

import pytest
from support import Client, call, get_list, list_with_codes, make_codes
from test_campaigns import create_campaign, get_campaign, refused, reward, reward_batch
from test_claim_runs import Restart, batch, claims_of_every_kind, send_all

from voucherd import claim_keys
from voucherd.claim_keys import ClaimKeys


@pytest.fixture
def tiny_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claim_keys, "FIRST", 7)


def test_the_map_answers_as_one_dict_would_past_its_first_dict(tiny_first: None) -> None:
    rng = random.Random(5)
    keys = [f"user-{n}" if n % 3 else f"user-{n}\x1forder-{n}" for n in range(3000)]
    rng.shuffle(keys)
    recovered = dict.fromkeys(keys[:10], 0)  # a recovered map larger than FIRST
    expected: dict[str, int] = dict(recovered)
    found = ClaimKeys(dict(recovered))
    at = 10
    while at < len(keys):
        size = rng.choice((1, 1, 2, 5, 40))
        part = keys[at : at + size]
        assert found.isdisjoint(part)
        assert not found.isdisjoint([*part, keys[rng.randrange(at)]])
        values = list(range(at, at + len(part)))
        found.add(part, values)
        expected.update(zip(part, values, strict=True))
        at += len(part)
    assert len(found) == len(expected) == len(keys)
    assert all(found.get(key) == value for key, value in expected.items())
    assert found.get("nobody") is None
    assert found._shards is not None
    # Top bytes of the keys' hashes, negative and positive alike, each pick a dict.
    assert sum(1 for shard in found._shards if shard) > 200


def test_setdefault_keeps_the_first_value_on_either_side(tiny_first: None) -> None:
    lists: ClaimKeys[list[str]] = ClaimKeys()
    for n in range(20):
        lists.setdefault(f"user-{n}", []).append("a")
    for n in range(20):
        lists.setdefault(f"user-{n}", []).append("b")
    assert [lists.get(f"user-{n}") for n in range(20)] == [["a", "b"]] * 20
    assert len(lists) == 20


def test_counts_set_and_popped_on_either_side_stay_as_a_dict_keeps_them(tiny_first: None) -> None:
    rng = random.Random(8)
    users = [f"user-{n}" for n in range(400)]
    expected: dict[str, int] = {}
    counts: ClaimKeys[int] = ClaimKeys()
    for _ in range(5000):
        user = rng.choice(users)
        if rng.random() < 0.6:
            expected[user] = expected.get(user, 0) + 1
            counts.set(user, (counts.get(user) or 0) + 1)
        else:
            assert counts.pop(user) == expected.pop(user, None)
    assert len(counts) == len(expected)
    assert {user: counts.get(user) for user in users} == {
        user: expected.get(user) for user in users
    }


def test_keys_and_values_must_pair_up() -> None:
    with pytest.raises(ValueError, match="2 keys for 1 values"):
        ClaimKeys[int]().add(["a", "b"], [1])


async def test_claims_past_the_first_dict_are_repeats_before_and_after_a_restart(
    tiny_first: None, restartable: Restart
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
    tiny_first: None, client: Client
) -> None:
    list_id = await list_with_codes(client, make_codes(100))
    await batch(client, list_id, [f"pre-{n}" for n in range(20)])
    path = f"/v1/lists/{list_id}/claims"
    replies = await send_all(client, [(path, {"user_id": "same"})] * 50)
    replies += await send_all(client, [(path, {"user_id": "same"})] * 50)
    assert len({reply["claim"]["code"] for _, reply in replies}) == 1
    assert sorted(status for status, _ in replies) == [200] * 99 + [201]


async def test_a_campaigns_rewards_and_limits_past_the_first_dict_hold_across_a_restart(
    tiny_first: None, restartable: Restart
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(200))
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_user=2))["id"]
    users = [f"u-{n}" for n in range(20)]
    plain = await asyncio.gather(*(reward(client, campaign_id, user) for user in users))
    keyed = await asyncio.gather(
        *(reward(client, campaign_id, user, idempotency_key="order") for user in users)
    )
    assert {status for status, _ in [*plain, *keyed]} == {201}
    batched = await reward_batch(client, campaign_id, [f"b-{n}" for n in range(15)])
    assert [result["rewarded"] for result in batched] == [True] * 15

    for restarted in (False, True):
        if restarted:
            client = await restartable()
        again = await asyncio.gather(*(reward(client, campaign_id, user) for user in users))
        assert again == [(200, reply) for _, reply in plain]
        over = await asyncio.gather(
            *(reward(client, campaign_id, user, idempotency_key="more") for user in users)
        )
        assert over == [refused("user_limit_reached")] * 20
        assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 55}
    fresh = await reward(client, campaign_id, "late", idempotency_key="one")
    assert fresh[0] == 201
    assert await reward(client, campaign_id, "late", idempotency_key="two") == (201, ANY)
    assert await reward(client, campaign_id, "late") == refused("user_limit_reached")
