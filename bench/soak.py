"""h. soak: voucherd held at 80% of its capacity for 10 minutes, its resident memory sampled.

`python -m bench.soak [--minutes 10] [--rate N]` starts voucherd on core 0 on a fresh data dir,
warms it up with wrk on a list of its own (single claims, `claims.lua` as in scenario a, `-t1
-c64`, 2 s) and, unless `--rate` is given, measures its capacity the same way for 10 s. It uploads
to a second list enough codes for the whole soak (rate × seconds × 1.2), reads VmRSS once it has
settled (the start), then sends single claims at 80% of that capacity (or at `--rate`) from the
bench's own process on core 1, and samples VmRSS every 10 s.

The load is open loop at a fixed rate, as wrk cannot hold one: claim i is due at start + i/rate
whatever the earlier replies did, and goes out on the first free one of a fixed number of
keep-alive connections (a claim due while every connection waits for its reply queues in the
client). Its latency counts from its intended send time, so a stall of the server shows in full
(no coordinated omission). The client speaks HTTP/1.1 through an asyncio protocol of its own,
not aiohttp's client, so one core can send far more than voucherd serves; the notes say what the
client reached and how busy its core was, and whether it, rather than the server, fell short.

At the end the list's counts must balance (uploaded = available + distributed + withdrawn) and
its `distributed` must equal the 201s counted, give or take the claims whose replies were cut off.

`python -m bench` runs it in full runs only (not `--quick`), after the other scenarios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from hdrh.histogram import HdrHistogram

from bench import client, report, scenarios, wrk
from bench.report import Row, verdict
from bench.scenarios import run_async
from bench.servers import CLIENT_CORE, HOST, Fleet, Server, ServerFailed, voucherd_server

MINUTES = 10.0  # the soak's length in full runs
SHARE = 0.8  # of the capacity wrk measured
CAPACITY_SECONDS = 10
WARM_SECONDS = 2  # wrk's warm-up before the capacity run (and before the soak with --rate)
CAPACITY_CONNECTIONS = 64  # wrk's connections for the capacity run: scenario a's quick setting
CONNECTIONS = 64  # the soak client's keep-alive connections
CODES_MARGIN = 1.2  # codes uploaded: rate × seconds × this, plus SPARE_CODES
SPARE_CODES = 10_000
SAMPLE_S = 10.0  # VmRSS every this many seconds
TICK_S = 0.001  # the client wakes at most this often and sends every claim that fell due
DRAIN_S = 10.0  # after the schedule, how long the claims still queued or in flight may take
HELD = 0.99  # the rate counts as held at this share of the target
HIGHEST_US = 60_000_000  # histograms from 1 µs to 60 s, 3 significant digits
SCENARIO = "h. soak"
MIB = 2**20


def _histogram() -> Any:
    return HdrHistogram(1, HIGHEST_US, 3)


def _us(seconds: float) -> int:
    return min(max(1, round(seconds * 1e6)), HIGHEST_US)


def _ms(histogram: Any, percentile: float | None) -> float | None:
    """A percentile (None: the max) in ms, or None for an empty histogram."""
    if histogram.get_total_count() == 0:
        return None
    if percentile is None:
        return float(histogram.get_max_value()) / 1e3
    return float(histogram.get_value_at_percentile(percentile)) / 1e3


PERCENTILES: tuple[tuple[str, float | None], ...] = (
    ("p50", 50.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("max", None),
)


@dataclass(frozen=True, slots=True)
class RssSample:
    at_s: float  # seconds since the first intended send
    rss: int  # bytes
    created: int  # 201s counted by then


@dataclass
class Load:
    """What the open-loop client did, filled as it goes so an interrupted soak keeps its figures."""

    rate: float
    seconds: float
    connections: int
    scheduled: int = 0  # claims whose intended time came before the schedule ended
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    lost: int = 0  # connections lost (or a reply unreadable) with a claim in flight
    connect_errors: int = 0
    cut_off: int = 0  # still in flight when the drain ended
    unsent: int = 0  # still queued in the client when the drain ended
    backlog_max: int = 0  # most claims queued at once for a free connection
    first_failure: str = ""
    stopped: str = ""  # why the schedule stopped early, if it did
    window_s: float = 0.0  # from the first intended send to the last reply
    client_cpu_s: float = 0.0  # the bench's process over the window
    server_cpu_s: float = 0.0
    latency: Any = field(default_factory=_histogram)  # µs from intended send to reply
    timer: Any = field(default_factory=_histogram)  # µs from intended send to when the client saw
    # it due: the client's own timer, part of every latency
    minutes: list[Any] = field(default_factory=list)  # latency by minute of intended send
    samples: list[RssSample] = field(default_factory=list)

    @property
    def replies(self) -> int:
        return sum(self.statuses.values())

    @property
    def created(self) -> int:
        return self.statuses[201]

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    @property
    def socket_errors(self) -> int:
        return self.lost + self.connect_errors

    @property
    def achieved(self) -> float:
        """Replies a second over the window: the rate the server was actually held at."""
        return self.replies / self.window_s if self.window_s > 0 else 0.0

    @property
    def client_busy(self) -> float:
        return self.client_cpu_s / self.window_s if self.window_s > 0 else 0.0

    @property
    def server_busy(self) -> float:
        return self.server_cpu_s / self.window_s if self.window_s > 0 else 0.0

    def minute(self, offset_s: float) -> Any:
        index = max(0, int(offset_s // 60))
        while len(self.minutes) <= index:
            self.minutes.append(_histogram())
        return self.minutes[index]

    def fail(self, why: str) -> None:
        if not self.first_failure:
            self.first_failure = why[:600]


Slot = tuple[int, float]  # a claim's index and its intended send time (perf_counter)


def _content_length(buffer: bytearray, end: int) -> int | None:
    head = bytes(buffer[:end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return None
    stop = head.find(b"\r\n", at + 2)
    return int(head[at + 17 : stop if stop >= 0 else None])


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one claim in flight. A reply is read by hand: its
    status and Content-Length are all the soak needs (voucherd sends no chunked replies)."""

    def __init__(self, load: OpenLoop) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.current: Slot | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = _content_length(buffer, end)
            if length is None:
                self.load.broken(self, f"reply without Content-Length: {bytes(buffer[:300])!r}")
                return
            total = end + 4 + length
            if len(buffer) < total:
                return
            status = int(buffer[9:12])
            body = b"" if status == 201 else bytes(buffer[end + 4 : total])
            del buffer[:total]
            self.load.replied(self, status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost(self, exc)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class OpenLoop:
    """Claims to `path` at `rate` a second for `seconds`, each at its intended send time on the
    first free connection, VmRSS of `server` sampled every SAMPLE_S seconds into `figures`."""

    def __init__(self, server: Server, path: str, users: str, figures: Load) -> None:
        self.server = server
        self.figures = figures
        self.users = users.encode()
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.open: set[_Connection] = set()
        self.idle: deque[_Connection] = deque()  # oldest first, so every connection stays warm
        self.backlog: deque[Slot] = deque()
        self.start = 0.0
        self.closing = False
        self.draining = False  # the schedule is over: waiting for the last replies
        self.drained = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    # -- connections

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closing:
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self), HOST, self.server.port
                )
            except OSError as exc:
                self.figures.connect_errors += 1
                self.figures.fail(f"connect: {exc!r}")
                await asyncio.sleep(0.1)
                continue
            self.open.add(conn)
            self._free(conn)
            return

    def _reconnect(self) -> None:
        task = asyncio.create_task(self._connect())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _free(self, conn: _Connection) -> None:
        if self.closing:
            return
        if self.backlog:
            self._send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)
            self._check_drained()

    def _check_drained(self) -> None:
        if self.draining and not self.backlog and not self.in_flight():
            self.drained.set()

    def _send(self, conn: _Connection, slot: Slot) -> None:
        body = b'{"user_id":"%s%d"}' % (self.users, slot[0])
        conn.current = slot
        conn.write(self.head + b"%d\r\n\r\n" % len(body) + body)
        self.figures.sent += 1

    def replied(self, conn: _Connection, status: int, body: bytes) -> None:
        slot = conn.current
        if slot is None:
            self.broken(conn, f"a {status} reply with no claim in flight")
            return
        conn.current = None
        now = time.perf_counter()
        figures = self.figures
        us = _us(now - slot[1])
        figures.latency.record_value(us)
        figures.minute(slot[1] - self.start).record_value(us)
        figures.statuses[status] += 1
        figures.window_s = now - self.start
        if status != 201:
            figures.fail(f"claim {slot[0]} -> {status}: {body[:500].decode(errors='replace')}")
        self._free(conn)

    def broken(self, conn: _Connection, why: str) -> None:
        """An unreadable reply: the connection is closed, its claim counted as lost."""
        self.figures.fail(why)
        conn.close()

    def lost(self, conn: _Connection, exc: Exception | None) -> None:
        self.open.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if self.closing:
            return
        if conn.current is not None:
            self.figures.lost += 1
            self.figures.fail(f"connection lost with claim {conn.current[0]} in flight: {exc!r}")
            conn.current = None
            self._check_drained()
        self._reconnect()

    def in_flight(self) -> int:
        return sum(1 for conn in self.open if conn.current is not None)

    # -- the schedule

    def _sample(self, end: bool = False) -> None:
        figures = self.figures
        at = time.perf_counter() - self.start
        if end and figures.samples and at - figures.samples[-1].at_s < 1.0:
            figures.samples.pop()  # a periodic reading just before the end: the end replaces it
        try:
            rss = self.server.rss()
        except (OSError, ServerFailed) as exc:
            figures.stopped = figures.stopped or f"VmRSS unreadable, voucherd gone? {exc!r}"
            return
        figures.samples.append(RssSample(at, rss, figures.created))

    async def _watch(self) -> None:
        """VmRSS every SAMPLE_S seconds; stops the schedule if the server exits."""
        while True:
            await asyncio.sleep(SAMPLE_S)
            proc = self.server.proc
            if proc is not None and proc.poll() is not None:
                self.figures.stopped = f"voucherd exited with {proc.returncode} during the soak"
                return
            self._sample()

    async def run(self) -> None:
        figures = self.figures
        rate, total = figures.rate, round(figures.rate * figures.seconds)
        for _ in range(figures.connections):
            await self._connect()
        cpu, mine = self.server.cpu(), time.process_time()
        start = self.start = time.perf_counter() + 0.05
        watch = asyncio.create_task(self._watch())
        clock, timer, idle, backlog = time.perf_counter, figures.timer, self.idle, self.backlog
        i = 0
        try:
            while i < total and not figures.stopped:
                now = clock()
                due = min(total, math.floor((now - start) * rate) + 1)
                while i < due:
                    at = start + i / rate
                    timer.record_value(_us(now - at))
                    if idle:
                        self._send(idle.popleft(), (i, at))
                    else:
                        backlog.append((i, at))
                    i += 1
                figures.scheduled = i
                figures.backlog_max = max(figures.backlog_max, len(backlog))
                await asyncio.sleep(max(start + i / rate - clock(), TICK_S))
            self.draining = True
            self._check_drained()
            if not figures.stopped:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.drained.wait(), DRAIN_S)
        finally:
            watch.cancel()
            self.closing = True
            figures.unsent, figures.cut_off = len(backlog), self.in_flight()
            figures.client_cpu_s = time.process_time() - mine
            with contextlib.suppress(OSError):  # gone if voucherd exited
                figures.server_cpu_s = self.server.cpu() - cpu
            if figures.window_s <= 0:
                figures.window_s = clock() - start
            for conn in list(self.open):
                conn.close()
            for task in list(self.tasks):
                task.cancel()
        self._sample(end=True)  # right after the last reply


