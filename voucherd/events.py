"""Events: what happened, in the order it was made durable. No I/O.

Each event is written in the same journal transaction as the change it reports, and numbered by
the journal's writer as it writes: `seq` grows by one per event with no gaps, because a
transaction that fails hands its numbers back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import groupby
from operator import attrgetter
from typing import Any

import msgpack
import orjson

from voucherd import clock, wire
from voucherd.claims import Claim
from voucherd.lists import ListInfo

VOUCHER_REWARDED = "voucher.rewarded"
LIST_STATUS_CHANGED = "list.status_changed"
UPLOAD_COMPLETED = "upload.completed"
UPLOAD_FAILED = "upload.failed"
CAMPAIGN_STATUS_CHANGED = "campaign.status_changed"
LIST_LOW_STOCK = "list.low_stock"
LIST_EXHAUSTED = "list.exhausted"
LIST_EXPIRING = "list.expiring"

TYPES = frozenset(
    {
        VOUCHER_REWARDED,
        LIST_STATUS_CHANGED,
        UPLOAD_COMPLETED,
        UPLOAD_FAILED,
        CAMPAIGN_STATUS_CHANGED,
        LIST_LOW_STOCK,
        LIST_EXHAUSTED,
        LIST_EXPIRING,
    }
)

# The reference product's name for the reward event; other events are named by their type.
REWARDED_NAME = "CT Partner Voucher Rewarded"


class Event:
    """One event. `data` is kept as JSON text, encoded once: the journal stores it and every
    JSON subscriber receives it without encoding it again.

    A reward event is made of two JSON objects joined: `base`, the properties its list and
    source fix, shared by every reward of that list, and `own`, the few that vary. The journal
    stores `base` once and each event's `own` alone, a fifth of the bytes; the two are joined
    only when a subscriber asks for the whole."""

    __slots__ = ("_data", "_json", "_msgpack", "base", "own", "seq", "time", "type")

    # How many events it is: a RewardRun is many.
    count = 1

    def __init__(
        self,
        type: str,
        data: bytes | None,
        time: float,
        seq: int = 0,
        base: bytes | None = None,
        own: bytes | None = None,
    ) -> None:
        self.type = type
        self._data = data
        self.time = time
        self.seq = seq
        self.base = base
        self.own = own
        self._json: bytes | None = None
        self._msgpack: bytes | None = None

    @classmethod
    def of(cls, type: str, data: dict[str, Any], time: float | None = None) -> Event:
        return cls(type, wire.encode(data), clock.now() if time is None else time)

    @classmethod
    def joined(cls, type: str, base: bytes, own: bytes, time: float) -> Event:
        """An event whose data is the two objects' properties together."""
        return cls(type, None, time, 0, base, own)

    @property
    def data(self) -> bytes:
        """The event's properties as one JSON object."""
        if self._data is None:
            assert self.base is not None
            assert self.own is not None
            self._data = join(self.base, self.own)
        return self._data

    def stored(self) -> bytes:
        """What the events table keeps of the event's data: with a base, only its own part."""
        return self.data if self.own is None else self.own

    @property
    def name(self) -> str:
        return REWARDED_NAME if self.type == VOUCHER_REWARDED else self.type

    def view(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "type": self.type,
            "name": self.name,
            "time": clock.format_time(self.time),
            "data": orjson.Fragment(self.data),
        }

    def json(self) -> bytes:
        """The event as one JSON frame; encoded once, however many subscribers get it."""
        if self._json is None:
            self._json = wire.encode(self.view())
        return self._json

    def msgpack(self) -> bytes:
        if self._msgpack is None:
            view = self.view()
            view["data"] = orjson.loads(self.data)
            self._msgpack = msgpack.packb(view)
        return self._msgpack


Render = Callable[[dict[str, Any]], str]


def join(base: bytes, own: bytes) -> bytes:
    """Two JSON objects' properties as one object, without decoding either."""
    return base[:-1] + b"," + own[1:]


class Rewards:
    """Makes the reward events of one list and source: the properties they fix are encoded
    once (see _base), and each reward encodes only the four that vary."""

    __slots__ = ("_base", "_render")

    def __init__(
        self,
        info: ListInfo,
        source: str = "API",
        campaign_id: int | None = None,
        render: Render | None = None,
    ) -> None:
        self._base = _base(info.id, info.description, info.expires_at, info.tag, info.partner,
                           source, campaign_id)  # fmt: skip
        self._render = render

    def event(self, code: str, user_id: str, now: float) -> tuple[Event, str | None]:
        """The reward event for a code handed out, and its message, rendered from the event's
        properties (None without a template). The template must not raise."""
        own = _own(code, user_id, now)
        own["message"] = self._message(own)
        return Event.joined(VOUCHER_REWARDED, self._base, wire.encode(own), now), own["message"]

    def message(self, code: str, user_id: str, now: float) -> str | None:
        """The message event() renders for this reward, without the event."""
        return self._message(_own(code, user_id, now))

    def _message(self, own: dict[str, Any]) -> str | None:
        if self._render is None:
            return None
        # The template sees every property of the event, its message still empty.
        return self._render({**orjson.loads(self._base), **own})

    def run(
        self, codes: list[str], users: list[str], messages: list[str | None], now: float
    ) -> RewardRun:
        """Reward events made together, as one run: the same events as event() gives
        one by one, never made one by one unless they are read or published."""
        return RewardRun(self._base, now, int(now), codes, users, messages)


