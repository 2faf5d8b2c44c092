"""Open-loop single claims at a fixed rate, latency from each claim's intended send time.

wrk is closed loop: a connection waiting for its reply sends nothing, so a stall of the server
hides the requests it would have received (coordinated omission). Here claim i is due at start +
i/rate whatever the earlier replies did, and goes out on the first free one of a fixed number of
keep-alive connections; a claim due while every connection waits queues in the client, its
latency still counting from its intended send time (wrk2-style), into an HdrHistogram.

The client speaks HTTP/1.1 through an asyncio protocol of its own, not aiohttp's client, so one
core sends far more than voucherd serves. It wakes at most every TICK_S and sends every claim
that fell due; how late it saw each claim due is kept too (`Load.timer`), since every latency
includes it. The soak (h.), the latency sweep (i.) and the claims during an upload (j.) use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from hdrh.histogram import HdrHistogram

from bench.servers import Server

TICK_S = 0.001  # the client wakes at most this often and sends every claim that fell due
DRAIN_S = 10.0  # after the schedule, how long the claims still queued or in flight may take
HELD = 0.99  # a rate counts as held at this share of the target
HIGHEST_US = 60_000_000  # histograms from 1 µs to 60 s, 3 significant digits

PERCENTILES: tuple[tuple[str, float | None], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("max", None),
)


def histogram() -> Any:
    return HdrHistogram(1, HIGHEST_US, 3)


def us(seconds: float) -> int:
    return min(max(1, round(seconds * 1e6)), HIGHEST_US)


def ms(hist: Any, percentile: float | None) -> float | None:
    """A percentile (None: the max) in ms, or None for an empty histogram."""
    if hist.get_total_count() == 0:
        return None
    if percentile is None:
        return float(hist.get_max_value()) / 1e3
    return float(hist.get_value_at_percentile(percentile)) / 1e3


def latencies(hist: Any) -> str:
    """'p50 / p90 / p99 / p99.9 / max' in ms, or '-' for an empty histogram."""
    values = [ms(hist, p) for _, p in PERCENTILES]
    return " / ".join(f"{v:.2f}" for v in values if v is not None) or "-"


@dataclass
class Load:
    """What the open-loop client did, filled as it goes so an interrupted run keeps its figures."""

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
    server_cpu_s: float | None = None  # None: no server process to read
    latency: Any = field(default_factory=histogram)  # µs from intended send to reply
    timer: Any = field(default_factory=histogram)  # µs from intended send to when the client saw
    # it due: the client's own timer, part of every latency
    minutes: list[Any] = field(default_factory=list)  # latency by minute of intended send

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
    def errors(self) -> int:
        """Every claim that did not get a 2xx: non-2xx, lost, cut off or never sent."""
        return self.non_2xx + self.socket_errors + self.cut_off + self.unsent

    @property
    def achieved(self) -> float:
        """Replies a second over the window: the rate the server was actually held at."""
        return self.replies / self.window_s if self.window_s > 0 else 0.0

    @property
    def held(self) -> bool:
        return self.achieved >= HELD * self.rate

    @property
    def client_busy(self) -> float:
        return self.client_cpu_s / self.window_s if self.window_s > 0 else 0.0

    @property
    def server_busy(self) -> float | None:
        if self.server_cpu_s is None or self.window_s <= 0:
            return None
        return self.server_cpu_s / self.window_s

    @property
    def server_cpu_per_reply_us(self) -> float | None:
        """The server process's CPU time (all its threads) a reply, in µs."""
        if self.server_cpu_s is None or not self.replies:
            return None
        return 1e6 * self.server_cpu_s / self.replies

    def minute(self, offset_s: float) -> Any:
        index = max(0, int(offset_s // 60))
        while len(self.minutes) <= index:
            self.minutes.append(histogram())
        return self.minutes[index]

    def fail(self, why: str) -> None:
        if not self.first_failure:
            self.first_failure = why[:600]

    def describe(self) -> str:
        """The client's side of a run, for the notes: what was due, sent and answered, how late
        the client itself was, and who fell short when the rate was not held."""
        statuses = ", ".join(f"{n:,} x {s}" for s, n in sorted(self.statuses.items())) or "none"
        server = "" if self.server_busy is None else f", server core {100 * self.server_busy:.0f}%"
        note = (
            f"open loop at {self.rate:,.0f}/s for {self.seconds:g} s over {self.connections} "
            f"connections: {self.scheduled:,} claims due, {self.sent:,} sent, replies {statuses}, "
            f"{self.lost} lost in flight, {self.connect_errors} failed connects, {self.cut_off} "
            f"cut off and {self.unsent} never sent at the end; held {self.achieved:,.0f}/s over "
            f"{self.window_s:.1f} s ({100 * self.achieved / self.rate:.1f}% of the target); most "
            f"claims queued for a free connection at once: {self.backlog_max:,}; client core "
            f"{100 * self.client_busy:.0f}% busy (the bench's process){server}; the client saw "
            f"each claim due after its intended time by p50 {ms(self.timer, 50.0) or 0:.2f} ms, "
            f"p99 {ms(self.timer, 99.0) or 0:.2f} ms, max {ms(self.timer, None) or 0:.2f} ms (it "
            f"wakes every {1e3 * TICK_S:g} ms at most; every latency includes this)"
        )
        if not self.held and self.client_busy >= 0.9:
            note += (
                f"; the Python client could NOT hold {self.rate:,.0f}/s on one core (its core was "
                f"near saturation): it reached {self.achieved:,.0f}/s, and the figures are for "
                "that rate"
            )
        elif not self.held:
            note += (
                f"; the rate was NOT held with the client core at {100 * self.client_busy:.0f}%: "
                "the server fell behind"
            )
        if self.stopped:
            note += f"; the schedule stopped early: {self.stopped}"
        if self.first_failure:
            note += f"; first failure: {self.first_failure}"
        return note


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
    status and Content-Length are all the client needs (voucherd sends no chunked replies)."""

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
    """Claims `{"user_id": USERS<i>}` to `base_url + path` at `figures.rate` a second for
    `figures.seconds` (or until `finish()`), each at its intended send time on the first free
    connection.

    `server`, when given, is the process whose CPU time is read over the run and whose exit stops
    the schedule; `every` calls `tick(seconds since start)` that often during the schedule (the
    soak samples VmRSS with it).
    """

    def __init__(
        self,
        base_url: str,
        path: str,
        users: str,
        figures: Load,
        server: Server | None = None,
        every: tuple[float, Callable[[float], None]] | None = None,
    ) -> None:
        split = urlsplit(base_url)
        if split.hostname is None or split.port is None:
            raise ValueError(f"want http://HOST:PORT, got {base_url!r}")
        self.host, self.port = split.hostname, split.port
        self.server = server
        self.every = every
        self.figures = figures
        self.users = users.encode()
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.open: set[_Connection] = set()
        self.idle: deque[_Connection] = deque()  # oldest first, so every connection stays warm
        self.backlog: deque[Slot] = deque()
        self.start = 0.0
        self.ending = False  # finish() was called: no claim falls due after now
        self.closing = False
        self.draining = False  # the schedule is over: waiting for the last replies
        self.drained = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def finish(self) -> None:
        """End the schedule now (the claims already due are still sent and awaited)."""
        self.ending = True

    # -- connections

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closing:
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port
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
        took = us(now - slot[1])
        figures.latency.record_value(took)
        figures.minute(slot[1] - self.start).record_value(took)
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

    async def _watch(self) -> None:
        """Calls `tick` every so often; stops the schedule if the server exits."""
        step = self.every[0] if self.every else 0.5
        while True:
            await asyncio.sleep(step)
            proc = self.server.proc if self.server else None
            if proc is not None and proc.poll() is not None:
                self.figures.stopped = f"the server exited with {proc.returncode} during the run"
                return
            if self.every:
                self.every[1](time.perf_counter() - self.start)

    def _cpu(self) -> float | None:
        if self.server is None:
            return None
        with contextlib.suppress(OSError):  # gone if the server exited
            return self.server.cpu()
        return None

    async def run(self) -> None:
        figures = self.figures
        rate, total = figures.rate, round(figures.rate * figures.seconds)
        for _ in range(figures.connections):
            await self._connect()
        cpu, mine = self._cpu(), time.process_time()
        start = self.start = time.perf_counter() + 0.05
        watch = asyncio.create_task(self._watch())
        clock, timer, idle, backlog = time.perf_counter, figures.timer, self.idle, self.backlog
        i = 0
        try:
            while i < total and not figures.stopped and not self.ending:
                now = clock()
                due = min(total, math.floor((now - start) * rate) + 1)
                while i < due:
                    at = start + i / rate
                    timer.record_value(us(now - at))
                    if idle:
                        self._send(idle.popleft(), (i, at))
                    else:
                        backlog.append((i, at))
                    i += 1
                figures.scheduled = i
                figures.backlog_max = max(figures.backlog_max, len(backlog))
                await asyncio.sleep(max(start + i / rate - clock(), TICK_S))
            if self.ending:  # the schedule's length is what ran, not what was planned
                figures.seconds = round(i / rate, 1)
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
            now_cpu = self._cpu()
            if cpu is not None and now_cpu is not None:
                figures.server_cpu_s = now_cpu - cpu
            if figures.window_s <= 0:
                figures.window_s = clock() - start
            for conn in list(self.open):
                conn.close()
            for task in list(self.tasks):
                task.cancel()
