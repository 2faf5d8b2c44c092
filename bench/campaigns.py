"""Scenarios f and g, for campaigns and the event stream, each beside a baseline from the same run.

f. campaign rewards: `POST /v1/campaigns/{id}/rewards` from wrk (`rewards.lua`, a distinct
   `user_id` a request), beside direct single claims on the same server, alternated so drift hits
   both. rewards.lua counts `201`s and `200`s, and the campaign's `rewards.issued` is read around
   each run, so a `{"rewarded": false}` reply (a `200`) cannot pass for a reward.
g. events: wrk on single claims with no subscriber, then with 10 WebSocket subscribers on
   `GET /v1/events` (in the bench's process, on the client core): claims/s both ways and the
   events each subscriber received. Then, with the subscribers still connected, a claim-to-event
   latency probe: claims sent open loop at a fixed rate, each one's intended send time kept by
   user id, and one subscriber noting when each user's event arrives; the same claims' reply
   latency is the baseline. Every subscriber checks that `seq` goes up by one, event by event.

`python -m bench.campaigns [--quick] [--only rewards|events]` runs them on their own; `python -m
bench` runs them after the other scenarios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import client, lists, report, standalone, wrk
from bench.open_loop import histogram, us
from bench.report import MISSING, Row, shown, times, verdict
from bench.scenarios import Profile, run_async
from bench.servers import CLIENT_CORE, Fleet, Server, voucherd_server

CONNECTIONS = 64  # wrk's connections for f and g: scenario a's quick setting
REWARDS_LUA = Path(__file__).with_name("rewards.lua")
TEMPLATE = "Hi {{ Profile.user_id }}, your code is {{ Event.voucherCode }}"
WAIT_S = 30.0  # longest wait for an event the bench is sure is coming
REWARDED = "voucher.rewarded"


def _upper_bound(rate_bound: float, seconds: int) -> int:
    """Codes a wrk run cannot exhaust: 1.5 times the fastest rate the bench has seen."""
    return int(1.5 * rate_bound * seconds) + 10_000


async def _expect(resp: aiohttp.ClientResponse, what: str, ok: tuple[int, ...]) -> Any:
    text = await resp.text()
    if resp.status not in ok:
        raise client.ApiError(f"{what} -> {resp.status}: {text[:2000]}")
    return json.loads(text)


async def _top_up(
    http: aiohttp.ClientSession,
    base: str,
    list_id: int,
    letters: Iterator[str],
    minimum: int,
    chunk: int,
    notes: list[str],
) -> None:
    """Upload sequential codes until the list holds at least `minimum` available codes."""
    available = int((await client.get_list(http, base, list_id))["codes"]["available"])
    while available < minimum:
        count = max(chunk, minimum - available)
        letter = next(letters, None)
        if letter is None:
            raise client.ApiError(f"list {list_id}: out of code prefixes for more uploads")
        up = await client.upload(http, base, list_id, letter, count)
        if up.accepted != count:
            notes.append(f"list {list_id}: upload of {count:,} codes accepted {up.accepted:,}")
        available = int((await client.get_list(http, base, list_id))["codes"]["available"])


def _wrk_cpu() -> float:
    """CPU seconds of the bench's ended children so far: wrk's, read once it has exited."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


# ---------------------------------------------------------------------------------------------
# f. campaign rewards beside direct claims, on one server.


@dataclass(frozen=True, slots=True)
class Counted:
    """A wrk run with rewards.lua: wrk's figures, the replies by status, the server core's share."""

    run: wrk.WrkResult
    created: int  # 201: a fresh reward or claim
    repeated: int  # 200: a repeat, or a reward refused (`"rewarded": false`)
    busy: float

    @property
    def per_second(self) -> float:
        """201s a second: a refused reward or a repeat does not count."""
        return self.created / self.run.duration_s


