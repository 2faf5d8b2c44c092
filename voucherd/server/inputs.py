"""Reading requests: JSON bodies and path parameters, each refusal a clear 400 or 404."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, NamedTuple

from aiohttp import web

from voucherd import clock, errors, wire
from voucherd.server.keys import BUDGETS, SETTINGS
from voucherd.texts import check_characters


async def json_body(request: web.Request) -> dict[str, Any]:
    # Lenient on purpose: `curl -d` labels JSON as a form; only clearly other types are refused.
    if request.content_type.startswith(("multipart/", "text/csv", "image/", "audio/", "video/")):
        raise errors.UnsupportedMediaType("send the body as application/json")
    limit = request.app[SETTINGS].max_json_bytes
    if request.content_length is not None and request.content_length > limit:
        # Refused before a byte of it is read.
        raise errors.PayloadTooLarge(f"the body is larger than {limit} bytes")
    raw = await _read(request, limit)
    try:
        body = wire.loads(raw)
    except wire.JSONDecodeError:
        raise errors.InvalidRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise errors.InvalidRequest("the body must be a JSON object")
    return body


async def _read(request: web.Request, limit: int) -> bytes:
    if request.content.is_eof():
        # The whole body came with the headers, as a claim's nearly always does: a timer
        # armed and cancelled per request would cost a tenth of a claim's time for nothing.
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise errors.PayloadTooLarge(f"the body is larger than {limit} bytes") from None
    # A body still arriving is held against the budget of all such bodies, counted as it is
    # read (decompressed, and whether or not its length was declared).
    budget = request.app[BUDGETS].body_bytes
    timeout = request.app[SETTINGS].body_timeout
    chunks: list[bytes] = []
    held = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_any():
                if held + len(chunk) > limit:
                    raise errors.PayloadTooLarge(f"the body is larger than {limit} bytes")
                budget.take(len(chunk))
                held += len(chunk)
                chunks.append(chunk)
    except TimeoutError:
        raise errors.RequestTimeout(f"the body did not arrive within {timeout:g} s") from None
    finally:
        budget.give(held)
    return b"".join(chunks)


def path_id(request: web.Request, name: str, what: str) -> int:
    raw = request.match_info[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        # Not echoed: a path segment may be anything, a partner's code included.
        raise errors.NotFound(f"no {what} has that id: {what} ids are whole numbers")
    return int(raw)


def query_number(request: web.Request, name: str) -> int | None:
    """A whole number from the query string, or None when it is absent."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise errors.InvalidRequest(f"{name} must be a whole number ≥ 0")
    return int(raw)


# The most items a page of a collection holds, as for the events read over HTTP.
MAX_PAGE = 10_000


class Page(NamedTuple):
    """Which items of a collection ordered by id a read returns: those after `after`, at most
    `limit` of them (all without a limit, as before pages existed)."""

    after: int
    limit: int | None

    def cut(self, items: list[Any]) -> tuple[list[Any], bool]:
        """The page's items of those after `after`, and whether more follow."""
        if self.limit is None or len(items) <= self.limit:
            return items, False
        return items[: self.limit], True


def page(request: web.Request) -> Page:
    return Page(query_number(request, "after") or 0, page_limit(request))


def page_limit(request: web.Request) -> int | None:
    """The most items a page may hold: `limit`, 1 to MAX_PAGE; None when absent."""
    limit = query_number(request, "limit")
    if limit is not None and not 1 <= limit <= MAX_PAGE:
        raise errors.InvalidRequest(f"limit must be 1 to {MAX_PAGE}")
    return limit


def text(
    body: dict[str, Any],
    name: str,
    *,
    max_length: int,
    required: bool = True,
    min_length: int = 1,
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise errors.InvalidRequest(f"{name} is required")
        return None
    return string(value, name, max_length=max_length, min_length=min_length)


def string(value: Any, name: str, *, max_length: int, min_length: int = 1) -> str:
    """A JSON value that must be a string of bounded length, free of control characters."""
    if not isinstance(value, str):
        raise errors.InvalidRequest(f"{name} must be a string")
    if not min_length <= len(value) <= max_length:
        raise errors.InvalidRequest(f"{name} must be {min_length} to {max_length} characters")
    check_characters(value, name)
    return value


def strings(values: list[Any], name: str, *, max_length: int) -> None:
    """Check many values as `string` checks each: a batch's user ids are checked by a few
    calls into C, and one by one only to say which is wrong."""
    if (
        set(map(type, values)) == {str}
        and min(map(len, values)) >= 1
        and max(map(len, values)) <= max_length
    ):
        joined = "".join(values)
        if joined.isascii() and joined.isprintable():
            return
    for value in values:
        string(value, name, max_length=max_length)


def required_text(body: dict[str, Any], name: str, *, max_length: int, min_length: int = 1) -> str:
    value = text(body, name, max_length=max_length, min_length=min_length)
    assert value is not None
    return value


def count(body: dict[str, Any], name: str, *, required: bool = False) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise errors.InvalidRequest(f"{name} is required")
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**53:
        raise errors.InvalidRequest(f"{name} must be a whole number ≥ 0")
    return value


def timestamp(body: dict[str, Any], name: str, *, required: bool = True) -> float | None:
    value = body.get(name)
    if value is None:
        if required:
            raise errors.InvalidRequest(f"{name} is required")
        return None
    try:
        return clock.parse_time(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise errors.InvalidRequest(f"{name}: {exc}") from None


async def unstalled(body: AsyncIterable[bytes], seconds: float) -> AsyncIterator[bytes]:
    """The body's chunks, refused with 408 once it sends nothing for `seconds`: a streamed
    upload may take as long as it needs, but not stall."""
    chunks = aiter(body)
    while True:
        try:
            async with asyncio.timeout(seconds):
                data = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise errors.RequestTimeout(f"the body sent nothing for {seconds:g} s") from None
        yield data
