"""The door: how many connections voucherd holds open at once, and how long an idle one stays.

Before any key is checked, a connection holds aiohttp's handler and buffers, and whatever it
has sent of a request head: up to `max_headers` lines of 8 KiB, which the parser keeps twice
over (about 1.6 MiB for a hundred such lines). So connections are a budget like the others:
past `max_connections` a new connection's request is answered 503 with `Retry-After` and the
connection closed, and a connection that sends no whole request head for `idle_timeout` (after
it opened, or after its last reply) is closed, whether it sends nothing or drips a head.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_request import BaseRequest

from voucherd import errors, wire
from voucherd.server.budget import Budget

# How long a connection past the limit may take to send its request head, and how long it is
# then given to read the refusal before it is closed; the most of a head read meanwhile.
_HEAD_WAIT = 1.0
_LINGER = 2.0
_HEAD_BYTES = 16 * 1024


class Door:
    """The protocol factory the listening socket calls for each new connection."""

    def __init__(self, server: web.Server, budget: Budget, **handler_args: Any) -> None:
        self._server = server
        self._budget = budget
        self._handler_args = handler_args

    def __call__(self) -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        try:
            self._budget.take(1)
        except errors.Overloaded as exc:
            return _Refusal(loop, _refusal(exc))
        return _Counted(self._budget, self._server, loop=loop, **self._handler_args)


class DoorSite(web.BaseSite):
    """aiohttp's TCP site with voucherd's door in front of its handlers."""

    def __init__(self, runner: web.AppRunner, door: Door, host: str, port: int) -> None:
        super().__init__(runner)
        self._door = door
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._door, self._host, self._port, backlog=self._backlog
        )


class _Counted(web.RequestHandler):
    """aiohttp's handler, giving its place in the budget back when its connection ends."""

    def __init__(self, budget: Budget, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._budget: Budget | None = budget

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._budget is not None:
            self._budget.give(1)
            self._budget = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's own refusals (a head that is not HTTP, or past the parser's limits) as
        JSON errors like every other, naming what is wrong but not quoting it: aiohttp's text
        would quote the bad line back."""
        # aiohttp logs it (by its kind alone, see logs.py), and refuses if a reply has begun.
        super().handle_error(request, status, exc, message)
        if status >= 500:
            body = {"error": {"code": "internal_error", "message": "unexpected server error"}}
        else:
            body = {"error": {"code": "invalid_request", "message": _unparseable(exc)}}
        response = wire.response(body, status=status)
        response.force_close()
        return response


def _unparseable(exc: BaseException | None) -> str:
    if isinstance(exc, LineTooLong):
        return "a line of the request head is too long (at most 8190 bytes)"
    if isinstance(exc, BadHttpMethod):
        return "the request does not start with an HTTP method"
    if "too many headers" in str(exc).lower():
        return "the request head has too many header lines"
    return "the request is not valid HTTP/1.1"


class _Refusal(asyncio.Protocol):
    """A connection past the limit. The refusal is sent once the request head has arrived (or
    after _HEAD_WAIT), then the connection is half-closed and whatever the client still sends
    is read and dropped for _LINGER: closing at once, with its body unread, would reset the
    connection and could lose the refusal on its way."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reply: bytes) -> None:
        self._loop = loop
        self._reply = reply
        self._head = b""
        self._answered = False
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._timer = self._loop.call_later(_HEAD_WAIT, self._answer)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        self._head = (self._head + data)[-_HEAD_BYTES:]
        if b"\r\n\r\n" in self._head or len(self._head) >= _HEAD_BYTES:
            self._answer()

    def eof_received(self) -> bool:
        self._answer()
        return False  # the client sends no more: close once the refusal is written

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _answer(self) -> None:
        transport = self._transport
        if self._answered or transport is None or transport.is_closing():
            return
        self._answered = True
        if self._timer is not None:
            self._timer.cancel()
        transport.write(self._reply)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = self._loop.call_later(_LINGER, transport.close)


def _refusal(exc: errors.Overloaded) -> bytes:
    body = orjson.dumps(exc.body())
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {exc.retry_after}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
