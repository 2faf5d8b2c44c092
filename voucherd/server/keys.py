"""Typed application state: what handlers find on `request.app`."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from voucherd.actors.directory import Directory
from voucherd.metrics import Metrics
from voucherd.persistence.journal import Journal
from voucherd.settings import ApiKey, Scope, Settings


@dataclass(slots=True)
class Readiness:
    ready: bool = False
    failed: str | None = None


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
JOURNAL = web.AppKey("journal", Journal)
DIRECTORY = web.AppKey("directory", Directory)
READINESS = web.AppKey("readiness", Readiness)
# The scope each route needs, keyed by its handler; None: no key needed.
SCOPES = web.AppKey("scopes", dict[Handler, Scope | None])
CALLER = "voucherd.caller"


def caller(request: web.Request) -> ApiKey | None:
    """The key the request was made with; None when the server runs open."""
    key: ApiKey | None = request.get(CALLER)
    return key