def run_counted(server: Server, path: str, seconds: int, run_prefix: str) -> Counted:
    """wrk -t1 with rewards.lua, pinned to the client core like bench.wrk.run."""
    cmd = ["taskset", "-c", str(CLIENT_CORE), wrk.ensure_wrk(), "-t1", f"-c{CONNECTIONS}"]
    cmd += [f"-d{seconds}s", "--latency", "--timeout", "10s", "-s", str(REWARDS_LUA)]
    cmd += [server.url + path, "--", run_prefix]
    cpu = server.cpu()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    busy_s = server.cpu() - cpu
    if done.returncode != 0:
        raise wrk.WrkFailed(f"wrk exited {done.returncode}: {done.stderr}{done.stdout}")
    run = wrk.parse(done.stdout, CONNECTIONS)
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH_WRK "))
    raw = json.loads(line.removeprefix("BENCH_WRK "))
    return Counted(run, raw["status_201"], raw["status_200"], busy_s / run.duration_s)


def _best(runs: list[Counted]) -> Counted | None:
    return max(runs, key=lambda c: c.per_second) if runs else None


def _describe(runs: list[Counted]) -> str:
    return ", ".join(
        f"{c.per_second:,.0f}/s ({c.created:,} 201, {c.repeated:,} 200, "
        f"{c.run.non_2xx:,} non-2xx), server core {100 * c.busy:.0f}% busy"
        for c in runs
    )


@dataclass
class RewardFigures:
    claims: list[Counted] = field(default_factory=list)
    rewards: list[Counted] = field(default_factory=list)
    issued: list[int] = field(default_factory=list)  # campaign's rewards.issued growth per run


async def _campaign(http: aiohttp.ClientSession, base: str, list_id: int) -> int:
    body = {
        "name": "bench rewards",
        "lists": [list_id],
        "max_codes_per_user": 1,
        "message_template": TEMPLATE,
    }
    async with http.post(f"{base}/v1/campaigns", json=body) as resp:
        reply = await _expect(resp, f"POST /v1/campaigns {body}", (201,))
    return int(reply["id"])


async def _issued(http: aiohttp.ClientSession, base: str, campaign_id: int) -> int:
    async with http.get(f"{base}/v1/campaigns/{campaign_id}") as resp:
        reply = await _expect(resp, f"GET /v1/campaigns/{campaign_id}", (200,))
    return int(reply["rewards"]["issued"])


def rewards_side(
    fleet: Fleet,
    profile: Profile,
    work_dir: Path,
    rate_bound: float,
    notes: list[str],
    figures: RewardFigures,
) -> None:
    """Fills `figures` as it goes, so a failure part-way still leaves what was measured.

    `rate_bound`: the fastest single-claim rate seen so far, to size the lists so that no run
    meets `out_of_codes` or `409 list_exhausted`.
    """
    server = voucherd_server(work_dir, work_dir / "rewards-data", profile.module)
    fleet.start(server)
    base = server.url

    async def setup() -> tuple[int, int, int]:
        async with client.session() as http:
            claims_list = await client.create_list(http, base, "bench-f-claims", "claims")
            rewards_list = await client.create_list(http, base, "bench-f-rewards", "rewards")
            return claims_list, rewards_list, await _campaign(http, base, rewards_list)

    claims_list, rewards_list, campaign_id = run_async(setup())
    claims_letters, rewards_letters = iter("ABCDEFGHIJKLM"), iter("NOPQRSTUVWXYZ")
    needed = _upper_bound(rate_bound, profile.wrk_seconds)

    async def top_up() -> None:
        async with client.session() as http:
            for list_id, letters in (
                (claims_list, claims_letters),
                (rewards_list, rewards_letters),
            ):
                await _top_up(http, base, list_id, letters, needed, profile.claim_codes, notes)

    async def issued() -> int:
        async with client.session() as http:
            return await _issued(http, base, campaign_id)

    claims_path = f"/v1/lists/{claims_list}/claims"
    rewards_path = f"/v1/campaigns/{campaign_id}/rewards"
    run_async(top_up())
    run_counted(server, claims_path, 2, "f-warm-claims")
    run_counted(server, rewards_path, 2, "f-warm-rewards")
    for r in range(profile.rounds):
        run_async(top_up())
        figures.claims.append(run_counted(server, claims_path, profile.wrk_seconds, f"fc{r}"))
        before = run_async(issued())
        figures.rewards.append(run_counted(server, rewards_path, profile.wrk_seconds, f"fr{r}"))
        figures.issued.append(run_async(issued()) - before)

    notes.append(f"scenario f claims runs: {_describe(figures.claims)}")
    notes.append(f"scenario f rewards runs: {_describe(figures.rewards)}")
    for run, grew in zip(figures.rewards, figures.issued, strict=True):
        # wrk does not count the replies cut off at its end, so `issued` may run ahead of the
        # 201s by up to one request per connection; behind them would mean a lost reward.
        odd = "" if 0 <= grew - run.created <= CONNECTIONS else " (MISMATCH)"
        notes.append(
            f"scenario f: a rewards run counted {run.created:,} 201s from wrk; the campaign's "
            f"rewards.issued grew by {grew:,}{odd}"
        )
    lists.stop(server, "rewards server", notes)