def rewarded(info: ListInfo, claims: Sequence[Claim]) -> list[RewardRun]:
    """The reward events of claims made together (one turn of a list actor, numbered in order
    and made at one time, their messages rendered): a run for each stretch of them from one
    source and campaign."""
    runs = []
    for (source, campaign_id), stretch in groupby(claims, _SOURCE):
        members = list(stretch)
        codes, users = [c.code for c in members], [c.user_id for c in members]
        messages = [c.message for c in members]
        rewards = Rewards(info, source, campaign_id)
        runs.append(rewards.run(codes, users, messages, members[0].claimed_at))
    return runs


_SOURCE = attrgetter("source", "campaign_id")


class RewardRun:
    """Reward events made together (a batch slice's, or a list actor's turn of single
    claims): one list, source and time, their own properties kept as columns. The journal
    numbers the run as `count` events from `seq` and stores it as one row; the events
    themselves are made only for a subscriber or a reader (events()), so a run costs no
    Python per reward here."""

    __slots__ = ("base", "codes", "messages", "seq", "time", "timestamp", "users")

    type = VOUCHER_REWARDED

    def __init__(
        self,
        base: bytes,
        time: float,
        timestamp: int,
        codes: list[str],
        users: list[str],
        messages: list[str | None],
        seq: int = 0,
    ) -> None:
        self.base = base
        self.time = time
        self.timestamp = timestamp
        self.codes = codes
        self.users = users
        self.messages = messages
        self.seq = seq

    @property
    def count(self) -> int:
        return len(self.codes)

    def stored(self) -> bytes:
        """The row's data: [eventTimestamp, [voucherCode…], [userId…], [message…]]; a run of
        one is stored as its event is, as rows of one event are read."""
        if self.count == 1:
            (event,) = self.events()
            return event.stored()
        return orjson.dumps([self.timestamp, self.codes, self.users, self.messages])

    @classmethod
    def from_stored(cls, base: bytes, time: float, seq: int, stored: bytes) -> RewardRun:
        timestamp, codes, users, messages = orjson.loads(stored)
        return cls(base, time, timestamp, codes, users, messages, seq)

    def events(self, first: int | None = None, last: int | None = None) -> list[Event]:
        """The run's events numbered `first` to `last` (all of them by default), each the
        event Rewards.event() makes, byte for byte."""
        start = 0 if first is None else first - self.seq
        stop = self.count if last is None else last - self.seq + 1
        head = b'{"eventTimestamp":%d,"voucherCode":' % self.timestamp
        base, time, dumps = self.base, self.time, orjson.dumps
        columns = zip(
            range(self.seq + start, self.seq + stop),
            self.codes[start:stop],
            self.users[start:stop],
            self.messages[start:stop],
            strict=True,
        )
        return [
            Event(VOUCHER_REWARDED, None, time, seq, base,
                  head + dumps(code) + b',"userId":' + dumps(user) + b',"message":'
                  + dumps(message) + b"}")
            for seq, code, user, message in columns
        ]  # fmt: skip


# What the journal numbers and stores: an event, or a run of them.
Numbered = Event | RewardRun


def expand(numbered: Sequence[Numbered]) -> list[Event]:
    """Events one by one: each run made into its events."""
    found: list[Event] = []
    for item in numbered:
        if isinstance(item, Event):
            found.append(item)
        else:
            found += item.events()
    return found


def _own(code: str, user_id: str, now: float) -> dict[str, Any]:
    """A reward's own properties, in the order every reward event has them."""
    return {"eventTimestamp": int(now), "voucherCode": code, "userId": user_id, "message": None}


@lru_cache(maxsize=1024)
def _base(
    list_id: int,
    description: str,
    expires_at: float,
    tag: str,
    partner: str,
    source: str,
    campaign_id: int | None,
) -> bytes:
    """A reward event's properties but the four that vary per reward. Keyed by value, so an
    edited list gets a fresh one."""
    return orjson.dumps(
        {
            "CT Source": "Promo Module",
            "campaignId": campaign_id,
            "listDescription": description,
            "listExpiry": clock.format_time(expires_at),
            "listTag": tag,
            "partner": partner,
            "source": source,
            "voucherListId": list_id,
        }
    )


def status_changed(subject: str, subject_id: int, previous: str, status: str) -> dict[str, Any]:
    """The data of a list's or a campaign's status change."""
    return {f"{subject}_id": subject_id, "previous_status": previous, "status": status}


def upload_finished(
    list_id: int, upload_id: int, filename: str | None, accepted: int, rejected: int, now: float
) -> Event:
    return Event.of(
        UPLOAD_COMPLETED,
        {
            "list_id": list_id,
            "upload_id": upload_id,
            "filename": filename,
            "accepted": accepted,
            "rejected": rejected,
        },
        now,
    )


def upload_failed(
    list_id: int, upload_id: int, filename: str | None, error_code: str, now: float
) -> Event:
    return Event.of(
        UPLOAD_FAILED,
        {"list_id": list_id, "upload_id": upload_id, "filename": filename, "error": error_code},
        now,
    )
