"""Scenarios a and b against the peers: PostgreSQL and Redis behind the floor's front door.

Each peer runs on its own, after the floor: its store and door start on the server core, get
the codes a run needs, take the same wrk sweep as voucherd (and, for PostgreSQL, the same batch
bodies), then stop and their data goes (the logs stay). Anything odd becomes a note.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import client, peers, wrk
from bench.scenarios import Profile, Sweep, cpu_note, run_async, sweep
from bench.servers import Fleet, Server

CLAIMS_LIST = 1
BATCH_LIST = 2
POSTGRES = "PostgreSQL"
REDIS_ALWAYS = "Redis always"
REDIS_EVERYSEC = "Redis everysec"


@dataclass
class PeerFigures:
    claims: dict[str, Sweep] = field(default_factory=dict)  # by peer name
    postgres_batch: client.BatchResult | None = None


async def _call(door: Server, path: str, body: dict[str, Any] | None = None) -> Any:
    """A bench route of the door; anything but a 200 fails with the reply."""
    async with (
        client.session() as http,
        http.request("GET" if body is None else "POST", door.url + path, json=body) as resp,
    ):
        text = await resp.text()
        if resp.status != 200:
            raise client.ApiError(f"{path} {body or ''} -> {resp.status}: {text[:2000]}")
        return json.loads(text)


def _counts(door: Server, list_id: int) -> dict[str, int]:
    counts: dict[str, int] = run_async(_call(door, f"/bench/lists/{list_id}"))
    return counts


class Loader:
    """Loads codes into a list through the door, each load with prefixes of its own."""

    def __init__(self, door: Server) -> None:
        self.door = door
        self.prefixes = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        self.loads: list[str] = []  # for the notes: what was loaded, how long it took

    def load(self, list_id: int, count: int) -> None:
        began = time.perf_counter()
        body = {"prefix": next(self.prefixes), "count": count}
        run_async(_call(self.door, f"/bench/lists/{list_id}/codes", body))
        self.loads.append(f"list {list_id} {count:,} in {time.perf_counter() - began:.1f} s")

    def top_up(self, list_id: int, minimum: int) -> None:
        available = _counts(self.door, list_id)["available"]
        if available < minimum:
            self.load(list_id, minimum - available)

    def note(self, name: str) -> str:
        return f"{name}: codes loaded before the runs (not measured): {'; '.join(self.loads)}"


def _needed(floor_rps: float, profile: Profile) -> int:
    """Codes one run may take: a peer will not beat the floor by 1.5x (as for voucherd)."""
    return int(1.5 * floor_rps * profile.wrk_seconds) + 10_000


def _claims_sweep(
    door: Server,
    loader: Loader,
    name: str,
    profile: Profile,
    floor_rps: float,
    notes: list[str],
    before_run: Callable[[], None] | None = None,
) -> Sweep:
    """wrk's warm-up and sweep on the claims list, topped up before each run; notes each run."""
    needed = _needed(floor_rps, profile)
    loader.top_up(CLAIMS_LIST, needed)
    path = f"/v1/lists/{CLAIMS_LIST}/claims"
    label = name.lower().replace(" ", "-")
    wrk.run(door.url + path, profile.connections[0], 2, f"{label}-warm")
    claimed = _counts(door, CLAIMS_LIST)["claimed"]

    def prepare() -> None:
        loader.top_up(CLAIMS_LIST, needed)
        if before_run is not None:
            before_run()

    # The door and its store are separate processes on the server core: count the core.
    result = sweep(door, path, profile, label, prepare, peers.core_busy_seconds)
    made = sum(r.requests - r.non_2xx for r in result.runs)
    grown = _counts(door, CLAIMS_LIST)["claimed"] - claimed
    notes.append(
        f"scenario a {name} runs: {result.describe()}; non-2xx / socket errors by run: "
        + ", ".join(f"c={r.connections}: {r.non_2xx} / {r.socket_errors}" for r in result.runs)
        + f"; wrk counted {made:,} 2xx, the store's claims grew by {grown:,}"
    )
    return result


def _stop(servers: list[Server], data: Path, notes: list[str]) -> None:
    """Stop the door, then its store, and drop the store's data: a full run leaves gigabytes
    of WAL or AOF. The logs stay."""
    for server in servers:
        status, seconds = server.stop()
        if status not in (0, None):
            notes.append(f"{server.name} exited {status} on stop after {seconds:.1f} s")
    shutil.rmtree(data, ignore_errors=True)


def _plan_index(plan: list[str]) -> str:
    """The index the claim's search for a free code scans (the first scan in the plan)."""
    for line in plan:
        if "Scan" in line:
            return line.strip().removeprefix("->").strip().split("  (")[0]
    return "no scan found"