def reward_rows(profile: Profile, figures: RewardFigures) -> list[Row]:
    rw, cl = _best(figures.rewards), _best(figures.claims)
    baseline = f"direct claims, same server, c={CONNECTIONS}"
    share = rw.per_second / cl.per_second if rw and cl and cl.per_second else None
    rows = [
        Row(
            "f. campaign rewards",
            f"rewards/s (201s), wrk -t1 c={CONNECTIONS}, {profile.wrk_seconds} s",
            f"{rw.per_second:,.0f}" if rw else MISSING,
            baseline + ", 201s/s",
            f"{cl.per_second:,.0f}" if cl else MISSING,
            f"{100 * share:.0f}% of claims" if share is not None else "",
        )
    ]
    for label, attr in (("p50", "p50_ms"), ("p99", "p99_ms")):
        v = getattr(rw.run, attr) if rw else None
        b = getattr(cl.run, attr) if cl else None
        rows.append(
            Row(
                "f. campaign rewards",
                f"{label} latency (closed loop)",
                shown(v, "{:.2f} ms"),
                baseline,
                shown(b, "{:.2f} ms"),
                times(v, b),
            )
        )

    def failures(runs: list[Counted]) -> str:
        if not runs:
            return MISSING
        non_2xx = sum(c.run.non_2xx for c in runs)
        socket_errors = sum(c.run.socket_errors for c in runs)
        return f"{non_2xx} / {socket_errors} / {sum(c.repeated for c in runs)}"

    # Every run counts here, not only the best: one refused reward anywhere is a failure.
    bad = [c.run.non_2xx + c.run.socket_errors + c.repeated for c in figures.rewards]
    issued_ok = all(
        0 <= grew - c.created <= CONNECTIONS
        for c, grew in zip(figures.rewards, figures.issued, strict=True)
    )
    rows.append(
        Row(
            "f. campaign rewards",
            "non-2xx / socket errors / 200 (not rewarded or repeat), all runs",
            failures(figures.rewards),
            baseline,
            failures(figures.claims),
            "",
            "0 / 0 / 0",
            verdict(None if not bad else not any(bad) and issued_ok),
        )
    )
    return rows


# ---------------------------------------------------------------------------------------------
# g. events to WebSocket subscribers while claims run, and claim-to-event latency.


class SubscriberGone(RuntimeError):
    """The subscriber stopped reading (closed by the server, or its reader failed)."""


class Subscriber:
    """One WebSocket subscriber on /v1/events: counts events, checks that `seq` goes up by one,
    and tells when the events of users asked for arrive (`perf_counter`, the probe's clock)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received = 0  # events, of every type
        self.rewarded = 0  # voucher.rewarded events
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.gaps = 0  # events skipped: seq jumped by more than one
        self.duplicates = 0  # events whose seq was not above the last one
        self.closed = ""  # how the server closed the socket, if it did
        self.waiting: dict[str, asyncio.Future[float]] = {}  # userId -> its event's arrival
        self._leaving = False
        self.task = asyncio.create_task(self._read(), name="bench-subscriber")

    async def _read(self) -> None:
        try:
            await self._receive()
        except Exception as exc:
            self.closed = f"reader failed: {exc!r}"
            raise
        finally:
            # Nobody waits in vain for an event this subscriber will never see.
            gone = SubscriberGone(self.closed or "stopped reading")
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(gone)
            self.waiting.clear()

    async def _receive(self) -> None:
        loads, clock = orjson.loads, time.perf_counter
        while True:
            msg = await self.ws.receive()
            now = clock()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                # CLOSE carries the server's code and reason (4008: this subscriber lagged).
                if not self._leaving:
                    self.closed = f"{msg.type.name} {msg.data} {msg.extra or ''}".strip()
                return
            event = loads(msg.data)
            seq: int = event["seq"]
            last = self.last_seq
            if last is None:
                self.first_seq = seq
            elif seq != last + 1:
                if seq <= last:
                    self.duplicates += 1
                    continue
                self.gaps += seq - last - 1
            self.last_seq = seq
            self.received += 1
            if event["type"] == REWARDED:
                self.rewarded += 1
                if self.waiting:
                    future = self.waiting.pop(event["data"]["userId"], None)
                    if future is not None and not future.done():
                        future.set_result(now)

    def expect(self, user: str) -> asyncio.Future[float]:
        """A future for the arrival of `user`'s event; ask before the claim is sent."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if self.task.done():
            future.set_exception(SubscriberGone(self.closed or "stopped reading"))
        else:
            self.waiting[user] = future
        return future

    async def leave(self) -> None:
        self._leaving = True
        await self.ws.close()
        await self.task


