"""Typed application state: what handlers find on `request.app`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler

from voucherd.actors.campaign import Campaigns
from voucherd.actors.directory import Directory
from voucherd.metrics import Metrics
from voucherd.persistence.code_index import CodeIndex
from voucherd.persistence.journal import Journal
from voucherd.server.budget import Budgets
from voucherd.settings import ApiKey, Scope, Settings
from voucherd.stream import EventStream


@dataclass(slots=True)
class Readiness:
    ready: bool = False
    failed: str | None = None
    draining: bool = False
    recovered: asyncio.Event = field(default_factory=asyncio.Event)


class InFlight:
    """Counts requests being handled, so shutdown can wait for them, bodies and all."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if not self.count:
            self._idle.set()

    async def drained(self) -> None:
        await self._idle.wait()


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
JOURNAL = web.AppKey("journal", Journal)
CODE_INDEX = web.AppKey("code_index", CodeIndex)
DIRECTORY = web.AppKey("directory", Directory)
CAMPAIGNS = web.AppKey("campaigns", Campaigns)
STREAM = web.AppKey("stream", EventStream)
READINESS = web.AppKey("readiness", Readiness)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
BUDGETS = web.AppKey("budgets", Budgets)
# The scope each route needs, keyed by its handler; None: no key needed.
SCOPES = web.AppKey("scopes", dict[Handler, Scope | None])
CALLER = web.RequestKey("caller", ApiKey)


def caller(request: web.Request) -> ApiKey | None:
    """The key the request was made with; None when the server runs open."""
    return request.get(CALLER)
