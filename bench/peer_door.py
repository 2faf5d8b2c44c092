"""The peers' front door: the floor's aiohttp+uvloop server with PostgreSQL or Redis behind it.

What a user would otherwise build: the floor's routes, request parsing and reply rendering
(orjson, the same claim fields), with each claim stored in PostgreSQL or Redis, so the
bench's figures for it differ from the floor's by the storage alone. A user gets one code per
list, as from voucherd: a repeat claim answers 200 with the code already given.

Bench-only routes load codes and read counts, settings and the claim's query plan.
`python -m bench.peer_door --store postgres|redis ...`; bench/peers.py starts it.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

import orjson
import uvloop
from aiohttp import web

# The floor's own body parsing and clock, so both doors read requests and date claims alike.
from bench.floor import _FAR_FUTURE, _body, _now, ready

# A claim as stored: (user_id, id, code, claimed_at); claimed_at is the store's time when it
# keeps one (rendered by orjson as the floor renders its own), else the door's clock.
Claim = tuple[str, int, str, datetime | str]
_TIME = orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def claim(self, list_id: int, user: str) -> tuple[bool, Claim] | None:
        """(fresh, the claim); fresh is False for the user's earlier claim; None: no code left."""

    async def claim_batch(self, list_id: int, users: list[str]) -> tuple[list[Claim], list[str]]:
        """The claims (fresh or earlier), and the users left without a code."""

    async def load(self, list_id: int, prefix: str, count: int) -> None: ...
    async def counts(self, list_id: int) -> dict[str, int]: ...
    async def settings(self, list_id: int) -> dict[str, Any]: ...


def codes(prefix: str, count: int) -> Iterator[str]:
    """Twelve-character codes, like the ones the bench uploads to voucherd."""
    width = 12 - len(prefix)
    return (f"{prefix}{i:0{width}d}" for i in range(count))


def _reply(value: Any, status: int = 200) -> web.Response:
    body = orjson.dumps(value, option=_TIME)
    return web.Response(body=body, status=status, content_type="application/json")


def _view(list_id: int, claim: Claim) -> dict[str, object]:
    user, claim_id, code, claimed_at = claim
    return {
        "id": claim_id,
        "list_id": list_id,
        "user_id": user,
        "idempotency_key": "",
        "code": code,
        "claimed_at": claimed_at,
        "expires_at": _FAR_FUTURE,
        "source": "API",
        "campaign_id": None,
        "metadata": {},
    }


def _exhausted(list_id: int) -> dict[str, object]:
    return {"code": "list_exhausted", "message": f"list {list_id} has no code left"}


class Door:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def claim(self, request: web.Request) -> web.Response:
        list_id = int(request.match_info["list_id"])
        body = await _body(request)
        got = await self.store.claim(list_id, str(body["user_id"]))
        if got is None:
            return _reply({"error": _exhausted(list_id)}, status=409)
        fresh, claim = got
        return _reply({"claim": _view(list_id, claim)}, status=201 if fresh else 200)

    async def claim_batch(self, request: web.Request) -> web.Response:
        list_id = int(request.match_info["list_id"])
        body = await _body(request)
        # A user id repeated within one batch gets one claim, as in voucherd and the floor.
        users = list(dict.fromkeys(str(u) for u in body["user_ids"]))
        claims, left = await self.store.claim_batch(list_id, users)
        error = _exhausted(list_id)
        return _reply(
            {
                "claims": [_view(list_id, c) for c in claims],
                "failed": [{"user_id": u, "error": error} for u in left],
            }
        )

    async def load(self, request: web.Request) -> web.Response:
        list_id = int(request.match_info["list_id"])
        body = await _body(request)
        await self.store.load(list_id, str(body["prefix"]), int(body["count"]))
        return _reply({"loaded": int(body["count"]), **await self.store.counts(list_id)})

    async def counts(self, request: web.Request) -> web.Response:
        return _reply(await self.store.counts(int(request.match_info["list_id"])))

    async def settings(self, request: web.Request) -> web.Response:
        return _reply(await self.store.settings(int(request.match_info["list_id"])))


