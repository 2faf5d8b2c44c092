"""Reward events made together, as a run (a batch slice's, or a list actor's turn of single
claims), are the events made one by one, byte for byte, and each holds every property the API
documents: as published, and as read back from the row the journal stores."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from voucherd import clock
from voucherd.duplicates import Scope
from voucherd.events import RewardRun, Rewards
from voucherd.lists import ListInfo
from voucherd.statuses import Status

INFO = ListInfo(7, 'Part"ner', "t\\ag", "name", "déscription", 4e9, Status.ACTIVE, Scope.PARTNER,
                0, 0, 0)  # fmt: skip

# What validation lets through: codes are printable ASCII without '"' or ','; user ids are any
# text without control characters.
CODES = st.text(st.sampled_from([chr(c) for c in range(33, 127) if chr(c) not in '",']), min_size=1)
USERS = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1)


def greeting(properties: dict[str, Any]) -> str:
    return f"Hi {properties['userId']}, your code is {properties['voucherCode']}"


@given(
    pairs=st.lists(st.tuples(CODES, USERS), min_size=1, max_size=8),
    now=st.floats(min_value=0, max_value=4e9),
    campaign_id=st.none() | st.integers(min_value=1, max_value=10**6),
    seq=st.integers(min_value=1, max_value=10**9),
    data=st.data(),
)
def test_a_run_of_reward_events_equals_them_made_one_by_one(
    pairs: list[tuple[str, str]], now: float, campaign_id: int | None, seq: int, data: st.DataObject
) -> None:
    render = greeting if campaign_id else None
    rewards = Rewards(INFO, "Campaign" if campaign_id else "API", campaign_id, render)
    codes, users = [code for code, _ in pairs], [user for _, user in pairs]
    messages = [rewards.message(code, user, now) for code, user in pairs]
    run = rewards.run(codes, users, messages, now)
    run.seq = seq
    single = [rewards.event(code, user, now) for code, user in pairs]
    assert messages == [message for _, message in single]
    for number, (event, _) in enumerate(single, seq):
        event.seq = number
    expected = [(e.seq, e.type, e.time, e.base, e.data) for e, _ in single]
    assert [(e.seq, e.type, e.time, e.base, e.data) for e in run.events()] == expected
    # Every event whole, against the properties the API documents, in the order made.
    for event, (code, user), message in zip(run.events(), pairs, messages, strict=True):
        assert message == (greeting({"userId": user, "voucherCode": code}) if render else None)
        assert list(json.loads(event.data).items()) == [
            ("CT Source", "Promo Module"),
            ("campaignId", campaign_id),
            ("listDescription", "déscription"),
            ("listExpiry", clock.format_time(4e9)),
            ("listTag", "t\\ag"),
            ("partner", 'Part"ner'),
            ("source", "Campaign" if campaign_id else "API"),
            ("voucherListId", 7),
            ("eventTimestamp", int(now)),
            ("voucherCode", code),
            ("userId", user),
            ("message", message),
        ]
    if len(pairs) == 1:
        # A run of one is stored as its event is.
        assert run.stored() == single[0][0].stored()
        return
    # Read back from its row, whole or from any event to any later one.
    stored = RewardRun.from_stored(run.base, run.time, seq, run.stored())
    first = data.draw(st.integers(min_value=seq, max_value=seq + len(pairs) - 1))
    last = data.draw(st.integers(min_value=first, max_value=seq + len(pairs) - 1))
    part = [(e.seq, e.type, e.time, e.base, e.data) for e in stored.events(first, last)]
    assert part == expected[first - seq : last - seq + 1]
