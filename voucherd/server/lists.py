"""Handlers for voucher lists: create, read, filter, edit, and the status transitions."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from voucherd import clock, errors, wire
from voucherd.actors.voucher_list import Edit, Transition
from voucherd.duplicates import Scope
from voucherd.lists import MAX_DESCRIPTION, MAX_NAME, MAX_PARTNER, MAX_TAG, ListInfo
from voucherd.server.inputs import count, json_body, path_id, required_text, text, timestamp
from voucherd.server.keys import DIRECTORY
from voucherd.statuses import Action, Status

DEFAULT_LOW_STOCK = 1000


def _tag(raw: str) -> str:
    if any(ch.isspace() for ch in raw):
        raise errors.InvalidRequest("tag must not contain spaces")
    return raw.lower()


async def create_list(request: web.Request) -> web.Response:
    body = await json_body(request)
    scope = body.get("duplicate_scope", Scope.PARTNER.value)
    if scope not in (Scope.PARTNER.value, Scope.LIST.value):
        raise errors.InvalidRequest("duplicate_scope must be 'partner' or 'list'")
    expires_at = timestamp(body, "expires_at")
    assert expires_at is not None
    threshold = count(body, "low_stock_threshold")
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
        low_stock_threshold=DEFAULT_LOW_STOCK if threshold is None else threshold,
        created_at=now,
        updated_at=now,
    )
    created = await request.app[DIRECTORY].create(info)
    return wire.response(created.view(), status=201)


async def find_lists(request: web.Request) -> web.Response:
    query = request.query
    status = query.get("status")
    if status is not None and status not in Status.__members__.values():
        raise errors.InvalidRequest("status must be one of active, paused, expired, archived")
    tag = query.get("tag")
    found = request.app[DIRECTORY].find(
        partner=query.get("partner"),
        status=Status(status) if status else None,
        tag=tag.lower() if tag else None,
    )
    return wire.response({"lists": [info.view() for info in found]})


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
    )
    if edit == Edit():
        raise errors.InvalidRequest(
            "send at least one of name, description, expires_at, low_stock_threshold"
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