@dataclass(frozen=True, slots=True)
class Timed:
    """A wrk run with claims.lua: wrk's figures and each side's CPU share meanwhile."""

    run: wrk.WrkResult
    busy: float  # the server's core
    wrk_busy: float  # wrk, on the client core
    client_busy: float  # the bench's own process (the subscribers), on the client core
    window_s: float  # wall time of the run as the bench saw it


async def _wrk_claims(server: Server, path: str, seconds: int, run_prefix: str) -> Timed:
    """claims.lua through bench.wrk, in a thread so the subscribers go on reading meanwhile."""
    cpu, wrk_cpu, mine = server.cpu(), _wrk_cpu(), time.process_time()
    began = time.perf_counter()
    run = await asyncio.to_thread(wrk.run, server.url + path, CONNECTIONS, seconds, run_prefix)
    window = time.perf_counter() - began
    return Timed(
        run,
        (server.cpu() - cpu) / run.duration_s,
        (_wrk_cpu() - wrk_cpu) / window,
        (time.process_time() - mine) / window,
        window,
    )


@dataclass(frozen=True, slots=True)
class Watched:
    """A wrk run on claims while the subscribers read the events."""

    timed: Timed
    delivered: tuple[int, ...]  # events each subscriber received during the run
    rewarded: tuple[int, ...]  # voucher.rewarded events each received from start to end marker
    caught_up_s: float  # from wrk's end until every subscriber had the end marker's event

    def per_subscriber(self) -> tuple[float, float]:
        """(slowest, mean) events/s delivered to one subscriber during the run."""
        window = self.timed.window_s
        return min(self.delivered) / window, sum(self.delivered) / len(self.delivered) / window

    def total(self) -> float:
        return sum(self.delivered) / self.timed.window_s


@dataclass
class Probe:
    rate: int
    seconds: int
    sent: int = 0
    created: int = 0  # claims answered 201
    first_failure: str = ""
    missing: int = 0  # 201 claims whose event had not arrived WAIT_S after the last reply
    # Microseconds from each claim's intended send time to its reply and to its event's arrival,
    # and to when the sender actually sent it: the share of both that is the client's own timer.
    replies: Any = field(default_factory=histogram)
    events: Any = field(default_factory=histogram)
    lateness: Any = field(default_factory=histogram)

    def ms(self, which: str, percentile: float | None) -> float | None:
        histogram = {"replies": self.replies, "events": self.events}.get(which, self.lateness)
        if histogram.get_total_count() == 0:
            return None
        if percentile is None:
            return float(histogram.get_max_value()) / 1e3
        return float(histogram.get_value_at_percentile(percentile)) / 1e3


@dataclass
class EventFigures:
    alone: list[Timed] = field(default_factory=list)  # claims with no subscriber
    watched: list[Watched] = field(default_factory=list)  # claims with the subscribers reading
    probe: Probe | None = None
    subscribers: int = 0  # subscriber connections made, over all rounds
    gaps: int = 0
    duplicates: int = 0
    closed: list[str] = field(default_factory=list)