def make_app(store: Store) -> web.Application:
    door = Door(store)
    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/v1/lists/{list_id}/claims", door.claim)
    app.router.add_post("/v1/lists/{list_id}/claims/batch", door.claim_batch)
    app.router.add_post("/bench/lists/{list_id}/codes", door.load)
    app.router.add_get("/bench/lists/{list_id}", door.counts)
    app.router.add_get("/bench/lists/{list_id}/settings", door.settings)
    app.router.add_get("/readyz", ready)

    async def lifetime(app: web.Application) -> Any:
        await store.open()  # /readyz answers only once the store is reachable
        yield
        await store.close()

    app.cleanup_ctx.append(lifetime)
    return app


# ---------------------------------------------------------------------------------------------
# PostgreSQL


class Postgres:
    """Codes in one table; a claim is one UPDATE of the first free row, SKIP LOCKED."""

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS codes (
            id bigserial PRIMARY KEY, list_id int NOT NULL, code text NOT NULL,
            user_id text, claimed_at timestamptz);
        -- The claim's scan: the free codes of a list in id order, nothing else.
        CREATE INDEX IF NOT EXISTS codes_free ON codes (list_id, id) WHERE user_id IS NULL;
        -- One code per user and list; also finds a user's earlier claim.
        CREATE UNIQUE INDEX IF NOT EXISTS codes_claimed ON codes (list_id, user_id)
            WHERE user_id IS NOT NULL;
    """
    CLAIM = """
        UPDATE codes SET user_id = $2, claimed_at = now()
        WHERE id = (SELECT id FROM codes WHERE list_id = $1 AND user_id IS NULL
                    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING id, code, claimed_at
    """
    EARLIER = "SELECT id, code, claimed_at FROM codes WHERE list_id = $1 AND user_id = $2"
    # One statement for a whole batch: users who hold a code get it back; the others are paired
    # in order with as many free rows, locked SKIP LOCKED, and updated from unnest.
    CLAIM_BATCH = """
        WITH wanted AS (
            SELECT u, n FROM unnest($2::text[]) WITH ORDINALITY AS w(u, n)
        ), earlier AS (
            SELECT c.user_id, c.id, c.code, c.claimed_at
            FROM unnest($2::text[]) AS w(u) JOIN codes AS c ON c.list_id = $1 AND c.user_id = w.u
        ), fresh AS (
            SELECT u, row_number() OVER (ORDER BY n) AS k FROM wanted
            WHERE NOT EXISTS (SELECT 1 FROM earlier WHERE earlier.user_id = wanted.u)
        ), picked AS (
            SELECT id FROM codes WHERE list_id = $1 AND user_id IS NULL
            ORDER BY id LIMIT (SELECT count(*) FROM fresh) FOR UPDATE SKIP LOCKED
        ), paired AS (
            SELECT p.id, fresh.u
            FROM (SELECT id, row_number() OVER (ORDER BY id) AS k FROM picked) AS p
            JOIN fresh USING (k)
        ), claimed AS (
            UPDATE codes SET user_id = paired.u, claimed_at = now()
            FROM paired WHERE codes.id = paired.id
            RETURNING codes.user_id, codes.id, codes.code, codes.claimed_at
        )
        SELECT * FROM claimed UNION ALL SELECT * FROM earlier
    """

    def __init__(self, socket_dir: str, port: int, pool_size: int) -> None:
        self.socket_dir, self.port, self.pool_size = socket_dir, port, pool_size
        self.pool: Any = None

    async def open(self) -> None:
        import asyncpg  # only the PostgreSQL door needs it

        self.unique_violation = asyncpg.UniqueViolationError
        # asyncpg prepares each statement once per connection and reuses it (its statement
        # cache), so a claim is a Bind/Execute of a prepared UPDATE.
        self.pool = await asyncpg.create_pool(
            host=self.socket_dir,
            port=self.port,
            user="postgres",
            database="postgres",
            min_size=self.pool_size,
            max_size=self.pool_size,
        )
        await self.pool.execute(self.SCHEMA)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def claim(self, list_id: int, user: str) -> tuple[bool, Claim] | None:
        async with self.pool.acquire() as conn:
            try:
                row = await conn.fetchrow(self.CLAIM, list_id, user)
                fresh = True
            except self.unique_violation:
                row = await conn.fetchrow(self.EARLIER, list_id, user)
                fresh = False
        if row is None:
            return None
        return fresh, (user, row[0], row[1], row[2])

    async def claim_batch(self, list_id: int, users: list[str]) -> tuple[list[Claim], list[str]]:
        rows = await self.pool.fetch(self.CLAIM_BATCH, list_id, users)
        claims: list[Claim] = [(r[0], r[1], r[2], r[3]) for r in rows]
        served = {c[0] for c in claims}
        return claims, [u for u in users if u not in served]

    async def load(self, list_id: int, prefix: str, count: int) -> None:
        async with self.pool.acquire() as conn:
            records = ((list_id, code) for code in codes(prefix, count))
            await conn.copy_records_to_table("codes", records=records, columns=["list_id", "code"])
            # Fresh statistics, so the planner picks the partial index, and the visibility map
            # and hint bits set, as autovacuum would leave them after a bulk load.
            await conn.execute("VACUUM ANALYZE codes")

    async def counts(self, list_id: int) -> dict[str, int]:
        row = await self.pool.fetchrow(
            "SELECT count(*) FILTER (WHERE user_id IS NULL), count(user_id) FROM codes "
            "WHERE list_id = $1",
            list_id,
        )
        return {"available": row[0], "claimed": row[1]}

    async def settings(self, list_id: int) -> dict[str, Any]:
        names = (
            "server_version",
            "synchronous_commit",
            "fsync",
            "full_page_writes",
            "wal_level",
            "shared_buffers",
            "max_wal_size",
            "jit",
        )
        async with self.pool.acquire() as conn:
            found = {name: await conn.fetchval(f"SHOW {name}") for name in names}
            claim_plan = await conn.fetch(f"EXPLAIN {self.CLAIM}", list_id, "explain")
            batch_plan = await conn.fetch(f"EXPLAIN {self.CLAIM_BATCH}", list_id, ["explain"])
        found["pool_size"] = self.pool_size
        found["claim_plan"] = [r[0] for r in claim_plan]
        found["batch_plan"] = [r[0] for r in batch_plan]
        return found


# ---------------------------------------------------------------------------------------------
# Redis

# A claim: the user's earlier code, else a random free code moved into the claims hash.
CLAIM_LUA = """
local code = redis.call('HGET', KEYS[2], ARGV[1])
if code then return {0, code} end
code = redis.call('SPOP', KEYS[1])
if not code then return {-1, ''} end
redis.call('HSET', KEYS[2], ARGV[1], code)
return {1, code}
"""
# A batch in one script: atomic, one round trip and one append to the AOF for the lot (a
# pipeline of the single script would run it, and its bookkeeping, once per user). Returns the
# codes ('' when none was left) and a string with one letter per user: n(ew), e(arlier), x.
CLAIM_BATCH_LUA = """
local codes, kinds, fresh = {}, {}, {}
for i, user in ipairs(ARGV) do
  local code = redis.call('HGET', KEYS[2], user)
  if code then codes[i] = code; kinds[i] = 'e' else fresh[#fresh + 1] = i end
end
local popped = {}
if #fresh > 0 then popped = redis.call('SPOP', KEYS[1], #fresh) end
for j, i in ipairs(fresh) do
  local code = popped[j]
  if code then
    redis.call('HSET', KEYS[2], ARGV[i], code); codes[i] = code; kinds[i] = 'n'
  else
    codes[i] = ''; kinds[i] = 'x'
  end
end
return {codes, table.concat(kinds)}
"""


class Redis:
    """Per list, a set of free codes and a hash of claims (user -> code)."""

    def __init__(self, socket: str, port: int, pool_size: int) -> None:
        self.socket, self.port, self.pool_size = socket, port, pool_size
        self.ids = itertools.count(1)  # Redis keeps no claim id: counted here, as the floor does

    async def open(self) -> None:
        import redis.asyncio as aioredis  # only the Redis door needs it

        where: dict[str, Any] = (
            {"connection_class": aioredis.UnixDomainSocketConnection, "path": self.socket}
            if self.socket
            else {"host": "127.0.0.1", "port": self.port}
        )
        # Blocking: a request waits for a free connection rather than failing.
        pool = aioredis.BlockingConnectionPool(max_connections=self.pool_size, **where)
        self.db = aioredis.Redis(connection_pool=pool)
        await self.db.ping()
        self.claim_script = self.db.register_script(CLAIM_LUA)
        self.batch_script = self.db.register_script(CLAIM_BATCH_LUA)

    async def close(self) -> None:
        await self.db.aclose()

    @staticmethod
    def _keys(list_id: int) -> list[str]:
        return [f"list:{list_id}:free", f"list:{list_id}:claims"]

    async def claim(self, list_id: int, user: str) -> tuple[bool, Claim] | None:
        kind, code = await self.claim_script(keys=self._keys(list_id), args=[user])
        if kind < 0:
            return None
        return kind == 1, (user, next(self.ids), code.decode(), _now())

    async def claim_batch(self, list_id: int, users: list[str]) -> tuple[list[Claim], list[str]]:
        got, kinds = await self.batch_script(keys=self._keys(list_id), args=users)
        now = _now()
        claims: list[Claim] = []
        left: list[str] = []
        for user, code, kind in zip(users, got, kinds.decode(), strict=True):
            if kind == "x":
                left.append(user)
            else:
                claims.append((user, next(self.ids), code.decode(), now))
        return claims, left

    async def load(self, list_id: int, prefix: str, count: int) -> None:
        key = self._keys(list_id)[0]
        chunk: list[str] = []
        pipe = self.db.pipeline(transaction=False)
        for code in codes(prefix, count):
            chunk.append(code)
            if len(chunk) == 10_000:
                pipe.sadd(key, *chunk)
                chunk = []
                if len(pipe) == 20:  # 200,000 codes a round trip
                    await pipe.execute()
        if chunk:
            pipe.sadd(key, *chunk)
        await pipe.execute()

    async def counts(self, list_id: int) -> dict[str, int]:
        free, claims = self._keys(list_id)
        return {"available": await self.db.scard(free), "claimed": await self.db.hlen(claims)}

    async def settings(self, list_id: int) -> dict[str, Any]:
        info = await self.db.info("server")
        config = await self.db.config_get("append*")
        return {
            "redis_version": info["redis_version"],
            "appendonly": config.get("appendonly"),
            "appendfsync": config.get("appendfsync"),
            "pool_size": self.pool_size,
            "transport": f"unix socket {self.socket}" if self.socket else f"TCP :{self.port}",
        }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_door", description=__doc__)
    parser.add_argument("--store", choices=("postgres", "redis"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store-port", type=int, required=True)
    parser.add_argument("--store-socket", default="", help="PostgreSQL: socket dir; Redis: path")
    parser.add_argument("--pool", type=int, required=True, help="connections to the store")
    args = parser.parse_args()
    store: Store
    if args.store == "postgres":
        store = Postgres(args.store_socket, args.store_port, args.pool)
    else:
        store = Redis(args.store_socket, args.store_port, args.pool)
    uvloop.install()
    web.run_app(make_app(store), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