# ---------------------------------------------------------------------------------------------
# The scenario: capacity, upload, RSS at start, the soak, the counts at the end.


@dataclass
class SoakFigures:
    minutes: float = MINUTES
    connections: int = CONNECTIONS
    capacity: wrk.WrkResult | None = None  # None when --rate was given
    capacity_busy: float | None = None  # the server core's share during the capacity run
    target: float | None = None  # claims/s the soak should hold
    uploaded: int | None = None  # codes the soak list accepted
    rss_start: int | None = None
    load: Load | None = None
    codes: dict[str, int] | None = None  # the soak list's counts at the end

    @property
    def rss_end(self) -> int | None:
        return self.load.samples[-1].rss if self.load and self.load.samples else None

    @property
    def rss_max(self) -> int | None:
        if self.load is None or not self.load.samples:
            return self.rss_start
        return max([s.rss for s in self.load.samples] + [self.rss_start or 0])

    def growth_per_million(self) -> float | None:
        """Bytes of RSS growth per million 201s, from the start to the end."""
        end = self.rss_end
        if self.load is None or not self.load.created or end is None or self.rss_start is None:
            return None
        return (end - self.rss_start) / self.load.created * 1e6

    def slope_per_million(self, since_s: float = 0.0) -> float | None:
        """Least-squares slope of RSS over 201s across the samples from `since_s` on (from 0, the
        start included): bytes per million claims, less moved by one odd reading than
        start-to-end. From half-way on, SQLite's page cache (bounded) has mostly filled, so what
        remains is growth that goes on."""
        if self.load is None or self.rss_start is None:
            return None
        points = [(0.0, float(self.rss_start))] if since_s <= 0 else []
        points += [(float(s.created), float(s.rss)) for s in self.load.samples if s.at_s >= since_s]
        if len(points) < 3:
            return None
        mx = sum(x for x, _ in points) / len(points)
        my = sum(y for _, y in points) / len(points)
        var = sum((x - mx) ** 2 for x, _ in points)
        if var == 0:
            return None
        return sum((x - mx) * (y - my) for x, y in points) / var * 1e6

    def balance(self) -> tuple[bool, int] | None:
        """(the counts balance and match the 201s, distributed − 201s), or None if not read."""
        codes, load = self.codes, self.load
        if codes is None or load is None:
            return None
        extra = codes["distributed"] - load.created
        ok = (
            codes["uploaded"] == codes["available"] + codes["distributed"] + codes["withdrawn"]
            and codes["uploaded"] == self.uploaded
            and 0 <= extra <= load.cut_off + load.lost
        )
        return ok, extra


