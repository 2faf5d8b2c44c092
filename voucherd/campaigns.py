"""Promo campaigns: who qualifies, how many codes, when — the rules, with no I/O.

A campaign's stored status is `running`, `paused` or `ended`; like a list's `expired`, its
`scheduled` (before `starts_at`) and its ending at `ends_at` are read from the clock, never
stored.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from voucherd import clock, errors, wire
from voucherd.templates import Template
from voucherd.texts import check_characters

MAX_NAME = 200
MAX_LISTS = 50
MAX_CONDITIONS = 50
MAX_EVENT_NAME = 200


class CampaignStatus(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    ENDED = "ended"


class CampaignAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    END = "end"


# The statuses (as read now) each action is allowed from, and the status it stores.
ALLOWED_FROM: dict[CampaignAction, frozenset[CampaignStatus]] = {
    CampaignAction.PAUSE: frozenset({CampaignStatus.SCHEDULED, CampaignStatus.RUNNING}),
    CampaignAction.RESUME: frozenset({CampaignStatus.PAUSED}),
    CampaignAction.END: frozenset(
        {CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED}
    ),
}
STORED_AFTER: dict[CampaignAction, CampaignStatus] = {
    CampaignAction.PAUSE: CampaignStatus.PAUSED,
    CampaignAction.RESUME: CampaignStatus.RUNNING,
    CampaignAction.END: CampaignStatus.ENDED,
}


class Reason(StrEnum):
    """Why a reward was not given."""

    NOT_QUALIFIED = "not_qualified"
    USER_LIMIT_REACHED = "user_limit_reached"
    CAMPAIGN_LIMIT_REACHED = "campaign_limit_reached"
    OUT_OF_CODES = "out_of_codes"
    CAMPAIGN_NOT_RUNNING = "campaign_not_running"


# -- qualification -----------------------------------------------------------------------------

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "exists")


@dataclass(frozen=True, slots=True)
class Condition:
    property: str
    op: str
    value: Any = None

    def holds(self, properties: dict[str, Any]) -> bool:
        present = self.property in properties
        if self.op == "exists":
            return present is (self.value is not False)
        if not present:
            return False
        actual = properties[self.property]
        op, value = self.op, self.value
        if op == "eq":
            return bool(_same_kind(actual, value) and actual == value)
        if op == "ne":
            return not (_same_kind(actual, value) and actual == value)
        if op == "in":
            return any(_same_kind(actual, item) and actual == item for item in value)
        if op == "contains":
            if isinstance(actual, str):
                return isinstance(value, str) and value in actual
            if isinstance(actual, list):
                return any(_same_kind(item, value) and item == value for item in actual)
            return False
        # Ordering compares numbers with numbers and strings with strings, nothing else.
        if not _same_kind(actual, value) or isinstance(actual, bool) or actual is None:
            return False
        if op == "gt":
            return bool(actual > value)
        if op == "gte":
            return bool(actual >= value)
        if op == "lt":
            return bool(actual < value)
        return bool(actual <= value)

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = {"property": self.property, "op": self.op}
        if self.op != "exists" or self.value is not None:
            view["value"] = self.value
        return view


def _same_kind(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return True
    return type(a) is type(b)


@dataclass(frozen=True, slots=True)
class Qualification:
    """A live-behaviour rule: the request's event has this name and meets every condition."""

    event: str
    where: tuple[Condition, ...] = ()

    def admits(self, event: dict[str, Any] | None) -> bool:
        if event is None or event.get("name") != self.event:
            return False
        properties = event.get("properties") or {}
        return all(condition.holds(properties) for condition in self.where)

    def view(self) -> dict[str, Any]:
        return {"event": self.event, "where": [condition.view() for condition in self.where]}

    @classmethod
    def parse(cls, value: Any) -> Qualification | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise errors.InvalidRequest("qualification must be an object or null")
        event = _name(value.get("event"), "qualification.event")
        where = value.get("where", [])
        if not isinstance(where, list) or len(where) > MAX_CONDITIONS:
            raise errors.InvalidRequest(
                f"qualification.where must be a list of at most {MAX_CONDITIONS} conditions"
            )
        return cls(event, tuple(_condition(item, n) for n, item in enumerate(where)))


