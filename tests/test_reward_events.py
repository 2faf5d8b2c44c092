"""Reward events made a batch at a time are the events made one by one, byte for byte."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from voucherd.duplicates import Scope
from voucherd.events import Rewards
from voucherd.lists import ListInfo
from voucherd.statuses import Status

INFO = ListInfo(7, 'Part"ner', "t\\ag", "name", "déscription", 4e9, Status.ACTIVE, Scope.PARTNER,
                0, 0, 0)  # fmt: skip

# What validation lets through: codes are printable ASCII without '"' or ','; user ids are any
# text without control characters.
CODES = st.text(st.sampled_from([chr(c) for c in range(33, 127) if chr(c) not in '",']), min_size=1)
USERS = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1)


@given(
    pairs=st.lists(st.tuples(CODES, USERS), max_size=8),
    now=st.floats(min_value=0, max_value=4e9),
    campaign_id=st.none() | st.integers(min_value=1, max_value=10**6),
)
def test_a_batch_of_reward_events_equals_them_made_one_by_one(
    pairs: list[tuple[str, str]], now: float, campaign_id: int | None
) -> None:
    rewards = Rewards(INFO, "Campaign" if campaign_id else "API", campaign_id)
    codes, users = [code for code, _ in pairs], [user for _, user in pairs]
    batch = rewards.events(codes, users, now)
    single = [rewards.event(code, user, now)[0] for code, user in pairs]
    assert [(e.type, e.time, e.base, e.own, e.data) for e in batch] == [
        (e.type, e.time, e.base, e.own, e.data) for e in single
    ]
    for event, (code, user) in zip(batch, pairs, strict=True):
        data = json.loads(event.data)
        assert (data["voucherCode"], data["userId"], data["voucherListId"]) == (code, user, 7)