async def probe(
    http: aiohttp.ClientSession, url: str, rate: int, seconds: int, watcher: Subscriber
) -> Probe:
    """Claims to `url` at `rate` a second, open loop: each is sent at its intended time (or as soon
    after as the loop can) without waiting for earlier replies, and its latencies count from the
    intended time, so a stall on either side shows in full (no coordinated omission)."""
    result = Probe(rate, seconds)
    headers = {"Content-Type": "application/json"}
    arrivals: list[tuple[float, asyncio.Future[float]]] = []  # intended time, event's arrival

    async def claim(user: str, at: float, arrival: asyncio.Future[float]) -> None:
        async with http.post(url, data=orjson.dumps({"user_id": user}), headers=headers) as resp:
            text = await resp.text()
        done = time.perf_counter()
        if resp.status == 201:
            result.replies.record_value(us(done - at))
            arrivals.append((at, arrival))
        else:
            watcher.waiting.pop(user, None)
            arrival.cancel()
            if not result.first_failure:
                result.first_failure = f"POST {url} -> {resp.status}: {text[:500]}"

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    try:
        for i in range(rate * seconds):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            result.lateness.record_value(us(time.perf_counter() - at))
            user = f"probe-{i}"
            # Asked before the claim is sent: its event may come before its reply.
            tasks.append(asyncio.create_task(claim(user, at, watcher.expect(user))))
        await asyncio.gather(*tasks)
        result.sent, result.created = len(tasks), len(arrivals)
        if arrivals:
            await asyncio.wait([arrival for _, arrival in arrivals], timeout=WAIT_S)
    finally:
        for task in tasks:
            task.cancel()
    for at, arrival in arrivals:
        if arrival.done() and arrival.exception() is None:
            result.events.record_value(us(arrival.result() - at))
        else:
            arrival.cancel()
            result.missing += 1
    watcher.waiting.clear()
    return result


async def _mark(
    http: aiohttp.ClientSession, base: str, list_id: int, subscribers: list[Subscriber], user: str
) -> float:
    """A claim every subscriber must see: returns when the last of them had its event."""
    futures = [s.expect(user) for s in subscribers]
    async with http.post(f"{base}/v1/lists/{list_id}/claims", json={"user_id": user}) as resp:
        await _expect(resp, f"POST /v1/lists/{list_id}/claims {user}", (201,))
    done, pending = await asyncio.wait(futures, timeout=WAIT_S)
    gone = [f for f in done if f.exception() is not None]
    if pending or gone:
        for s, future in zip(subscribers, futures, strict=True):
            future.cancel()
            s.waiting.pop(user, None)
        why = [f"{len(gone)} stopped reading (see the notes)"] if gone else []
        why += [f"{len(pending)} had no event after {WAIT_S:.0f} s"] if pending else []
        raise client.ApiError(
            f"waiting for the event of {user}: of {len(subscribers)} subscribers, "
            + " and ".join(why)
        )
    return max(f.result() for f in done)


async def _subscribe(http: aiohttp.ClientSession, base: str, count: int) -> list[Subscriber]:
    subscribers = []
    for _ in range(count):
        ws = await http.ws_connect(f"{base}/v1/events", max_msg_size=0)
        subscribers.append(Subscriber(ws))
    return subscribers


def events_side(
    fleet: Fleet,
    profile: Profile,
    work_dir: Path,
    rate_bound: float,
    notes: list[str],
    figures: EventFigures,
) -> None:
    """Fills `figures` as it goes, so a failure part-way still leaves what was measured."""
    server = voucherd_server(work_dir, work_dir / "events-data", profile.module)
    fleet.start(server)
    try:
        run_async(_events(server, profile, rate_bound, notes, figures))
    finally:
        figures_notes(figures, notes)
    lists.stop(server, "events server", notes)


