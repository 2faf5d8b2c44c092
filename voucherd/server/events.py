"""The event stream over WebSocket, and the same events page by page over plain HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from voucherd import errors, events, wire
from voucherd.server.keys import SETTINGS, STREAM
from voucherd.stream import Expired, Lagging, Subscription

log = logging.getLogger(__name__)

MAX_PAGE = 10_000
DEFAULT_PAGE = 100

# Close codes, documented in the API: the subscriber fell too far behind; its `since` is past
# retention.
CLOSE_LAGGING = 4008
CLOSE_EXPIRED = 4010


def _seq(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise errors.InvalidRequest(f"{name} must be a whole number ≥ 0")
    return int(raw)


def _types(request: web.Request) -> frozenset[str] | None:
    raw = request.query.get("types")
    if raw is None or raw == "":
        return None
    wanted = frozenset(raw.split(","))
    unknown = sorted(wanted - events.TYPES)
    if unknown:
        raise errors.InvalidRequest(
            f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(sorted(events.TYPES))}"
        )
    return wanted


async def stream_events(request: web.Request) -> web.StreamResponse:
    since = _seq(request, "since")
    types = _types(request)
    stream = request.app[STREAM]
    if since is not None and since > stream.last_seq:
        raise errors.InvalidRequest(f"since={since} is after the last event ({stream.last_seq})")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "msgpack"):
        raise errors.InvalidRequest("format must be json or msgpack")
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(heartbeat=settings.websocket_heartbeat)
    if not ws.can_prepare(request).ok:
        return await _page(request, since, types)
    await ws.prepare(request)
    subscription = stream.subscribe(since, types, settings.event_buffer)
    pump = asyncio.create_task(_pump(ws, subscription, binary=fmt == "msgpack"))
    closing: list[asyncio.Task[None]] = []

    def lagging() -> None:
        # The pump may be waiting for a socket that never drains: stop it, then close.
        pump.cancel()
        message = f"too far behind; resume with since={subscription.sent}"
        closing.append(asyncio.create_task(_close(ws, CLOSE_LAGGING, message)))

    subscription.on_lagging = lagging
    try:
        # Reading is what answers pings and notices the client closing; the pump sends.
        async for _ in ws:
            pass
    finally:
        stream.unsubscribe(subscription)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        for task in closing:
            await task
    return ws


async def _pump(ws: web.WebSocketResponse, subscription: Subscription, *, binary: bool) -> None:
    opcode = WSMsgType.BINARY if binary else WSMsgType.TEXT
    try:
        while not ws.closed:
            for event in await subscription.next():
                await ws.send_frame(event.msgpack() if binary else event.json(), opcode)
                subscription.sent = event.seq
    except Expired:
        first = subscription.stream.first_seq
        await _close(
            ws,
            CLOSE_EXPIRED,
            f"since={subscription.sent} is past retention; the oldest event kept is {first}",
        )
    except (Lagging, ConnectionResetError):
        # Lagging: the subscription's callback is closing the connection already.
        pass


async def _close(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    with contextlib.suppress(ConnectionResetError):
        await ws.close(code=code, message=reason.encode())


async def _page(
    request: web.Request, since: int | None, types: frozenset[str] | None
) -> web.Response:
    limit = _seq(request, "limit")
    limit = DEFAULT_PAGE if limit is None else limit
    if not 1 <= limit <= MAX_PAGE:
        raise errors.InvalidRequest(f"limit must be 1 to {MAX_PAGE}")
    stream = request.app[STREAM]
    # Without `since`, a page starts at the oldest event retention kept.
    after = stream.first_seq - 1 if since is None else since
    if after < stream.first_seq - 1:
        raise EventsExpired(
            f"events after {after} are past retention; the oldest event kept is {stream.first_seq}"
        )
    found = await stream.read(after, stream.last_seq, types, limit)
    return wire.response(
        {
            "events": [event.view() for event in found],
            "last_seq": found[-1].seq if found else after,
        }
    )


class EventsExpired(errors.VoucherdError):
    code = "events_expired"
    status = 410