def _name(value: Any, what: str) -> str:
    """An event or property name: 1 to MAX_EVENT_NAME characters, no control characters (the
    rule of every text a client sends, so any event a reward names can be matched)."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_EVENT_NAME:
        raise errors.InvalidRequest(f"{what} must be a name of 1 to {MAX_EVENT_NAME} characters")
    check_characters(value, what)
    return value


def _condition(item: Any, n: int) -> Condition:
    where = f"qualification.where[{n}]"
    if not isinstance(item, dict):
        raise errors.InvalidRequest(f"{where} must be an object")
    name, op = _name(item.get("property"), f"{where}.property"), item.get("op")
    if op not in OPERATORS:
        raise errors.InvalidRequest(f"{where}.op must be one of {', '.join(OPERATORS)}")
    value = item.get("value")
    if op == "exists":
        if value is not None and not isinstance(value, bool):
            raise errors.InvalidRequest(f"{where}.value must be true or false for exists")
    elif "value" not in item:
        raise errors.InvalidRequest(f"{where}.value is required for {op}")
    elif op == "in" and not isinstance(value, list):
        raise errors.InvalidRequest(f"{where}.value must be a list for in")
    elif op in ("gt", "gte", "lt", "lte") and (
        isinstance(value, bool) or not isinstance(value, int | float | str)
    ):
        raise errors.InvalidRequest(f"{where}.value must be a number or a string for {op}")
    if isinstance(value, float) and not math.isfinite(value):
        raise errors.InvalidRequest(f"{where}.value must be finite")
    wire.client_json(value, f"{where}.value")  # stored as JSON with the campaign
    return Condition(name, op, value)


# -- the campaign ------------------------------------------------------------------------------


@dataclass(slots=True)
class CampaignInfo:
    id: int
    name: str
    lists: tuple[int, ...]
    max_codes_per_user: int
    max_codes_per_campaign: int | None
    starts_at: float | None
    ends_at: float | None
    qualification: Qualification | None
    template: Template | None
    stored_status: CampaignStatus
    created_at: float
    updated_at: float

    def status(self, now: float | None = None) -> CampaignStatus:
        now = clock.now() if now is None else now
        stored = self.stored_status
        if stored is CampaignStatus.ENDED or (self.ends_at is not None and now >= self.ends_at):
            return CampaignStatus.ENDED
        if stored is CampaignStatus.PAUSED:
            return stored
        if self.starts_at is not None and now < self.starts_at:
            return CampaignStatus.SCHEDULED
        return CampaignStatus.RUNNING

    def check(self, action: CampaignAction, now: float | None = None) -> CampaignStatus:
        """The status now, if `action` is allowed from it; a 409 otherwise."""
        status = self.status(now)
        if status not in ALLOWED_FROM[action]:
            raise errors.Conflict(f"campaign {self.id} is {status}: {action} is not allowed")
        return status

    def replace(self, **changes: Any) -> CampaignInfo:
        return dataclasses.replace(self, **changes)

    def row(self) -> tuple[Any, ...]:
        fields = {name: getattr(self, name) for name in _COLUMN_OF}
        return (self.id, *stored_values(fields).values(), self.created_at)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> CampaignInfo:
        (id_, name, lists, per_user, per_campaign, starts_at, ends_at, qualification,
         template, status, updated_at, created_at) = row  # fmt: skip
        return cls(
            id=id_,
            name=name,
            lists=tuple(wire.loads(lists)),
            max_codes_per_user=per_user,
            max_codes_per_campaign=per_campaign,
            starts_at=starts_at,
            ends_at=ends_at,
            qualification=Qualification.parse(wire.loads(qualification)) if qualification else None,
            # Parsed, not checked again: a template saved once stays usable.
            template=Template(template) if template is not None else None,
            stored_status=CampaignStatus(status),
            created_at=created_at,
            updated_at=updated_at,
        )

    def view(self, issued: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "lists": list(self.lists),
            "max_codes_per_user": self.max_codes_per_user,
            "max_codes_per_campaign": self.max_codes_per_campaign,
            "starts_at": clock.format_optional(self.starts_at),
            "ends_at": clock.format_optional(self.ends_at),
            "qualification": None if self.qualification is None else self.qualification.view(),
            "message_template": None if self.template is None else self.template.source,
            "status": self.status().value,
            "rewards": {"issued": issued},
            "created_at": clock.format_time(self.created_at),
            "updated_at": clock.format_time(self.updated_at),
        }


# Each changeable field of CampaignInfo and the column storing it, in the table's order.
_COLUMN_OF = {
    "name": "name",
    "lists": "lists",
    "max_codes_per_user": "max_codes_per_user",
    "max_codes_per_campaign": "max_codes_per_campaign",
    "starts_at": "starts_at",
    "ends_at": "ends_at",
    "qualification": "qualification",
    "template": "message_template",
    "stored_status": "status",
    "updated_at": "updated_at",
}
COLUMNS = f"id, {', '.join(_COLUMN_OF.values())}, created_at"
INSERT_CAMPAIGN = f"INSERT INTO campaigns ({COLUMNS}) VALUES ({', '.join('?' * 12)})"
SELECT_CAMPAIGNS = f"SELECT {COLUMNS} FROM campaigns"


def stored_values(fields: dict[str, Any]) -> dict[str, Any]:
    """Column -> value for the given CampaignInfo fields, as the table stores them."""
    stored: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "lists":
            value = wire.dumps(list(value))
        elif name == "qualification":
            value = None if value is None else wire.dumps(value.view())
        elif name == "template":
            value = None if value is None else value.source
        elif name == "stored_status":
            value = value.value
        stored[_COLUMN_OF[name]] = value
    return stored