async def _new_list(server: Server, tag: str) -> int:
    async with client.session() as http:
        return await client.create_list(http, server.url, "bench-soak", tag)


async def _upload(server: Server, list_id: int, prefix: str, count: int) -> client.UploadResult:
    async with client.session() as http:
        return await client.upload(http, server.url, list_id, prefix, count)


async def _codes(server: Server, list_id: int) -> dict[str, int]:
    async with client.session() as http:
        reply = await client.get_list(http, server.url, list_id)
    return {k: int(v) for k, v in reply["codes"].items()}


def soak_side(
    fleet: Fleet,
    module: str,
    work_dir: Path,
    rate: float | None,
    notes: list[str],
    figures: SoakFigures,
    rate_bound: float = 20_000.0,
) -> None:
    """Fills `figures` as it goes, so a failure part-way still leaves what was measured.

    `rate`: claims/s to hold, or None to hold SHARE of the capacity measured here. `rate_bound`:
    claims/s the server will not exceed, to size the capacity run's list.
    """
    server = voucherd_server(work_dir, work_dir / "soak-data", module)
    fleet.start(server)
    seconds = figures.minutes * 60
    # A warm-up on a list of its own, with or without --rate, so the RSS at start is that of a
    # server that has served claims already, not one growing its first buffers and caches.
    capacity_list = run_async(_new_list(server, "capacity"))
    runs = WARM_SECONDS + (CAPACITY_SECONDS if rate is None else 0)
    needed = int(1.5 * rate_bound * runs) + SPARE_CODES
    up = run_async(_upload(server, capacity_list, "C", needed))
    if up.accepted != needed:
        notes.append(f"scenario h: the capacity list took {up.accepted:,} of {needed:,} codes")
    url = f"{server.url}/v1/lists/{capacity_list}/claims"
    wrk.run(url, CAPACITY_CONNECTIONS, WARM_SECONDS, "h-warm")
    if rate is None:
        cpu = server.cpu()
        capacity = figures.capacity = wrk.run(url, CAPACITY_CONNECTIONS, CAPACITY_SECONDS, "h-cap")
        figures.capacity_busy = (server.cpu() - cpu) / capacity.duration_s
        rate = SHARE * capacity.rps
        notes.append(
            f"scenario h capacity: wrk -t1 c={CAPACITY_CONNECTIONS} {CAPACITY_SECONDS} s "
            f"(claims.lua) on a list of its own: {capacity.rps:,.0f} claims/s, p50 "
            f"{capacity.p50_ms:.2f} ms, p99 {capacity.p99_ms:.2f} ms, {capacity.non_2xx} non-2xx, "
            f"{capacity.socket_errors} socket errors, server core "
            f"{100 * figures.capacity_busy:.0f}% busy; the soak holds {100 * SHARE:.0f}% of it, "
            f"{rate:,.0f}/s"
        )
    figures.target = rate

    soak_list = run_async(_new_list(server, "soak"))
    count = int(rate * seconds * CODES_MARGIN) + SPARE_CODES
    up = run_async(_upload(server, soak_list, "S", count))
    figures.uploaded = up.accepted
    if up.accepted != count:
        notes.append(f"scenario h: the soak list took {up.accepted:,} of {count:,} codes")
    settled = scenarios.settled_rss(server, 30.0)
    figures.rss_start = settled.rss
    notes.append(
        f"scenario h: {up.accepted:,} codes uploaded to the soak list in {up.seconds:.1f} s; "
        f"RSS at start {settled.rss / MIB:,.1f} MiB, {settled.describe()}"
    )

    load = figures.load = Load(rate, seconds, figures.connections)
    opened = OpenLoop(server, f"/v1/lists/{soak_list}/claims", "soak-", load)
    try:
        run_async(opened.run())
    finally:
        soak_notes(figures, notes)
    figures.codes = run_async(_codes(server, soak_list))
    notes.append(balance_note(figures))
    status, stop_s = server.stop()
    if status != 0:
        notes.append(f"voucherd (soak server) exited {status} on SIGTERM after {stop_s:.1f} s")


