"""Operations endpoints: liveness, readiness, metrics and the API document."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from voucherd import wire
from voucherd.server.keys import METRICS, READINESS
from voucherd.server.list_series import list_series
from voucherd.server.openapi import openapi_document


async def healthz(request: web.Request) -> web.Response:
    return wire.response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    readiness = request.app[READINESS]
    if readiness.ready:
        return wire.response({"status": "ready"})
    message = readiness.failed or (
        "shutting down" if readiness.draining else "recovering state from the journal"
    )
    return wire.response(
        {"error": {"code": "not_ready", "message": message}},
        status=503,
        headers={"Retry-After": "1"},
    )


async def metrics(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
    await response.prepare(request)
    await response.write(generate_latest(request.app[METRICS].registry))
    async for piece in list_series(request.app):
        await response.write(piece)
    await response.write_eof()
    return response


async def openapi(request: web.Request) -> web.Response:
    return wire.response(openapi_document())