async def _events(
    server: Server, profile: Profile, rate_bound: float, notes: list[str], figures: EventFigures
) -> None:
    base = server.url
    letters = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    # Two wrk runs a round and the probe's claims, with room to spare.
    needed = 2 * _upper_bound(rate_bound, profile.wrk_seconds) + profile.probe_rate * (
        profile.wrk_seconds + 10
    )
    # Subscribers on a connector of their own with no limit: a WebSocket holds its connection.
    async with (
        client.session() as http,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as streams,
    ):
        list_id = await client.create_list(http, base, "bench-events", "events")
        path = f"/v1/lists/{list_id}/claims"
        await _top_up(http, base, list_id, letters, needed, profile.claim_codes, notes)
        await asyncio.to_thread(wrk.run, base + path, CONNECTIONS, 2, "g-warm")
        for r in range(profile.rounds):
            await _top_up(http, base, list_id, letters, needed, profile.claim_codes, notes)
            figures.alone.append(await _wrk_claims(server, path, profile.wrk_seconds, f"ga{r}"))
            subscribers = await _subscribe(streams, base, profile.subscribers)
            figures.subscribers += len(subscribers)
            try:
                await _mark(http, base, list_id, subscribers, f"g-start-{r}")
                before = [s.received for s in subscribers]
                rewarded = [s.rewarded for s in subscribers]
                timed = await _wrk_claims(server, path, profile.wrk_seconds, f"gw{r}")
                delivered = tuple(s.received - b for s, b in zip(subscribers, before, strict=True))
                ended = time.perf_counter()
                caught_up = await _mark(http, base, list_id, subscribers, f"g-end-{r}") - ended
                figures.watched.append(
                    Watched(
                        timed,
                        delivered,
                        tuple(s.rewarded - b for s, b in zip(subscribers, rewarded, strict=True)),
                        caught_up,
                    )
                )
                if r == profile.rounds - 1:
                    figures.probe = await probe(
                        http,
                        base + path,
                        profile.probe_rate,
                        profile.wrk_seconds,
                        subscribers[0],
                    )
                    await _mark(http, base, list_id, subscribers, "g-probe-end")
            finally:
                for s in subscribers:
                    if not s.closed:
                        await s.leave()
                    figures.gaps += s.gaps
                    figures.duplicates += s.duplicates
                    if s.closed:
                        figures.closed.append(s.closed)


def figures_notes(figures: EventFigures, notes: list[str]) -> None:
    for alone, watched in zip(figures.alone, figures.watched, strict=False):
        slowest, mean = watched.per_subscriber()
        t = watched.timed
        made = t.run.requests - t.run.non_2xx
        notes.append(
            f"scenario g: claims {alone.run.rps:,.0f}/s alone (server core "
            f"{100 * alone.busy:.0f}% busy, wrk {100 * alone.wrk_busy:.0f}% of the client core), "
            f"{t.run.rps:,.0f}/s with {len(watched.delivered)} subscribers (server core "
            f"{100 * t.busy:.0f}% busy; client core: wrk {100 * t.wrk_busy:.0f}%, subscribers "
            f"{100 * t.client_busy:.0f}%); events/s a subscriber: slowest {slowest:,.0f}, mean "
            f"{mean:,.0f}; every subscriber had every event {1e3 * watched.caught_up_s:.0f} ms "
            f"after wrk ended; voucher.rewarded events from start to end marker "
            f"{min(watched.rewarded):,}–{max(watched.rewarded):,} a subscriber against wrk's "
            f"{made:,} 2xx claims (+2 markers; replies cut off at wrk's end are not counted)"
            + (
                "; the client core was near saturation, so the subscribers' figures may be the "
                "bench's limit rather than voucherd's"
                if t.wrk_busy + t.client_busy > 0.9
                else ""
            )
        )
    p = figures.probe
    if p is not None:
        notes.append(
            f"scenario g probe: {p.sent:,} claims at {p.rate}/s open loop for {p.seconds} s, "
            f"{p.created:,} answered 201, {p.missing} without an event after {WAIT_S:.0f} s; "
            f"each claim sent after its intended time by p50 {p.ms('lateness', 50.0):.2f} ms, "
            f"p99 {p.ms('lateness', 99.0):.2f} ms, max {p.ms('lateness', None):.2f} ms (the "
            "client's timer; both latencies include it)"
            + (f"; first failure: {p.first_failure}" if p.first_failure else "")
        )
    if figures.closed:
        closes = Counter(figures.closed).most_common()
        notes.append(
            f"scenario g: subscribers that stopped reading: "
            f"{'; '.join(f'{n} x {why}' for why, n in closes)}"
        )