def soak_notes(figures: SoakFigures, notes: list[str]) -> None:
    load = figures.load
    if load is None:
        return
    held = load.achieved >= HELD * load.rate
    statuses = ", ".join(f"{n:,} x {s}" for s, n in sorted(load.statuses.items())) or "none"
    note = (
        f"scenario h client: open loop at {load.rate:,.0f}/s for {load.seconds:g} s over "
        f"{load.connections} connections: {load.scheduled:,} claims due, {load.sent:,} sent, "
        f"replies {statuses}, {load.lost} lost in flight, {load.connect_errors} failed connects, "
        f"{load.cut_off} cut off and {load.unsent} never sent at the end; held "
        f"{load.achieved:,.0f}/s over {load.window_s:.1f} s "
        f"({100 * load.achieved / load.rate:.1f}% of the target); most claims queued for a free "
        f"connection at once: {load.backlog_max:,}; "
        f"client core {100 * load.client_busy:.0f}% busy (the bench's process), server core "
        f"{100 * load.server_busy:.0f}% busy; the client saw each claim due after its intended "
        f"time by p50 {_ms(load.timer, 50.0) or 0:.2f} ms, p99 {_ms(load.timer, 99.0) or 0:.2f} "
        f"ms, max {_ms(load.timer, None) or 0:.2f} ms (it wakes every {1e3 * TICK_S:g} ms at most; "
        "every latency includes this)"
    )
    if not held and load.client_busy >= 0.9:
        note += (
            f"; the Python client could NOT hold {load.rate:,.0f}/s on one core (its core was "
            f"near saturation): it reached {load.achieved:,.0f}/s, and the figures are for that "
            "rate"
        )
    elif not held:
        note += (
            f"; the rate was NOT held with the client core at {100 * load.client_busy:.0f}%: the "
            "server fell behind"
        )
    if load.stopped:
        note += f"; the schedule stopped early: {load.stopped}"
    if load.first_failure:
        note += f"; first failure: {load.first_failure}"
    notes.append(note)
    per_minute = []
    for index, hist in enumerate(load.minutes):
        # Claims of this minute's schedule: those due in it, as far as the schedule got.
        due = min(load.scheduled, math.ceil(load.rate * 60 * (index + 1))) - math.ceil(
            load.rate * 60 * index
        )
        figs = ", ".join(f"{label} {_ms(hist, p) or 0:.2f}" for label, p in PERCENTILES)
        per_minute.append(
            f"min {index + 1}: {hist.get_total_count():,} of {max(due, 0):,} answered, {figs} ms"
        )
    if per_minute:
        notes.append(
            "scenario h by minute of intended send (claims due in it answered, then latency from "
            "intended send): " + "; ".join(per_minute)
        )
    if load.samples:
        samples = ", ".join(
            f"{s.at_s:.0f} s {s.rss / MIB:,.1f} ({s.created:,})" for s in load.samples
        )
        slopes = [
            f"{label} {slope / MIB:+,.2f}"
            for label, slope in (
                ("whole soak", figures.slope_per_million()),
                ("second half", figures.slope_per_million(load.seconds / 2)),
            )
            if slope is not None
        ]
        notes.append(
            f"scenario h VmRSS every {SAMPLE_S:g} s (MiB, 201s so far), the last right after the "
            f"last reply: {samples}"
            + (
                f"; least-squares slope of RSS over claims, MiB per million: {', '.join(slopes)}"
                if slopes
                else ""
            )
        )


