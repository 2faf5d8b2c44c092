"""The floor: a no-op aiohttp+uvloop server doing a claim's request/response work, no storage.

voucherd's figures are read as a share of this server's, measured on the same core in the same
run, so the table shows what the HTTP stack alone costs and what voucherd adds on top. It parses
and renders JSON with orjson exactly as voucherd's `wire` module does (`orjson.loads` of the body
bytes, `orjson.dumps` into a `web.Response`), and its claim carries the same fields, so the two
sides do the same request/response work and differ only in what voucherd adds.
"""

from __future__ import annotations

import argparse
import itertools
import time
from functools import lru_cache
from typing import Any

import orjson
import uvloop
from aiohttp import web

# Twelve characters, like the codes the bench uploads, so reply sizes match voucherd's.
_CODE = "F00000000000"
_FAR_FUTURE = "2099-12-31T23:59:59Z"


def _now() -> str:
    return _format_second(int(time.time()))


@lru_cache(maxsize=64)
def _format_second(second: int) -> str:
    # voucherd renders each second once (voucherd.clock); neither side pays strftime per claim.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


async def _body(request: web.Request) -> Any:
    return orjson.loads(await request.read())


def _reply(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    return _reply({"status": "ready"})


def claim_view(
    claim_id: int, list_id: int, user_id: str, key: str, code: str, now: str
) -> dict[str, object]:
    """A claim with the fields voucherd's has, for a list that never expires."""
    return {
        "id": claim_id,
        "list_id": list_id,
        "user_id": user_id,
        "idempotency_key": key,
        "code": code,
        "claimed_at": now,
        "expires_at": _FAR_FUTURE,
        "source": "API",
        "campaign_id": None,
        "metadata": {},
    }


class Floor:
    """Handlers that parse and render like voucherd but keep nothing."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def _claim(self, list_id: int, user_id: str, key: str, now: str) -> dict[str, object]:
        return claim_view(next(self._ids), list_id, user_id, key, _CODE, now)

    async def claim(self, request: web.Request) -> web.Response:
        list_id = int(request.match_info["list_id"])
        body = await _body(request)
        claim = self._claim(list_id, str(body["user_id"]), body.get("idempotency_key", ""), _now())
        return _reply({"claim": claim}, status=201)

    async def claim_batch(self, request: web.Request) -> web.Response:
        list_id = int(request.match_info["list_id"])
        body = await _body(request)
        now = _now()
        # A user id repeated within one batch gets one claim, as in voucherd.
        users = dict.fromkeys(str(u) for u in body["user_ids"])
        claims = [self._claim(list_id, u, "", now) for u in users]
        return _reply({"claims": claims, "failed": []})

    async def create_list(self, request: web.Request) -> web.Response:
        body = await _body(request)
        return _reply({"id": 1, **body, "status": "active"}, status=201)

    async def upload(self, request: web.Request) -> web.Response:
        # Read and discard: the raw cost of getting the bytes through aiohttp.
        lines = 0
        async for chunk in request.content.iter_any():
            lines += chunk.count(b"\n")
        reply = {"id": 1, "list_id": int(request.match_info["list_id"]), "status": "completed"}
        return _reply({**reply, "rows": lines, "accepted": lines}, status=201)


def make_app() -> web.Application:
    floor = Floor()
    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/v1/lists", floor.create_list)
    app.router.add_post("/v1/lists/{list_id}/claims", floor.claim)
    app.router.add_post("/v1/lists/{list_id}/claims/batch", floor.claim_batch)
    app.router.add_post("/v1/lists/{list_id}/uploads", floor.upload)
    app.router.add_get("/readyz", ready)
    app.router.add_get("/healthz", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    uvloop.install()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
