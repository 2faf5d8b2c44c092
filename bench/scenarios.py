"""The scenarios, each run against voucherd and against its baseline, returning raw figures.

Turning figures into table rows is __main__'s job; here we only measure, and record anything odd
in `notes` rather than stopping, so one misbehaving scenario still leaves the others' figures.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from bench import client, lists, wrk
from bench.servers import Fleet, Server, floor_server, prototype_server, voucherd_server

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def attempt(what: str, notes: list[str], step: Callable[[], None]) -> None:
    """Run one scenario group; a failure becomes a note and the bench goes on."""
    try:
        step()
    except Exception as exc:
        notes.append(f"{what} FAILED: {exc}")
        traceback.print_exc()


@dataclass(frozen=True, slots=True)
class Profile:
    wrk_seconds: int
    connections: tuple[int, ...]
    claim_codes: int  # codes in the single-claims list before wrk starts
    batch_users: int
    batch_size: int
    batch_in_flight: int
    upload_codes: int  # sequential codes
    random_upload_codes: int
    settle_seconds: float  # longest wait for RSS to settle after the upload
    module: str = "voucherd"  # run as `python -m MODULE serve ...`
    rounds: int = 1  # f and g: each side's wrk runs, alternated, so drift hits both sides
    # a: runs at the best connection count after each side's sweep, taking turns (floor, bare
    # design, voucherd), so a fast or slow spell of the machine reaches all three alike
    claim_rounds: int = 1
    subscribers: int = 10  # g: WebSocket subscribers on /v1/events
    probe_rate: int = 250  # g: claims/s of the open-loop latency probe, for wrk_seconds
    latency_seconds: float = 15.0  # i: each rate's open-loop run; j: the claims alone
    busy_upload_codes: int = 10_000_000  # j: the upload beside the claims
    memory_codes: tuple[int, ...] = (1_000_000, 10_000_000)  # k: each on a fresh server

    @classmethod
    def quick(cls, module: str = "voucherd") -> Profile:
        return cls(
            5,
            (64,),
            400_000,
            200_000,
            10_000,
            2,
            1_000_000,
            200_000,
            10.0,
            module,
            latency_seconds=3.0,
            busy_upload_codes=1_000_000,
            memory_codes=(1_000_000,),
        )

    @classmethod
    def full(cls, module: str = "voucherd") -> Profile:
        # c=256 never beat c=16 or c=64 on any server here, and 10 s runs agreed with 30 s
        # ones within the runs' own spread: the full run stays near a quarter of an hour, ten
        # minutes of which are the soak.
        return cls(
            10,
            (16, 64),
            2_000_000,
            1_000_000,
            10_000,
            2,
            10_000_000,
            1_000_000,
            60.0,
            module,
            rounds=2,
            claim_rounds=2,
            latency_seconds=10.0,
        )


@dataclass
class Sweep:
    best: wrk.WrkResult
    runs: list[wrk.WrkResult]
    busy: list[float]  # the server core's busy share during each run: under 1 means waiting

    def merged(self, later: Sweep) -> Sweep:
        runs, busy = self.runs + later.runs, self.busy + later.busy
        return Sweep(max(runs, key=lambda r: r.rps), runs, busy)

    def describe(self) -> str:
        return ", ".join(
            f"c={r.connections}: {r.rps:,.0f} req/s, server core {100 * b:.0f}% busy"
            for r, b in zip(self.runs, self.busy, strict=True)
        )


def sweep(
    server: Server,
    path: str,
    profile: Profile,
    label: str,
    before_run: Callable[[], None] | None = None,
    cpu_seconds: Callable[[], float] | None = None,
) -> Sweep:
    """wrk at each connection count, keeping the run with the most requests per second.

    `cpu_seconds` counts the server side's CPU time (default: the server process's own).
    """
    runs: list[wrk.WrkResult] = []
    busy: list[float] = []
    used = cpu_seconds or server.cpu
    for conns in profile.connections:
        if before_run is not None:
            before_run()
        cpu = used()
        runs.append(wrk.run(server.url + path, conns, profile.wrk_seconds, f"{label}-c{conns}"))
        busy.append((used() - cpu) / runs[-1].duration_s)
    return Sweep(max(runs, key=lambda r: r.rps), runs, busy)


# ---------------------------------------------------------------------------------------------
# The floor: scenarios a, b and c against the no-op server.


# The claims route of the floor and the bare design, which serve one list of any id.
_FLOOR_CLAIMS = "/v1/lists/1/claims"


@dataclass
class FloorFigures:
    server: Server | None = None  # kept running for the rounds of `claims_in_turn`
    claims: Sweep | None = None
    bare_server: Server | None = None  # kept running for the rounds after the sweeps
    bare: Sweep | None = None  # the bare design (bench/prototype.py)
    batch: client.BatchResult | None = None
    upload: client.UploadResult | None = None


def floor_side(
    fleet: Fleet, profile: Profile, log_dir: Path, notes: list[str], figures: FloorFigures
) -> None:
    """Fills `figures` as it goes, so a failure part-way still leaves what was measured."""
    floor = figures.server = floor_server(log_dir)
    fleet.start(floor, timeout=30)
    wrk.run(floor.url + _FLOOR_CLAIMS, profile.connections[0], 2, "floor-warm")
    figures.claims = sweep(floor, _FLOOR_CLAIMS, profile, "floor")

    cpu = floor.cpu()
    figures.batch = run_async(_batch(floor, 1, "fb-", profile))
    busy = (floor.cpu() - cpu) / figures.batch.seconds
    notes.append(f"scenario b floor: {cpu_note(figures.batch, busy)}")
    figures.upload = run_async(lists.upload(floor, 1, "U", profile.upload_codes))


def bare_side(
    fleet: Fleet,
    profile: Profile,
    log_dir: Path,
    floor_rps: float,
    figures: FloorFigures,
) -> None:
    """Single claims on the bare design: the floor's front door, codes popped from memory,
    claims group-committed to SQLite (bench/prototype.py), on a server of its own, kept for
    the rounds of `claims_in_turn`."""
    # Enough codes that no run meets an empty deque, whose quick 409s would flatter it.
    runs = len(profile.connections) + profile.claim_rounds
    codes = max(profile.claim_codes, int(1.5 * floor_rps * profile.wrk_seconds * runs))
    bare = figures.bare_server = prototype_server(log_dir, codes)
    fleet.start(bare, timeout=60)
    wrk.run(bare.url + _FLOOR_CLAIMS, profile.connections[0], 2, "bare-warm")
    figures.bare = sweep(bare, _FLOOR_CLAIMS, profile, "bare")


def claims_in_turn(
    floor: FloorFigures, claims: ClaimFigures, profile: Profile, notes: list[str]
) -> None:
    """Scenario a's last runs: the floor, the bare design and voucherd take turns, each at
    the connection count of its best run so far, `claim_rounds` times; each keeps its best
    run of all. Then the three servers stop."""
    for turn in range(1, profile.claim_rounds + 1):
        floor.claims = _again(floor.server, _FLOOR_CLAIMS, floor.claims, profile, f"floor-{turn}")
        floor.bare = _again(floor.bare_server, _FLOOR_CLAIMS, floor.bare, profile, f"bare-{turn}")
        if claims.top_up is not None:
            claims.top_up()
        claims.claims = _again(claims.server, claims.path, claims.claims, profile, f"vd-{turn}")
    for name, figures in (("floor", floor.claims), ("bare design", floor.bare)):
        if figures is not None:
            notes.append(f"scenario a {name} runs, in order: {figures.describe()}")
            failed = sum(run.non_2xx + run.socket_errors for run in figures.runs)
            if failed:
                notes.append(f"scenario a {name}: {failed} non-2xx or socket errors in all")
    for server in (floor.server, floor.bare_server):
        if server is not None:
            status, _ = server.stop()
            if status != 0:
                notes.append(f"{server.name} exited with status {status} on SIGTERM")
    if claims.server is not None:
        claims.report(notes)
        lists.stop(claims.server, "claims server", notes)


def _again(
    server: Server | None, path: str, done: Sweep | None, profile: Profile, label: str
) -> Sweep | None:
    """One more run at the connection count of the best run so far, added to the sweep."""
    if server is None or done is None:
        return done
    at_best = replace(profile, connections=(done.best.connections,))
    return done.merged(sweep(server, path, at_best, label))


# ---------------------------------------------------------------------------------------------
# voucherd, scenario a: single claims over HTTP on a server of its own.


@dataclass
class ClaimFigures:
    ready_empty_s: float | None = None
    claims: Sweep | None = None
    # Kept for the rounds of `claims_in_turn`: the server, its claims route, what tops its
    # list up before a run, and the list's `distributed` before the first measured run.
    server: Server | None = None
    path: str = ""
    top_up: Callable[[], None] | None = None
    list_id: int = 0
    distributed_before: int = 0

    def report(self, notes: list[str]) -> None:
        """Notes on every measured run, and the list's count of claims against wrk's."""
        if self.server is None or self.claims is None:
            return
        after = run_async(lists.distributed(self.server, self.list_id))
        made = sum(r.requests - r.non_2xx for r in self.claims.runs)
        notes.append(
            f"scenario a: wrk counted {made:,} 2xx claims in the measured runs; the list's "
            f"`distributed` grew by {after - self.distributed_before:,} (requests cut off at "
            "a run's end may differ)"
        )
        notes.append(f"scenario a voucherd runs, in order: {self.claims.describe()}")
        for run in self.claims.runs:
            if run.non_2xx or run.socket_errors:
                notes.append(
                    f"scenario a, {run.connections} connections: {run.non_2xx} non-2xx, "
                    f"{run.socket_errors} socket errors/timeouts (see voucherd log)"
                )


def voucherd_claims(
    fleet: Fleet,
    profile: Profile,
    work_dir: Path,
    floor_rps: float,
    figures: ClaimFigures,
) -> None:
    """Fills `figures` as it goes, so a failure part-way still leaves what was measured. The
    server keeps running for the rounds of `claims_in_turn`, which stops it."""
    server = figures.server = voucherd_server(work_dir, work_dir / "claims-data", profile.module)
    figures.ready_empty_s = fleet.start(server)
    list_id = figures.list_id = run_async(lists.new_list(server, "bench-claims", "claims"))
    prefixes = iter("ABCDEFGHIJKLMNOP")
    # Enough codes that wrk can never exhaust the list: a 409 list_exhausted would make the
    # figure meaningless. voucherd will not beat the floor by 1.5x, so that bounds a run.
    needed = int(1.5 * floor_rps * profile.wrk_seconds) + 10_000

    def top_up(minimum: int = needed) -> None:
        available = run_async(lists.available(server, list_id))
        while available < minimum:
            prefix = next(prefixes)
            count = max(profile.claim_codes, minimum - available)
            up = run_async(lists.upload(server, list_id, prefix, count))
            if up.accepted != count:
                raise RuntimeError(f"claims list: upload of {count} accepted {up.accepted}")
            available = run_async(lists.available(server, list_id))

    top_up(max(needed, profile.claim_codes))
    figures.path = f"/v1/lists/{list_id}/claims"
    figures.top_up = top_up
    wrk.run(server.url + figures.path, profile.connections[0], 2, "vd-warm")
    figures.distributed_before = run_async(lists.distributed(server, list_id))
    figures.claims = sweep(server, figures.path, profile, "vd", before_run=top_up)


# ---------------------------------------------------------------------------------------------
# voucherd, scenarios c, d, b and e on one server: upload sequential codes into an empty server
# (memory), upload random codes to a second list, batch-claim from the first, then crash and
# restart it.


@dataclass
class StateFigures:
    ready_empty_s: float | None = None
    rss_empty: int | None = None
    upload: client.UploadResult | None = None
    rss_loaded: int | None = None
    random_upload: client.UploadResult | None = None
    batch: client.BatchResult | None = None
    ready_after_kill_s: float | None = None
    ready_after_term_s: float | None = None
    term_exit: tuple[int | None, float] | None = None
    codes: dict[int, dict[str, Any]] = field(default_factory=dict)  # per list id


def voucherd_state(
    fleet: Fleet, profile: Profile, work_dir: Path, notes: list[str], figures: StateFigures
) -> None:
    server = voucherd_server(work_dir, work_dir / "state-data", profile.module)
    figures.ready_empty_s = fleet.start(server)
    figures.rss_empty = server.rss()
    list_id = run_async(lists.new_list(server, "bench-state", "state"))

    figures.upload = run_async(lists.upload(server, list_id, "U", profile.upload_codes))
    if figures.upload.accepted != profile.upload_codes:
        notes.append(
            f"scenario c: upload of {profile.upload_codes:,} codes accepted "
            f"{figures.upload.accepted:,}: {figures.upload.reply}"
        )
    settled = settled_rss(server, profile.settle_seconds)
    figures.rss_loaded = settled.rss
    notes.append(
        f"scenario d: voucherd RSS {figures.rss_empty / 2**20:,.1f} MiB empty, "
        f"{figures.rss_loaded / 2**20:,.1f} MiB holding {profile.upload_codes:,} codes, "
        f"{settled.describe()}"
    )

    random_list = run_async(lists.new_list(server, "bench-state", "random"))
    figures.random_upload = run_async(
        lists.upload_random(server, random_list, profile.random_upload_codes)
    )
    if figures.random_upload.accepted != profile.random_upload_codes:
        notes.append(
            f"scenario c: upload of {profile.random_upload_codes:,} random codes accepted "
            f"{figures.random_upload.accepted:,}: {figures.random_upload.reply}"
        )

    cpu = server.cpu()
    figures.batch = run_async(_batch(server, list_id, "vb-", profile))
    busy = (server.cpu() - cpu) / figures.batch.seconds
    notes.append(f"scenario b voucherd: {cpu_note(figures.batch, busy)}")
    if figures.batch.failed or figures.batch.claimed != profile.batch_users:
        notes.append(
            f"scenario b: {figures.batch.claimed:,} claimed, {figures.batch.failed:,} failed of "
            f"{profile.batch_users:,}; first failure: {figures.batch.first_failure or '-'}"
        )
    list_ids = (list_id, random_list)
    expected = figures.codes = run_async(_codes_of(server, list_ids))

    server.kill()
    figures.ready_after_kill_s = fleet.start(server)
    _check_codes(run_async(_codes_of(server, list_ids)), expected, "after SIGKILL", notes)

    figures.term_exit = server.stop()
    notes.append(
        f"scenario e: on SIGTERM voucherd exited with status {figures.term_exit[0]} "
        f"(want 0) after {figures.term_exit[1]:.2f} s"
    )
    figures.ready_after_term_s = fleet.start(server)
    _check_codes(run_async(_codes_of(server, list_ids)), expected, "after SIGTERM", notes)
    lists.stop(server, "state server", notes)


def cpu_note(batch: client.BatchResult, server_busy: float) -> str:
    """Which side was the bottleneck: a core near 100% busy is the one that limited the rate."""
    client_busy = batch.client_cpu_s / batch.seconds
    return f"server core {100 * server_busy:.0f}% busy, bench client {100 * client_busy:.0f}%"


@dataclass(frozen=True, slots=True)
class SettledRss:
    rss: int
    waited_s: float
    settled: bool  # False: still moving when `max_seconds` ran out

    def describe(self) -> str:
        how = "settled" if self.settled else "NOT settled (still moving)"
        return f"read {how} {self.waited_s:.1f} s after the upload's reply"


def settled_rss(
    server: Server, max_seconds: float, first_after: float = 2.0, every: float = 0.5
) -> SettledRss:
    """RSS once it has settled: read no sooner than `first_after` seconds, then every `every`
    seconds until two readings in a row agree within 1%, for at most `max_seconds`.

    voucherd hands SQLite's cache and the freed C heap back in a journal step queued when an
    upload ends, so RSS right after the reply still holds the upload's transient memory.
    """
    began = time.monotonic()
    time.sleep(first_after)
    last = server.rss()
    while time.monotonic() - began < max_seconds:
        time.sleep(every)
        now = server.rss()
        if abs(now - last) <= 0.01 * max(now, last):
            return SettledRss(now, time.monotonic() - began, True)
        last = now
    return SettledRss(last, time.monotonic() - began, False)


def _check_codes(
    got: dict[int, dict[str, Any]], want: dict[int, dict[str, Any]], when: str, notes: list[str]
) -> None:
    if got != want:
        notes.append(f"scenario e: list codes {when} were {got}, before the restart {want}")


async def _batch(
    server: Server, list_id: int, user_prefix: str, profile: Profile
) -> client.BatchResult:
    async with client.session() as http:
        return await client.batch_claims(
            http,
            server.url,
            list_id,
            user_prefix,
            profile.batch_users,
            profile.batch_size,
            profile.batch_in_flight,
        )


async def _codes_of(server: Server, list_ids: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    return {list_id: await lists.codes(server, list_id) for list_id in list_ids}