def balance_note(figures: SoakFigures) -> str:
    codes, load = figures.codes, figures.load
    if codes is None or load is None:
        return "scenario h: the soak list's counts were not read"
    checked = figures.balance()
    extra = checked[1] if checked else 0
    return (
        f"scenario h: the soak list at the end: uploaded {codes['uploaded']:,} (the upload "
        f"accepted {figures.uploaded or 0:,}) = available {codes['available']:,} + distributed "
        f"{codes['distributed']:,} + withdrawn {codes['withdrawn']:,}"
        f"{'' if checked and checked[0] else ' (MISMATCH)'}; the client counted "
        f"{load.created:,} 201s, distributed − 201s = {extra:+,} (may be up to "
        f"{load.cut_off + load.lost} for the claims cut off or lost in flight; below 0 would be a "
        "claim answered but not counted)"
    )


def soak_rows(figures: SoakFigures) -> list[Row]:
    missing = "-"
    load = figures.load
    how = f"open loop, {figures.connections} connections, {figures.minutes:g} min"
    if figures.capacity is not None:
        base = f"target: {100 * SHARE:.0f}% of wrk c={CAPACITY_CONNECTIONS} {CAPACITY_SECONDS} s"
        base += f" ({figures.capacity.rps:,.0f}/s)"
    elif figures.target is not None:
        base = "target: --rate"
    else:
        base = f"target: {100 * SHARE:.0f}% of capacity"
    achieved = load.achieved if load and load.window_s > 0 else None
    target = figures.target
    share = achieved / target if achieved is not None and target else None
    rows = [
        Row(
            SCENARIO,
            f"claims/s held (replies / time), {how}",
            f"{achieved:,.0f}" if achieved is not None else missing,
            base,
            f"{target:,.0f}" if target is not None else missing,
            f"{100 * share:.1f}% of target" if share is not None else "",
            f">= {100 * HELD:.0f}% of target",
            verdict(None if share is None else share >= HELD),
        )
    ]
    for label, percentile in PERCENTILES:
        whole = _ms(load.latency, percentile) if load else None
        first = _ms(load.minutes[0], percentile) if load and load.minutes else None
        last = _ms(load.minutes[-1], percentile) if load and load.minutes else None
        rows.append(
            Row(
                SCENARIO,
                f"{label} latency from intended send, whole soak",
                f"{whole:.2f} ms" if whole is not None else missing,
                "first minute -> last minute",
                f"{first:.2f} -> {last:.2f} ms" if first is not None and last is not None else "",
                f"{last / first:.2f}x" if first and last is not None else "",
            )
        )
    start, end, top = figures.rss_start, figures.rss_end, figures.rss_max
    rows.append(
        Row(
            SCENARIO,
            "VmRSS at start -> end (max), MiB",
            f"{start / MIB:,.1f} -> {end / MIB:,.1f} ({(top or 0) / MIB:,.1f})"
            if start is not None and end is not None
            else missing,
        )
    )
    growth = figures.growth_per_million()
    rows.append(
        Row(
            SCENARIO,
            "VmRSS growth per million claims, start to end",
            f"{growth / MIB:+,.2f} MiB" if growth is not None else missing,
        )
    )
    bad = load.non_2xx + load.socket_errors + load.cut_off + load.unsent if load else None
    rows.append(
        Row(
            SCENARIO,
            "non-2xx / socket errors / cut off or never sent",
            f"{load.non_2xx} / {load.socket_errors} / {load.cut_off + load.unsent}"
            if load
            else missing,
            target="0 / 0 / 0",
            met=verdict(None if bad is None else bad == 0),
        )
    )
    checked = figures.balance()
    rows.append(
        Row(
            SCENARIO,
            "uploaded = available + distributed + withdrawn; distributed − 201s",
            ("balanced" if checked[0] else "NOT balanced") + f"; {checked[1]:+,}"
            if checked
            else missing,
            target="balanced; 0 (+ cut off)",
            met=verdict(None if checked is None else checked[0]),
        )
    )
    return rows