def event_rows(profile: Profile, figures: EventFigures) -> list[Row]:
    scenario = "g. events"
    n = profile.subscribers
    alone = max(figures.alone, key=lambda t: t.run.rps) if figures.alone else None
    watched = max(figures.watched, key=lambda w: w.timed.run.rps) if figures.watched else None
    with_rps = watched.timed.run.rps if watched else None
    share = with_rps / alone.run.rps if with_rps is not None and alone else None
    rows = [
        Row(
            scenario,
            f"claims/s with {n} WebSocket subscribers, wrk -t1 c={CONNECTIONS}, "
            f"{profile.wrk_seconds} s",
            shown(with_rps, "{:,.0f}"),
            "no subscriber, same server",
            f"{alone.run.rps:,.0f}" if alone else MISSING,
            f"{100 * share:.0f}% of baseline" if share is not None else "",
        )
    ]
    slowest = total = None
    if watched:
        slowest, total = watched.per_subscriber()[0], watched.total()
    for metric, value, factor in (
        ("events/s delivered to one subscriber (the slowest)", slowest, 1),
        (f"events/s delivered, all {n} subscribers", total, n),
    ):
        baseline = with_rps * factor if with_rps is not None else None
        rows.append(
            Row(
                scenario,
                metric,
                shown(value, "{:,.0f}"),
                "claims/s in that run" + (f" x {factor}" if factor > 1 else ""),
                shown(baseline, "{:,.0f}"),
                f"{100 * value / baseline:.0f}% of baseline" if value and baseline else "",
            )
        )
    p = figures.probe
    how = f"open loop {profile.probe_rate}/s, {n} subscribers"
    for label, percentile in (("p50", 50.0), ("p99", 99.0), ("max", None)):
        e = p.ms("events", percentile) if p else None
        r = p.ms("replies", percentile) if p else None
        rows.append(
            Row(
                scenario,
                f"claim-to-event latency {label}, {how}",
                shown(e, "{:.2f} ms"),
                "claim reply latency, same claims",
                shown(r, "{:.2f} ms"),
                times(e, r),
            )
        )
    seen = figures.subscribers > 0
    lost = p.missing if p else 0
    rows.append(
        Row(
            scenario,
            f"seq gaps / duplicates / closed / probe events missing, {figures.subscribers} "
            "subscriber connections",
            f"{figures.gaps} / {figures.duplicates} / {len(figures.closed)} / {lost}"
            if seen
            else MISSING,
            "",
            "",
            "",
            "0 / 0 / 0 / 0",
            verdict(
                None
                if not seen
                else not (figures.gaps or figures.duplicates or figures.closed or lost)
            ),
        )
    )
    return rows


# ---------------------------------------------------------------------------------------------
# On its own: `python -m bench.campaigns [--quick] [--only rewards|events]`.


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.campaigns", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs, about a minute")
    parser.add_argument("--only", choices=("rewards", "events"), help="one scenario only")
    standalone.common_options(parser)
    parser.add_argument(
        "--rate-bound",
        type=float,
        default=20_000.0,
        help="claims/s the server will not exceed; sizes the lists (default 20,000)",
    )
    args = parser.parse_args(argv)
    profile = (Profile.quick if args.quick else Profile.full)(args.module)
    command = "python -m bench.campaigns"
    work_dir = standalone.prepare(command, args.work_dir)
    load_before = report.busy_neighbours()
    notes: list[str] = []
    rewards, events = RewardFigures(), EventFigures()
    fleet = Fleet()
    steps: list[standalone.Step] = []
    if args.only != "events":
        steps.append(
            (
                "voucherd: campaign rewards beside direct claims",
                lambda: rewards_side(fleet, profile, work_dir, args.rate_bound, notes, rewards),
            )
        )
    if args.only != "rewards":
        steps.append(
            (
                "voucherd: events to WebSocket subscribers",
                lambda: events_side(fleet, profile, work_dir, args.rate_bound, notes, events),
            )
        )
    standalone.run_steps(steps, notes, fleet)

    table = []
    if args.only != "events":
        table += reward_rows(profile, rewards)
    if args.only != "rewards":
        table += event_rows(profile, events)
    standalone.finish(command, argv, load_before, table, notes, work_dir, args.markdown_out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
