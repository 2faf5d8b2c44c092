"""The event stream over WebSocket, and the same events page by page over plain HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from voucherd import errors, events, wire
from voucherd.server.inputs import page_limit, query_number
from voucherd.server.keys import BUDGETS, SETTINGS, STREAM
from voucherd.stream import Expired, Subscription

log = logging.getLogger(__name__)

DEFAULT_PAGE = 100

# Close codes, documented in the API: the subscriber fell too far behind; its `since` is past
# retention; the server is shutting down (each reason names the seq to resume from).
CLOSE_LAGGING = 4008
CLOSE_EXPIRED = 4010
CLOSE_GOING_AWAY = 1001
# Frames a subscriber is sent before the event loop turns to other work (a few ms of them).
FRAMES_A_TURN = 200
# Seconds a subscriber gets to take its close frame.
CLOSE_TIMEOUT = 10.0


def _types(request: web.Request) -> frozenset[str] | None:
    raw = request.query.get("types")
    if raw is None or raw == "":
        return None
    wanted = frozenset(raw.split(","))
    unknown = wanted - events.TYPES
    if unknown:
        # Not repeated: whatever was sent may be a secret pasted in the wrong place.
        raise errors.InvalidRequest(
            f"`types` holds {len(unknown)} unknown event type(s); known: "
            + ", ".join(sorted(events.TYPES))
        )
    return wanted


async def stream_events(request: web.Request) -> web.StreamResponse:
    since = query_number(request, "since")
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
    # Held until the close handshake is over: a subscriber slow to take its close still holds
    # its connection and buffers.
    with request.app[BUDGETS].subscribers.hold(1):
        await ws.prepare(request)
        subscription = stream.subscribe(since, types, settings.event_buffer)
        try:
            close = await _serve(ws, subscription, binary=fmt == "msgpack")
        finally:
            stream.unsubscribe(subscription)
        if close is not None:
            await _close(request, ws, *close)
    return ws


async def _close(request: web.Request, ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Closed from here, with nothing else reading, so the close handshake completes and the
    subscriber sees the code even if it reads it late. A subscriber that never reads again
    would hold the close forever: its connection is dropped instead."""
    protocol = request.protocol
    waiter = getattr(protocol, "_drain_waiter", None)  # aiohttp's own, read with care
    if waiter is not None and waiter.cancelled():
        # A connection's writes share one wait for the socket to drain, and the pump, stopped
        # while waiting, cancelled it: left in place, the close would end at once instead of
        # waiting for the subscriber to take it (test_budgets.py holds this).
        protocol._drain_waiter = None
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code=code, message=reason.encode())
    except (TimeoutError, ConnectionResetError):
        if request.transport is not None:
            request.transport.abort()


async def _serve(
    ws: web.WebSocketResponse, subscription: Subscription, *, binary: bool
) -> tuple[int, str] | None:
    """Send events and read the client's frames until either side ends; the close to send."""
    pump = asyncio.create_task(_pump(ws, subscription, binary=binary))
    # Reading is what answers pings and notices the client closing.
    reader = asyncio.create_task(_read(ws))
    ended = asyncio.create_task(subscription.ended.wait())
    tasks = (pump, reader, ended)
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # The pump may be waiting for a socket that never drains: it is stopped, not awaited.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    resume = f"resume with since={subscription.sent}"
    if reader.done() and not reader.cancelled():
        return None
    if subscription.lagging:
        return CLOSE_LAGGING, f"too far behind; {resume}"
    if subscription.stream.stopping:
        return CLOSE_GOING_AWAY, f"voucherd is shutting down; {resume}"
    if not pump.cancelled() and isinstance(pump.exception(), Expired):
        first = subscription.stream.first_seq
        return (
            CLOSE_EXPIRED,
            f"since={subscription.sent} is past retention; the oldest event kept is {first}",
        )
    return None


async def _pump(ws: web.WebSocketResponse, subscription: Subscription, *, binary: bool) -> None:
    opcode = WSMsgType.BINARY if binary else WSMsgType.TEXT
    with contextlib.suppress(ConnectionResetError):
        while not ws.closed:
            for sent, event in enumerate(await subscription.next(), 1):
                # Counted before the send: a frame handed to the socket will arrive.
                subscription.sent = event.seq
                await ws.send_frame(event.msgpack() if binary else event.json(), opcode)
                if sent % FRAMES_A_TURN == 0:
                    # A socket that keeps draining never makes the send wait: without this,
                    # thousands of frames would go out in one stretch while claims wait.
                    await asyncio.sleep(0)


async def _read(ws: web.WebSocketResponse) -> None:
    async for _ in ws:
        pass


async def _page(
    request: web.Request, since: int | None, types: frozenset[str] | None
) -> web.Response:
    limit = page_limit(request) or DEFAULT_PAGE
    stream = request.app[STREAM]
    # Without `since`, a page starts at the oldest event retention kept.
    after = stream.first_seq - 1 if since is None else since
    if after < stream.first_seq - 1:
        raise EventsExpired(
            f"events after {after} are past retention; the oldest event kept is {stream.first_seq}"
        )
    found = await stream.read(after, stream.last_seq, types, limit)
    if after < stream.first_seq - 1:
        raise EventsExpired(f"events after {after} were deleted by retention while being read")
    return wire.response(
        {
            "events": [event.view() for event in found],
            "last_seq": found[-1].seq if found else after,
        }
    )


class EventsExpired(errors.VoucherdError):
    code = "events_expired"
    status = 410