# ---------------------------------------------------------------------------------------------
# On its own: `python -m bench.soak [--minutes 10] [--rate N]`.


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=MINUTES, help="the soak's length")
    parser.add_argument(
        "--rate",
        type=float,
        help=f"claims/s to hold (default: {100 * SHARE:.0f}%% of the capacity wrk measures)",
    )
    parser.add_argument(
        "--connections", type=int, default=CONNECTIONS, help="the soak client's connections"
    )
    parser.add_argument(
        "--module", default="voucherd", help="server to bench, run as `python -m MODULE serve`"
    )
    parser.add_argument("--work-dir", type=Path, help="keep data dirs and logs here")
    parser.add_argument(
        "--rate-bound",
        type=float,
        default=20_000.0,
        help="claims/s the server will not exceed; sizes the capacity list (default 20,000)",
    )
    parser.add_argument("--markdown-out", type=Path, help="also write the Markdown to this file")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or (args.rate is not None and args.rate <= 0) or args.connections < 1:
        parser.error("--minutes, --rate and --connections must be positive")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    os.sched_setaffinity(0, {CLIENT_CORE})
    wrk.ensure_wrk()
    os.chdir(Path(__file__).resolve().parent.parent)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="voucherd-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"bench.soak: {args.minutes:g} min, logs and data in {work_dir}", flush=True)

    load_before = report.busy_neighbours()
    notes: list[str] = []
    figures = SoakFigures(args.minutes, args.connections)
    fleet = Fleet()
    try:
        print("bench: voucherd: soak ...", flush=True)
        scenarios.attempt(
            "soak",
            notes,
            lambda: soak_side(
                fleet, args.module, work_dir, args.rate, notes, figures, args.rate_bound
            ),
        )
    except KeyboardInterrupt as exc:
        notes.append(f"interrupted ({exc or 'SIGINT'}): the figures are partial")
    finally:
        fleet.stop_all()

    table = soak_rows(figures)
    load_after = report.busy_neighbours()
    if load_before[1] or load_after[1]:
        notes.insert(0, report.BUSY_WARNING)
    facts = report.machine_facts(argv, load_before[0], load_after[0], "python -m bench.soak")
    print()
    for key, value in facts:
        print(f"{key}: {value}")
    print()
    print(report.plain_table(table))
    if notes:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in notes))
    md = report.markdown(table, facts, notes)
    print("\n----- Markdown -----\n")
    print(md)
    if args.markdown_out:
        args.markdown_out.write_text(md)
    print(f"logs: {work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
