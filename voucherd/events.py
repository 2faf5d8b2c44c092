"""Events: what happened, in the order it was made durable. No I/O.

Each event is written in the same journal transaction as the change it reports, and numbered by
the journal's writer as it writes: `seq` grows by one per event with no gaps, because a
transaction that fails hands its numbers back.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import msgpack
import orjson

from voucherd import clock, wire
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
        own: dict[str, Any] = {
            "eventTimestamp": int(now),
            "voucherCode": code,
            "userId": user_id,
            "message": None,
        }
        if self._render is not None:
            # The template sees every property of the event, its message still empty.
            own["message"] = self._render({**orjson.loads(self._base), **own})
        return Event.joined(VOUCHER_REWARDED, self._base, wire.encode(own), now), own["message"]

    def events(self, codes: list[str], users: list[str], now: float) -> list[Event]:
        """The reward events of a batch without a message template: the same as event() gives,
        each reward's own properties written straight into their JSON object."""
        assert self._render is None
        head = b'{"eventTimestamp":%d,"voucherCode":' % int(now)
        base, dumps = self._base, orjson.dumps
        return [
            Event(VOUCHER_REWARDED, None, now, 0, base,
                  head + dumps(code) + b',"userId":' + dumps(user) + b',"message":null}')
            for code, user in zip(codes, users, strict=True)
        ]  # fmt: skip


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
