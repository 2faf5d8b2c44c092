"""A list's map of claim keys: past its first dict it spreads keys over many, and must answer
every lookup as one dict would. The first dict is cut to a few keys (`tiny_first_dict`), so the
others are reached; test_claim_runs.py and test_campaigns.py run claims and rewards through a
real server the same way."""

from __future__ import annotations

import random

import pytest

from voucherd.claim_keys import ClaimKeys


def test_the_map_answers_as_one_dict_would_past_its_first_dict(tiny_first_dict: None) -> None:
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
        values = list(range(at, at + len(part)))
        # One key held already: nothing is added, and the held key keeps its value.
        held = keys[rng.randrange(at)]
        assert not found.add_new([*part, held], [*values, -1])
        assert len(found) == len(expected)
        assert found.get(held) == expected[held]
        assert all(found.get(key) is None for key in part)
        if rng.random() < 0.5:
            assert found.add_new(part, values)
        else:
            found.add(part, values)
        expected.update(zip(part, values, strict=True))
        at += len(part)
    assert len(found) == len(expected) == len(keys)
    assert all(found.get(key) == value for key, value in expected.items())
    assert found.get("nobody") is None
    assert found._shards is not None
    # Top bytes of the keys' hashes, negative and positive alike, each pick a dict.
    assert sum(1 for shard in found._shards if shard) > 200


def test_setdefault_keeps_the_first_value_on_either_side(tiny_first_dict: None) -> None:
    lists: ClaimKeys[list[str]] = ClaimKeys()
    for n in range(20):
        lists.setdefault(f"user-{n}", []).append("a")
    for n in range(20):
        lists.setdefault(f"user-{n}", []).append("b")
    assert [lists.get(f"user-{n}") for n in range(20)] == [["a", "b"]] * 20
    assert len(lists) == 20


def test_counts_set_and_popped_on_either_side_stay_as_a_dict_keeps_them(
    tiny_first_dict: None,
) -> None:
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


def test_removed_keys_are_gone_on_either_side(tiny_first_dict: None) -> None:
    keys = [f"user-{n}" for n in range(100)]
    found: ClaimKeys[int] = ClaimKeys()
    for at in range(0, 100, 10):
        assert found.add_new(keys[at : at + 10], range(at, at + 10))
    found.remove(keys[::2])
    assert len(found) == 50
    assert [found.get(key) for key in keys[:4]] == [None, 1, None, 3]
    assert found.add_new(keys[::2], range(100, 150))
    assert found.get(keys[98]) == 149


def test_keys_and_values_must_pair_up() -> None:
    with pytest.raises(ValueError, match="2 keys for 1 values"):
        ClaimKeys[int]().add(["a", "b"], [1])
    with pytest.raises(ValueError, match="1 keys for 2 values"):
        ClaimKeys[int]().add_new(["a"], [1, 2])