def postgres_side(
    fleet: Fleet,
    profile: Profile,
    work_dir: Path,
    floor_rps: float,
    notes: list[str],
    figures: PeerFigures,
) -> None:
    """PostgreSQL: scenario a's sweep on one list, then scenario b's batches on another."""
    store = peers.postgres(work_dir)
    door = peers.door(work_dir, "postgres", "postgres", store.port, str(peers.pg_sockets(work_dir)))
    try:
        fleet.start(store, timeout=120)
        fleet.start(door, timeout=60)
        _postgres_runs(door, profile, floor_rps, notes, figures)
    finally:
        _stop([door, store], work_dir / "postgres" / "data", notes)


def _postgres_runs(
    door: Server, profile: Profile, floor_rps: float, notes: list[str], figures: PeerFigures
) -> None:
    loader = Loader(door)
    # The batch list first: the table holds two lists, as a deployment holds many, which is
    # also what makes the planner prefer the partial index over walking the primary key.
    loader.load(BATCH_LIST, profile.batch_users + profile.batch_size)
    loader.top_up(CLAIMS_LIST, _needed(floor_rps, profile))
    notes.append(_pg_settings(run_async(_call(door, f"/bench/lists/{CLAIMS_LIST}/settings"))))
    plans: list[str] = []

    def check_plan() -> None:
        found = run_async(_call(door, f"/bench/lists/{CLAIMS_LIST}/settings"))
        plans.append(_plan_index(found["claim_plan"]))

    figures.claims[POSTGRES] = _claims_sweep(
        door, loader, POSTGRES, profile, floor_rps, notes, check_plan
    )
    uses = "" if all("codes_free" in p for p in plans) else " (NOT the partial index)"
    notes.append(f"scenario a {POSTGRES}: the claim's scan before each run: {plans}{uses}")
    notes.append(loader.note(POSTGRES))

    busy = peers.core_busy_seconds()
    batch = figures.postgres_batch = run_async(_batch(door, profile))
    busy = (peers.core_busy_seconds() - busy) / batch.seconds
    notes.append(f"scenario b {POSTGRES}: {cpu_note(batch, busy)}")
    if batch.failed or batch.claimed != profile.batch_users:
        notes.append(
            f"scenario b {POSTGRES}: {batch.claimed:,} claimed, {batch.failed:,} failed of "
            f"{profile.batch_users:,}; first failure: {batch.first_failure or '-'}"
        )


def _costless(line: str) -> str:
    return re.sub(r"\s*\(cost=[^)]*\)", "", line).strip().removeprefix("->").strip()


def _pg_settings(found: dict[str, Any]) -> str:
    batch_index = [_plan_index([line]) for line in found["batch_plan"] if "Scan using" in line]
    return (
        f"{POSTGRES} {found['server_version']}: synchronous_commit={found['synchronous_commit']}, "
        f"fsync={found['fsync']}, full_page_writes={found['full_page_writes']}, "
        f"wal_level={found['wal_level']}, shared_buffers={found['shared_buffers']}, "
        f"max_wal_size={found['max_wal_size']}, jit={found['jit']}, "
        f"random_page_cost={peers.PG_SETTINGS['random_page_cost']}; asyncpg pool of "
        f"{found['pool_size']} over the unix socket, statements prepared once per connection; "
        f"EXPLAIN of the claim: {' / '.join(_costless(s) for s in found['claim_plan'])}; the "
        f"batch statement's scans: {', '.join(batch_index)}"
    )


async def _batch(door: Server, profile: Profile) -> client.BatchResult:
    async with client.session() as http:
        return await client.batch_claims(
            http,
            door.url,
            BATCH_LIST,
            "pb-",
            profile.batch_users,
            profile.batch_size,
            profile.batch_in_flight,
        )


def redis_side(
    fleet: Fleet,
    profile: Profile,
    work_dir: Path,
    floor_rps: float,
    notes: list[str],
    figures: PeerFigures,
) -> None:
    """Redis, AOF on, once with appendfsync always and once with everysec: scenario a."""
    for fsync, name in (("always", REDIS_ALWAYS), ("everysec", REDIS_EVERYSEC)):
        store = peers.redis(work_dir, fsync)
        socket = peers.redis_socket(work_dir, fsync)
        door = peers.door(work_dir, f"redis-{fsync}", "redis", store.port, socket)
        try:
            fleet.start(store, timeout=60)
            fleet.start(door, timeout=60)
            settings = run_async(_call(door, f"/bench/lists/{CLAIMS_LIST}/settings"))
            notes.append(
                f"{name}: Redis {settings['redis_version']}, appendonly="
                f"{settings['appendonly']}, appendfsync={settings['appendfsync']}, no RDB "
                f"snapshots; redis-py asyncio pool of {settings['pool_size']} over the "
                f"{settings['transport']}; a claim is one EVALSHA (HGET, else SPOP + HSET)"
            )
            loader = Loader(door)
            figures.claims[name] = _claims_sweep(door, loader, name, profile, floor_rps, notes)
            notes.append(loader.note(name))
        finally:
            _stop([door, store], work_dir / f"redis-{fsync}", notes)
