"""Handlers for voucher lists: create, read, filter, edit, and the status transitions."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from voucherd import clock, errors, wire
from voucherd.actors.directory import matching
from voucherd.actors.voucher_list import Edit, Transition
from voucherd.duplicates import Scope
from voucherd.lists import (
    MAX_DESCRIPTION,
    MAX_NAME,
    MAX_PARTNER,
    MAX_TAG,
    ListInfo,
    duration_seconds,
)
from voucherd.server.inputs import count, json_body, page, path_id, required_text, text, timestamp
from voucherd.server.keys import DIRECTORY, SETTINGS
from voucherd.server.pieces import pieces
from voucherd.statuses import Action, Status


def _expiry_warning(body: dict[str, Any]) -> str | None:
    """The list's expiry warning as given, upper-cased; "" when the body clears it."""
    if "expiry_warning" not in body:
        return None
    value = body["expiry_warning"]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise errors.InvalidRequest("expiry_warning must be an ISO 8601 duration such as P3D")
    try:
        duration_seconds(value)
    except ValueError as exc:
        raise errors.InvalidRequest(f"expiry_warning: {exc}") from None
    return value.upper()


def _tag(raw: str) -> str:
    if any(ch.isspace() for ch in raw):
        raise errors.InvalidRequest("tag must not contain spaces")
    tag = raw.lower()
    if len(tag) > MAX_TAG:
        # Lowercasing may lengthen a text: "İ" becomes two characters.
        raise errors.InvalidRequest(f"tag must be at most {MAX_TAG} characters once lowercased")
    return tag


async def create_list(request: web.Request) -> web.Response:
    body = await json_body(request)
    scope = body.get("duplicate_scope", Scope.PARTNER.value)
    if scope not in (Scope.PARTNER.value, Scope.LIST.value):
        raise errors.InvalidRequest("duplicate_scope must be 'partner' or 'list'")
    expires_at = timestamp(body, "expires_at")
    assert expires_at is not None
    threshold = count(body, "low_stock_threshold")
    settings = request.app[SETTINGS]
    warning = _expiry_warning(body)
    if warning is None:
        warning = settings.default_expiry_warning.upper()
    now = clock.now()
    info = ListInfo(
        id=0,
        partner=required_text(body, "partner", max_length=MAX_PARTNER),
        tag=_tag(required_text(body, "tag", max_length=MAX_TAG)),
        name=required_text(body, "name", max_length=MAX_NAME),
        description=text(
            body, "description", max_length=MAX_DESCRIPTION, required=False, min_length=0
        )
        or "",
        expires_at=expires_at,
        stored_status=Status.ACTIVE,
        duplicate_scope=Scope(scope),
        low_stock_threshold=settings.default_low_stock_threshold
        if threshold is None
        else threshold,
        created_at=now,
        updated_at=now,
        expiry_warning=warning or None,
    )
    created = await request.app[DIRECTORY].create(info)
    return wire.response(created.view(), status=201)


async def find_lists(request: web.Request) -> web.StreamResponse:
    query = request.query
    status = query.get("status")
    if status is not None and status not in Status.__members__.values():
        raise errors.InvalidRequest("status must be one of active, paused, expired, archived")
    partner, tag = query.get("partner"), query.get("tag")
    wanted = Status(status) if status else None
    tag = tag.lower() if tag else None
    after, limit = page(request)
    directory = request.app[DIRECTORY]
    # Written as it is made, a piece of lists at a time: at 50,000 lists the reply is 21 MB.
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"lists":[')
    separator = b""
    left = limit  # lists the page still has room for; None without a limit
    more = False
    # The directory holds its lists in id order, the order of their creation.
    async for piece in pieces(actor for actor in directory if actor.info.id > after):
        found = matching(piece, partner, wanted, tag)
        if left is not None:
            found, more = found[:left], len(found) > left
            left -= len(found)
        if found:
            await response.write(separator + wire.array_items([info.view() for info in found]))
            separator = b","
        if more:
            break
    await response.write(b'],"has_more":' + (b"true}" if more else b"false}"))
    await response.write_eof()
    return response


async def get_list(request: web.Request) -> web.Response:
    list_id = path_id(request, "list_id", "list")
    return wire.response(request.app[DIRECTORY].actor(list_id).info.view())


async def edit_list(request: web.Request) -> web.Response:
    list_id = path_id(request, "list_id", "list")
    actor = request.app[DIRECTORY].actor(list_id)
    body = await json_body(request)
    edit = Edit(
        name=text(body, "name", max_length=MAX_NAME, required=False),
        description=text(
            body, "description", max_length=MAX_DESCRIPTION, required=False, min_length=0
        ),
        expires_at=timestamp(body, "expires_at", required=False),
        low_stock_threshold=count(body, "low_stock_threshold"),
        expiry_warning=_expiry_warning(body),
    )
    if edit == Edit():
        raise errors.InvalidRequest(
            "send at least one of name, description, expires_at, low_stock_threshold,"
            " expiry_warning"
        )
    info: ListInfo = await actor.ask(edit)
    return wire.response(info.view())


def transition(action: Action) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        list_id = path_id(request, "list_id", "list")
        info: ListInfo = await request.app[DIRECTORY].actor(list_id).ask(Transition(action))
        return wire.response(info.view())

    handle.__name__ = f"{action}_list"
    return handle


async def stats(request: web.Request) -> web.Response:
    """Totals across lists, and per partner: lists by status, codes by state, claim rate."""
    directory, now = request.app[DIRECTORY], clock.now()
    total = _Tally()
    partners: dict[str, _Tally] = {}
    async for piece in pieces(directory):
        for actor in piece:
            info = actor.info
            for tally in (total, partners.setdefault(info.partner, _Tally())):
                tally.add(info, now)
    return wire.response(
        {
            **total.view(),
            "partners": [
                {"partner": partner, **tally.view()} for partner, tally in sorted(partners.items())
            ],
        }
    )


class _Tally:
    def __init__(self) -> None:
        self.lists = dict.fromkeys((status.value for status in Status), 0)
        self.codes = dict.fromkeys(("uploaded", "available", "distributed", "withdrawn"), 0)
        self.claim_rate = 0.0

    def add(self, info: ListInfo, now: float) -> None:
        self.lists[info.status(now).value] += 1
        counts = info.counts
        self.codes["uploaded"] += counts.uploaded
        self.codes["available"] += counts.available
        self.codes["distributed"] += counts.distributed
        self.codes["withdrawn"] += counts.withdrawn
        self.claim_rate += info.rate.per_minute(now)

    def view(self) -> dict[str, Any]:
        uploaded = self.codes["uploaded"]
        return {
            "lists": {"total": sum(self.lists.values()), **self.lists},
            "codes": dict(self.codes),
            "utilization": round(self.codes["distributed"] / uploaded, 6) if uploaded else 0.0,
            "claim_rate": round(self.claim_rate, 3),
        }
