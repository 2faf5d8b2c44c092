"""The bare design: the floor's front door, codes popped from memory, claims group-committed.

What voucherd's single-claim figure is measured against besides the floor: the least a server
of this design can do for a durable claim. Codes sit in a deque; a claim pops one, queues a
msgpack record and waits; one writer task takes every record queued, stores them as one row of
a SQLite journal (WAL, `synchronous=FULL`, one statement so one commit and one fsync) through
aiosqlite, then wakes every claim of that group, whose reply is the floor's. It keeps no claims
map, so it answers no repeat, no tray, and recovers nothing: the gap between it and the floor
is what durability costs this front door, and the gap between voucherd and it is what
voucherd's features cost.

`python -m bench.prototype --data-dir DIR --codes N`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from collections import deque
from pathlib import Path
from typing import Any

import aiosqlite
import msgpack
import uvloop
from aiohttp import web

from bench.floor import _body, _now, _reply, claim_view, ready
from bench.peer_door import codes


class Prototype:
    def __init__(self, path: Path, count: int) -> None:
        self._path = path
        self._codes = deque(codes("P", count))
        self._ids = itertools.count(1)
        self._queued: list[tuple[Any, asyncio.Future[None]]] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._db: aiosqlite.Connection | None = None
        self._writer: asyncio.Task[None] | None = None

    async def open(self, app: web.Application) -> None:
        # isolation_level None: the one INSERT a group is its own transaction, one commit.
        self._db = await aiosqlite.connect(self._path, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=FULL")
        await self._db.execute(
            "CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY, records BLOB)"
        )
        self._writer = asyncio.create_task(self._write())

    async def close(self, app: web.Application) -> None:
        if self._writer is not None:
            self._writer.cancel()
        if self._db is not None:
            await self._db.close()

    async def _write(self) -> None:
        assert self._db is not None
        while True:
            if not self._queued:
                self._wakeup = asyncio.get_running_loop().create_future()
                await self._wakeup
                self._wakeup = None
            group, self._queued = self._queued, []
            records = msgpack.packb([record for record, _ in group])
            try:
                await self._db.execute("INSERT INTO journal (records) VALUES (?)", (records,))
            except Exception as exc:  # a full disk, say: those claims fail, later ones retry
                for _, done in group:
                    done.set_exception(exc)
                continue
            for _, done in group:
                done.set_result(None)

    async def claim(self, request: web.Request) -> web.Response:
        list_id = int(request.match_info["list_id"])
        body = await _body(request)
        try:
            code = self._codes.popleft()
        except IndexError:
            error = {"code": "list_exhausted", "message": f"list {list_id} has no code left"}
            return _reply({"error": error}, status=409)
        claim_id, user, now = next(self._ids), str(body["user_id"]), _now()
        done = asyncio.get_running_loop().create_future()
        self._queued.append(((claim_id, list_id, user, code, now), done))
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        await done
        key = body.get("idempotency_key", "")
        claim = claim_view(claim_id, list_id, user, key, code, now)
        return _reply({"claim": claim}, status=201)


def make_app(path: Path, count: int) -> web.Application:
    prototype = Prototype(path, count)
    app = web.Application()
    app.on_startup.append(prototype.open)
    app.on_cleanup.append(prototype.close)
    app.router.add_post("/v1/lists/{list_id}/claims", prototype.claim)
    app.router.add_get("/readyz", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prototype", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8098)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--codes", type=int, default=2_000_000)
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    uvloop.install()
    app = make_app(args.data_dir / "prototype.db", args.codes)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
