"""Crash loop: voucherd under mixed load, killed with SIGKILL at random moments, restarted on the
same data directory, and checked after every round against what its clients were told.

A round:

1. The server is up. A new campaign is created (two lists in fallback order, the first one kept
   short of codes; a limit per user and one in all); three WebSocket subscribers connect to
   `/v1/events` (live JSON, JSON from a recent `since`, msgpack filtered by type) and record
   every frame.
2. Mixed load runs for a random moment (a few ms to ~1.2 s): single claims (fresh users, one
   user with many idempotency keys, metadata, the same claim twice at once, repeats of earlier
   claims), batch claims (with a user twice, and a repeat), rewards (keyed and keyless, twice at
   once, the previous round's campaign too), reward batches, small uploads that complete, one
   larger upload streamed in pieces (its last piece held back until the kill in half the
   rounds, so that it is surely cut off), pause/activate of two lists, and the withdrawal of an
   earlier upload.
3. SIGKILL. Requests in flight get connection errors: they are neither acknowledged nor refused,
   and the checks allow them to have taken effect or not (if they did, consistently).
4. Restart on the same data directory (in one round in ten it is first killed again while it
   recovers).
5. Every invariant is checked against the server (`Checker.check`):
   - every acknowledged (2xx) claim and reward is returned again, unchanged, by a repeat request
     (the same user and key) with 200, and is in its user's voucher tray;
   - no code is given twice, across all lists and rounds (by the clients' own records, and by
     the server's event stream);
   - per list: uploaded = available + distributed + withdrawn; distributed is the number of
     claims the server holds for it; uploaded is the codes of its completed uploads; withdrawn
     is the codes of its withdrawn uploads that no claim names, as the withdrawal answered;
   - per campaign: rewards.issued ≤ max_codes_per_campaign, no user above max_codes_per_user,
     issued is the number of its rewards the server holds, each from one of its lists;
   - the event stream: seq runs 1..last without a gap; events verified after an earlier restart
     are unchanged; each claim the server holds has exactly one voucher.rewarded event with its
     code, user, list and campaign (and its message), and each such event a claim; each event a
     subscriber got before the kill is exactly the event with that seq after the restart, and
     each subscriber got every event it asked for, in order; each upload has exactly one
     upload.completed or upload.failed event; list.status_changed events chain up to each
     list's status, which is the one last acknowledged (or the one in flight at the kill);
   - an upload cut off by the kill is `failed` (interrupted) after the restart, and none of its
     codes is available or handed out; an upload acknowledged `completed` stays so with all its
     codes; no upload appears that no client sent;
   - no claim from nowhere: each claim held names a user who asked, and no more claims per
     (list, user) or (campaign, user) than the keys that user tried; a fresh user refused with
     409 holds nothing there;
   - the server logged no traceback and no error (recovery logs one if its pool of codes and
     its counts disagree).

Rounds accumulate on one data directory, and the checks cover everything acknowledged in all
rounds: each round checks the whole event stream, every list, upload and campaign, and every
acknowledgement against the stream; it repeats this round's claims and rewards and asks for this
round's users' trays, and does the same for a sample of older ones. After the last round every
list is drained (what is left must be exactly the codes of completed uploads that nobody
holds), the server is killed once more, and every claim and reward acknowledged in the whole run
is repeated.

Runs:

    pytest tests/test_crash_loop.py                               # CI: 20 rounds, about 1 min
    VOUCHERD_CRASH_ROUNDS=500 pytest tests/test_crash_loop.py -s  # long manual run (~30 min)
    VOUCHERD_CRASH_SEED=1234 pytest tests/test_crash_loop.py -s   # replay a seed
    python tests/crash_loop.py --rounds 500 [--seed N] [--data-dir DIR]
    python -m tests.crash_loop --rounds 500                       # from the repository root

The seed (printed first, and named by any failure) drives every choice: kill moments, the mix
of requests, sizes. The interleaving with the server still varies from run to run, so a seed
replays the same kind of round, not the same instant. A failure also names the round, the data
directory (kept: pytest keeps its tmp_path; the command line keeps the directory when a check
fails) and the server's log, whose last lines it quotes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiohttp
import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import FUTURE, ServerProcess

Json = dict[str, Any]
T = TypeVar("T")

DEFAULT_ROUNDS = 20
ROUNDS_ENV = "VOUCHERD_CRASH_ROUNDS"
SEED_ENV = "VOUCHERD_CRASH_SEED"

TEMPLATE = "Hi {{ Profile.user_id }}, your code is {{ Event.voucherCode }}"
CLAIM_REFUSALS = frozenset({"list_paused", "list_exhausted"})
REWARD_REASONS = frozenset(
    {"user_limit_reached", "campaign_limit_reached", "out_of_codes", "not_qualified"}
)
FILTERED_TYPES = ("voucher.rewarded", "list.status_changed")
# How many older acknowledged claims, rewards and users each round checks again besides its
# own; after the last round every claim and reward is repeated, and ten times as many trays
# are read.
SAMPLE = 150
# The server's upload chunk: small, so a streamed upload has stored some chunks when killed.
SERVER_ENV = {"VOUCHERD_UPLOAD_CHUNK_CODES": "1000"}


class Violation(AssertionError):
    """An invariant does not hold."""


# -- what clients were told ----------------------------------------------------------------------


@dataclass
class UploadRecord:
    """An upload sent; its codes are `prefix` and six digits, counting from 0, so a code names
    its upload and none need be kept."""

    filename: str
    list_id: int
    prefix: str
    count: int
    big: bool = False
    # sent (no answer yet), completed, failed, withdrawn, absent (never recorded by the server)
    state: str = "sent"
    upload_id: int | None = None
    # A streamed upload whose body had not all been sent when the server was killed.
    cut_off: bool = False
    withdraw_sent: bool = False
    withdrawn_reply: int | None = None

    def codes(self, start: int = 0, stop: int | None = None) -> list[str]:
        stop = self.count if stop is None else min(stop, self.count)
        return [f"{self.prefix}{i:06d}" for i in range(start, stop)]

    def csv(self, start: int = 0, stop: int | None = None) -> bytes:
        return "".join(f"{code}\n" for code in self.codes(start, stop)).encode()

    def owns(self, code: str) -> bool:
        index = code[-6:]
        return prefix_of(code) == self.prefix and index.isdigit() and int(index) < self.count


def prefix_of(code: str) -> str:
    """The prefix of the upload a code of the crash loop belongs to."""
    return code[:-6]


@dataclass
class CampaignRecord:
    id: int
    lists: tuple[int, ...]
    per_user: int
    cap: int


@dataclass
class StatusRecord:
    """A toggled list: its status as last acknowledged, and a transition sent but unanswered."""

    status: str = "active"
    in_flight: str | None = None


class Ack(NamedTuple):
    """An acknowledged claim or reward: its code and list, and the whole answer as canonical
    JSON (compact, for runs of many rounds)."""

    code: str
    list_id: int
    view: str


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _ack(view: Json) -> Ack:
    return Ack(view["code"], view["list_id"], _canonical(view))


def _same(view: Any, ack: Ack) -> bool:
    return isinstance(view, dict) and _canonical(view) == ack.view


@dataclass(frozen=True)
class Held:
    """A claim the server holds, as its voucher.rewarded event shows it."""

    code: str
    user: str
    list_id: int
    campaign_id: int | None
    seq: int


@dataclass
class Subscriber:
    name: str
    since: int | None
    types: tuple[str, ...] | None
    binary: bool
    received: list[Json] = field(default_factory=list)
    error: str | None = None


@dataclass
class Stream:
    """What the checks need of the event stream, gathered in one pass over its pages."""

    # The seqs subscribers got, and those events as the stream has them now.
    wanted: set[int]
    by_seq: dict[int, Json] = field(default_factory=dict)
    digests: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    codes: dict[str, Held] = field(default_factory=dict)
    # (type, upload id) -> upload.completed / upload.failed events
    finished: Counter[tuple[str, int]] = field(default_factory=Counter)
    # list id -> (seq, previous status, status) of its list.status_changed events
    status_changes: dict[int, list[tuple[int, str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )


def _digest(event: Json) -> int:
    """A digest of an event, for comparisons within this process: fast, for streams of
    hundreds of thousands of events."""
    try:
        return hash(
            (
                tuple(sorted((k, v) for k, v in event.items() if k != "data")),
                tuple(sorted(event["data"].items())),
            )
        )
    except (TypeError, AttributeError):  # nested values: not hashable as they are
        return hash(_canonical(event))


@dataclass
class Ledger:
    """Everything the clients were told, over all rounds."""

    lists: dict[str, int] = field(default_factory=dict)
    # (list, user, key) -> the claim as acknowledged; (campaign, user, key) -> the reward.
    claims: dict[tuple[int, str, str], Ack] = field(default_factory=dict)
    # The same claims in a list, and the users of keyless ones per list: to pick repeats from.
    claim_order: list[tuple[int, str, str]] = field(default_factory=list)
    keyless: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    rewards: dict[tuple[int, str, str], Ack] = field(default_factory=dict)
    # Keys tried per (list, user) and per (campaign, user), answered or not.
    claim_keys: dict[tuple[int, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    reward_keys: dict[tuple[int, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    # Fresh users refused with 409 on a list: they must hold nothing there.
    refused: set[tuple[int, str]] = field(default_factory=set)
    uploads: dict[str, UploadRecord] = field(default_factory=dict)
    campaigns: dict[int, CampaignRecord] = field(default_factory=dict)
    statuses: dict[int, StatusRecord] = field(default_factory=dict)
    # The event stream as verified after the last restart: a digest of each event, and the
    # claims its reward events show.
    digests: list[int] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    # Acknowledgements of the current round, checked in full after its restart.
    new_claims: set[tuple[int, str, str]] = field(default_factory=set)
    new_rewards: set[tuple[int, str, str]] = field(default_factory=set)
    new_users: set[str] = field(default_factory=set)
    # Claims made by the final drain: checked in full against the stream, repeated by sample.
    bulk: set[tuple[int, str, str]] = field(default_factory=set)
    # Codes available per list at the last check.
    available: dict[int, int] = field(default_factory=dict)
    # Claims and rewards the server holds that no client was told of (in flight at a kill).
    unanswered: int = 0

    def users(self) -> set[str]:
        return {user for _, user in self.claim_keys} | {user for _, user in self.reward_keys}


# -- the load --------------------------------------------------------------------------------------


class Round:
    """One round of load against a running server, until it is killed."""

    def __init__(
        self,
        number: int,
        seed: int,
        ledger: Ledger,
        server: ServerProcess,
        campaign: CampaignRecord,
        previous_campaign: CampaignRecord | None,
    ) -> None:
        self.number = number
        self.seed = seed
        self.ledger = ledger
        self.server = server
        self.campaign = campaign
        self.previous_campaign = previous_campaign
        self.rng = self.rng_for("round")
        self.killing = False
        self.killed = asyncio.Event()
        self.unexpected: list[str] = []
        self.subscribers: list[Subscriber] = []
        self.counts: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None

    def rng_for(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{self.number}:{name}")

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None
        return self._session

    def surprise(self, what: str) -> None:
        self.unexpected.append(f"round {self.number}: {what}")

    async def call(
        self,
        method: str,
        path: str,
        body: Json | None = None,
        *,
        data: Any = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Json] | None:
        """The answer, or None when the server went away with the request in flight."""
        headers = {"Content-Type": "text/csv"} if data is not None else None
        try:
            async with self.session.request(
                method, path, json=body, data=data, params=params, headers=headers
            ) as response:
                reply: Json = await response.json()
                return response.status, reply
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not self.killing:
                self.surprise(f"{method} {path} failed before the kill: {exc!r}")
            self.counts["in flight at the kill"] += 1
            return None

    async def run(self, kill_after: float) -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            base_url=self.server.url, timeout=timeout, connector=connector
        ) as session:
            self._session = session
            last = len(self.ledger.digests)
            since = max(0, last - self.rng.randint(0, 300))
            self.subscribers = [
                Subscriber("live", None, None, binary=False),
                Subscriber(f"since={since}", since, None, binary=False),
                Subscriber("msgpack-filtered", None, FILTERED_TYPES, binary=True),
            ]
            connected = [asyncio.Event() for _ in self.subscribers]
            listening = [
                asyncio.create_task(self.subscribe(subscriber, ready))
                for subscriber, ready in zip(self.subscribers, connected, strict=True)
            ]
            for ready in connected:
                await asyncio.wait_for(ready.wait(), 30)
            workers: list[Awaitable[None]] = [
                *(self.claims(f"claims-{n}") for n in range(10)),
                *(self.batches(f"batches-{n}") for n in range(2)),
                *(self.rewards(f"rewards-{n}") for n in range(4)),
                self.reward_batches("reward-batches"),
                self.uploads("uploads"),
                self.toggle(),
                self.withdraw(),
            ]
            if self.rng.random() < 0.8:
                workers.append(self.big_upload(hold_back=self.rng.random() < 0.5))
            tasks = [asyncio.ensure_future(worker) for worker in workers]
            await asyncio.sleep(kill_after)
            self.killing = True
            self.server.kill()
            self.killed.set()
            done, stuck = await asyncio.wait([*tasks, *listening], timeout=60)
            for task in stuck:
                task.cancel()
            if stuck:
                self.surprise(f"{len(stuck)} clients still waiting 60 s after the kill")
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
        self._session = None

    # Each worker loops until the server goes away (its call returns None).

    def claim_target(self, rng: random.Random) -> int:
        lists = self.ledger.lists
        return rng.choice([lists["a"], lists["a"], lists["b"], lists["c2"]])

    async def claims(self, name: str) -> None:
        rng = self.rng_for(name)
        keyed_user = f"r{self.number}-{name}-keyed"
        n = 0
        while True:
            n += 1
            list_id = self.claim_target(rng)
            mode = rng.random()
            metadata = {"n": n, "worker": name} if rng.random() < 0.3 else None
            if mode < 0.45:
                user, key, fresh = f"r{self.number}-{name}-{n}", "", True
            elif mode < 0.75:
                user, key, fresh = keyed_user, f"k{n}", False
            elif mode < 0.9:
                # The same claim twice at once: one code, created once.
                user, key = f"r{self.number}-{name}-{n}-twice", rng.choice(["", f"k{n}"])
                if not await self.claim_twice(list_id, user, key):
                    return
                continue
            else:
                # A repeat of a claim acknowledged earlier, in this round or before.
                if not self.ledger.claim_order:
                    continue
                list_id, user, key = rng.choice(self.ledger.claim_order)
                fresh = False
            if not await self.claim(list_id, user, key, metadata, fresh=fresh):
                return

    def claim_body(self, user: str, key: str, metadata: Json | None = None) -> Json:
        body: Json = {"user_id": user}
        if key or self.rng.random() < 0.5:
            body["idempotency_key"] = key
        if metadata is not None:
            body["metadata"] = metadata
        return body

    async def claim(
        self, list_id: int, user: str, key: str, metadata: Json | None, *, fresh: bool
    ) -> bool:
        self.ledger.claim_keys[(list_id, user)].add(key)
        self.ledger.new_users.add(user)
        known = (list_id, user, key) in self.ledger.claims
        answer = await self.call(
            "POST", f"/v1/lists/{list_id}/claims", self.claim_body(user, key, metadata)
        )
        if answer is None:
            return False
        self.take_claim_answer(list_id, user, key, *answer, fresh=fresh, known=known)
        return True

    async def claim_twice(self, list_id: int, user: str, key: str) -> bool:
        self.ledger.claim_keys[(list_id, user)].add(key)
        self.ledger.new_users.add(user)
        path, body = f"/v1/lists/{list_id}/claims", self.claim_body(user, key)
        answers = await asyncio.gather(self.call("POST", path, body), self.call("POST", path, body))
        for answer in answers:
            if answer is not None:
                self.take_claim_answer(list_id, user, key, *answer, fresh=False, known=False)
        made = [status for status, _ in filter(None, answers)]
        if made.count(201) > 1:
            self.surprise(f"claim ({list_id}, {user!r}, {key!r}) sent twice was created twice")
        return None not in answers

    def take_claim_answer(
        self,
        list_id: int,
        user: str,
        key: str,
        status: int,
        reply: Json,
        *,
        fresh: bool,
        known: bool,
    ) -> None:
        """`known`: the claim had been acknowledged before this request was sent."""
        who = f"claim ({list_id}, {user!r}, {key!r})"
        if status in (200, 201):
            claim = reply.get("claim", {})
            if (claim.get("list_id"), claim.get("user_id"), claim.get("idempotency_key")) != (
                list_id,
                user,
                key,
            ):
                self.surprise(f"{who} answered with another claim: {reply}")
                return
            self.acknowledge_claim((list_id, user, key), claim, again=known and status == 201)
        elif status == 409 and reply.get("error", {}).get("code") in CLAIM_REFUSALS:
            self.counts["claims refused"] += 1
            if fresh:
                self.ledger.refused.add((list_id, user))
        else:
            self.surprise(f"{who}: unexpected {status} {reply}")

    def acknowledge_claim(self, ident: tuple[int, str, str], claim: Json, *, again: bool) -> None:
        """`again`: a 201 for a claim acknowledged before the request was sent."""
        known = self.ledger.claims.get(ident)
        if known is not None and not _same(claim, known):
            self.surprise(f"claim {ident} answered {claim} after {known.view}")
            return
        if again:
            self.surprise(f"claim {ident} created again: {claim}")
        if known is None:
            self.ledger.claims[ident] = _ack(claim)
            self.ledger.claim_order.append(ident)
            if not ident[2]:
                self.ledger.keyless[ident[0]].append(ident[1])
            self.ledger.new_claims.add(ident)
            self.counts["claims"] += 1

    async def batches(self, name: str) -> None:
        rng = self.rng_for(name)
        n = 0
        while True:
            n += 1
            list_id = self.claim_target(rng)
            users = [f"r{self.number}-{name}-{n}-{m}" for m in range(rng.randint(2, 8))]
            fresh = set(users)
            if rng.random() < 0.3:
                users.append(users[0])  # a user twice in one batch gets one claim
            earlier = self.ledger.keyless[list_id]
            if earlier and rng.random() < 0.3:
                users.append(rng.choice(earlier))  # a repeat within a batch
            for user in users:
                self.ledger.claim_keys[(list_id, user)].add("")
                self.ledger.new_users.add(user)
            answer = await self.call(
                "POST", f"/v1/lists/{list_id}/claims/batch", {"user_ids": users}
            )
            if answer is None:
                return
            status, reply = answer
            if status != 200:
                self.surprise(f"batch claim on {list_id}: unexpected {status} {reply}")
                continue
            answered = [c.get("user_id") for c in reply["claims"]]
            answered += [f.get("user_id") for f in reply["failed"]]
            if sorted(answered) != sorted(set(users)):
                self.surprise(f"batch claim for {users} answered for {answered}")
            for claim in reply["claims"]:
                user = claim["user_id"]
                if claim["list_id"] != list_id or claim["idempotency_key"] != "":
                    self.surprise(f"batch claim on {list_id} answered with {claim}")
                    continue
                self.acknowledge_claim((list_id, user, ""), claim, again=False)
            for failure in reply["failed"]:
                if failure["error"]["code"] not in CLAIM_REFUSALS:
                    self.surprise(f"batch claim on {list_id}: unexpected failure {failure}")
                elif failure["user_id"] in fresh:
                    self.counts["claims refused"] += 1
                    self.ledger.refused.add((list_id, failure["user_id"]))

    def reward_campaign(self, rng: random.Random) -> CampaignRecord:
        if self.previous_campaign is not None and rng.random() < 0.2:
            return self.previous_campaign
        return self.campaign

    async def rewards(self, name: str) -> None:
        rng = self.rng_for(name)
        while True:
            campaign = self.reward_campaign(rng)
            user = f"c{campaign.id}-p{rng.randrange(20)}"
            key = rng.choice(["", "a", "b", "c"])
            # Now and then, the same reward twice at once.
            calls = 2 if rng.random() < 0.15 else 1
            self.ledger.reward_keys[(campaign.id, user)].add(key)
            self.ledger.new_users.add(user)
            known = (campaign.id, user, key) in self.ledger.rewards
            body: Json = {"user_id": user, "idempotency_key": key}
            if rng.random() < 0.3:
                body["event"] = {"name": "Charged", "properties": {"amount": rng.randint(1, 500)}}
            path = f"/v1/campaigns/{campaign.id}/rewards"
            answers = await asyncio.gather(*(self.call("POST", path, body) for _ in range(calls)))
            for answer in answers:
                if answer is not None:
                    self.take_reward_answer(campaign, user, key, *answer, known=known)
            if sum(1 for answer in answers if answer is not None and answer[0] == 201) > 1:
                self.surprise(f"reward ({campaign.id}, {user!r}, {key!r}) given twice at once")
            if None in answers:
                return

    def take_reward_answer(
        self,
        campaign: CampaignRecord,
        user: str,
        key: str,
        status: int,
        reply: Json,
        *,
        known: bool,
    ) -> None:
        """`known`: the reward had been acknowledged before this request was sent."""
        who = f"reward ({campaign.id}, {user!r}, {key!r})"
        if status in (200, 201) and reply.get("rewarded") is True:
            reward = reply["reward"]
            if (reward.get("campaign_id"), reward.get("user_id")) != (campaign.id, user):
                self.surprise(f"{who} answered with another reward: {reply}")
                return
            self.acknowledge_reward((campaign.id, user, key), reward, again=known and status == 201)
        elif status == 200 and reply.get("rewarded") is False:
            if reply.get("reason") not in REWARD_REASONS:
                self.surprise(f"{who}: unexpected refusal {reply}")
            self.counts["rewards refused"] += 1
        else:
            self.surprise(f"{who}: unexpected {status} {reply}")

    def acknowledge_reward(self, ident: tuple[int, str, str], reward: Json, *, again: bool) -> None:
        """`again`: a 201 for a reward acknowledged before the request was sent."""
        known = self.ledger.rewards.get(ident)
        if known is not None and not _same(reward, known):
            self.surprise(f"reward {ident} answered {reward} after {known.view}")
            return
        if again:
            self.surprise(f"reward {ident} created again: {reward}")
        message = f"Hi {ident[1]}, your code is {reward.get('code')}"
        if reward.get("message") != message:
            self.surprise(f"reward {ident}'s message is {reward.get('message')!r}")
        if known is None:
            self.ledger.rewards[ident] = _ack(reward)
            self.ledger.new_rewards.add(ident)
            self.counts["rewards"] += 1

    async def reward_batches(self, name: str) -> None:
        rng = self.rng_for(name)
        n = 0
        while True:
            n += 1
            campaign = self.reward_campaign(rng)
            users = [f"c{campaign.id}-p{rng.randrange(20)}" for _ in range(rng.randint(1, 4))]
            users += [f"c{campaign.id}-b{n}-{m}" for m in range(rng.randint(0, 3))]
            for user in users:
                self.ledger.reward_keys[(campaign.id, user)].add("")
                self.ledger.new_users.add(user)
            answer = await self.call(
                "POST", f"/v1/campaigns/{campaign.id}/rewards/batch", {"user_ids": users}
            )
            if answer is None:
                return
            status, reply = answer
            if status != 200:
                self.surprise(f"reward batch: unexpected {status} {reply}")
                continue
            results = reply["results"]
            if [r["user_id"] for r in results] != list(dict.fromkeys(users)):
                self.surprise(f"reward batch for {users} answered {results}")
            for result in results:
                if "error" in result:
                    self.surprise(f"reward batch: unexpected error {result}")
                    continue
                self.take_reward_answer(campaign, result["user_id"], "", 200, result, known=False)

    async def uploads(self, name: str) -> None:
        rng = self.rng_for(name)
        lists = self.ledger.lists
        n = 0
        while True:
            n += 1
            role = rng.choice(["a", "a", "b", "c1", "c2"])
            count = rng.randint(5, 40) if role == "c1" else rng.randint(50, 300)
            if self.ledger.available.get(lists[role], 0) > 4000:
                count = rng.randint(5, 20)  # plenty left: top up a little
            filename = f"r{self.number}-{name}-{n}.csv"
            record = UploadRecord(filename, lists[role], f"R{self.number}-{name}-{n}-", count)
            if not await self.upload(record, record.csv()):
                return
            await asyncio.sleep(rng.uniform(0.02, 0.1))

    async def upload(self, record: UploadRecord, data: Any) -> bool:
        self.ledger.uploads[record.filename] = record
        answer = await self.call(
            "POST",
            f"/v1/lists/{record.list_id}/uploads",
            data=data,
            params={"filename": record.filename},
        )
        if answer is None:
            return False
        status, reply = answer
        if status != 201 or reply.get("status") != "completed":
            self.surprise(f"upload {record.filename}: unexpected {status} {reply}")
            return True
        if (reply["filename"], reply["accepted"], reply["rejected"]) != (
            record.filename,
            record.count,
            0,
        ):
            self.surprise(f"upload {record.filename} of {record.count} codes: {reply}")
        record.state, record.upload_id = "completed", reply["id"]
        self.counts["uploads"] += 1
        return True

    async def big_upload(self, *, hold_back: bool) -> None:
        rng = self.rng_for("big-upload")
        count = rng.randint(2000, 8000)
        filename = f"r{self.number}-big.csv"
        lists = self.ledger.lists
        record = UploadRecord(filename, lists["b"], f"R{self.number}-big-", count, big=True)
        record.cut_off = True
        piece = 500

        async def body() -> AsyncIterator[bytes]:
            for start in range(0, count, piece):
                if hold_back and start + piece >= count:
                    # The last piece waits for the kill: the upload is surely cut off.
                    await self.killed.wait()
                yield record.csv(start, start + piece)
                await asyncio.sleep(rng.uniform(0, 0.01))
            # Resumed after the last piece: only now can the body's end be sent.
            if not self.killing:
                record.cut_off = False

        await self.upload(record, body())

    async def toggle(self) -> None:
        rng = self.rng_for("toggle")
        lists = [self.ledger.lists["b"], self.ledger.lists["c1"]]
        while True:
            list_id = rng.choice(lists)
            known = self.ledger.statuses[list_id]
            action, target = (
                ("pause", "paused") if known.status == "active" else ("activate", "active")
            )
            known.in_flight = target
            answer = await self.call("POST", f"/v1/lists/{list_id}/{action}", {})
            if answer is None:
                return
            status, reply = answer
            known.in_flight = None
            if status != 200 or reply.get("status") != target:
                self.surprise(f"{action} list {list_id}: unexpected {status} {reply}")
                return
            known.status = target
            self.counts["status changes"] += 1
            await asyncio.sleep(rng.uniform(0.01, 0.1))

    async def withdraw(self) -> None:
        rng = self.rng_for("withdraw")
        lists = {self.ledger.lists[role] for role in ("a", "b", "c2")}
        candidates = [
            record
            for record in self.ledger.uploads.values()
            if record.state == "completed" and record.list_id in lists
        ]
        if not candidates or rng.random() < 0.4:
            return
        # Large uploads that completed are withdrawn more often: the lists stay small.
        big = [record for record in candidates if record.big]
        record = rng.choice(big if big and rng.random() < 0.6 else candidates)
        await asyncio.sleep(rng.uniform(0, 0.5))
        record.withdraw_sent = True
        answer = await self.call("DELETE", f"/v1/lists/{record.list_id}/uploads/{record.upload_id}")
        if answer is None:
            return
        status, reply = answer
        if status != 200 or not isinstance(reply.get("withdrawn"), int):
            self.surprise(f"withdraw {record.filename}: unexpected {status} {reply}")
            return
        record.state, record.withdrawn_reply = "withdrawn", reply["withdrawn"]
        self.counts["withdrawals"] += 1

    async def subscribe(self, subscriber: Subscriber, connected: asyncio.Event) -> None:
        params = {"format": "msgpack" if subscriber.binary else "json"}
        if subscriber.since is not None:
            params["since"] = str(subscriber.since)
        if subscriber.types is not None:
            params["types"] = ",".join(subscriber.types)
        try:
            async with self.session.ws_connect("/v1/events", params=params) as ws:
                connected.set()
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.TEXT and not subscriber.binary:
                        subscriber.received.append(json.loads(message.data))
                    elif message.type is aiohttp.WSMsgType.BINARY and subscriber.binary:
                        subscriber.received.append(msgpack.unpackb(message.data))
                    elif message.type is aiohttp.WSMsgType.ERROR:
                        break  # the connection broke: the server is gone, or a fault below
                    else:
                        subscriber.error = f"unexpected frame {message.type} {message.data!r}"
                        break
                if not self.killing and subscriber.error is None:
                    subscriber.error = f"closed before the kill: {ws.close_code} {ws.exception()!r}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not self.killing:
                subscriber.error = f"failed before the kill: {exc!r}"
        finally:
            connected.set()


# -- the checks ----------------------------------------------------------------------------------


class Checker:
    """Checks a restarted server against the ledger; collects every violation found."""

    def __init__(self, session: aiohttp.ClientSession, ledger: Ledger, rng: random.Random):
        self.session = session
        self.ledger = ledger
        self.rng = rng
        self.violations: list[str] = []
        self._limit = asyncio.Semaphore(32)

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            self.violations.append(message)

    async def call(self, method: str, path: str, body: Json | None = None) -> tuple[int, Json]:
        async with (
            self._limit,
            self.session.request(method, path, json=body) as response,
        ):
            reply: Json = await response.json()
            return response.status, reply

    async def get(self, path: str) -> Json:
        status, reply = await self.call("GET", path)
        if status != 200:
            raise Violation(f"GET {path}: {status} {reply}")
        return reply

    async def gather(self, calls: Iterable[Awaitable[T]]) -> list[T]:
        return list(await asyncio.gather(*calls))

    async def check(self, *, everything: bool, subscribers: Iterable[Subscriber] = ()) -> None:
        ledger = self.ledger
        subscribers = list(subscribers)
        stream = await self.read_stream(subscribers)
        for subscriber in subscribers:
            self.check_subscriber(subscriber, stream)
        held = stream.held
        by_code = {h.code: h for h in held}
        lists = {
            list_id: await self.get(f"/v1/lists/{list_id}") for list_id in ledger.lists.values()
        }
        uploads = {
            list_id: (await self.get(f"/v1/lists/{list_id}/uploads"))["uploads"]
            for list_id in ledger.lists.values()
        }
        self.check_acknowledged_codes(by_code)
        held_by_upload = Counter(prefix_of(h.code) for h in held)
        self.check_uploads(uploads, stream.finished, held_by_upload)
        self.check_lists(lists, held, held_by_upload)
        self.check_statuses(lists, stream.status_changes)
        await self.check_campaigns(held)
        self.check_claimants(held)
        await self.check_repeats(everything=everything)
        await self.check_trays(held, everything=everything)
        if not self.violations:
            ledger.digests, ledger.held = stream.digests, held
            ledger.new_claims.clear()
            ledger.new_rewards.clear()
            ledger.new_users.clear()

    # The stream.

    async def read_stream(self, subscribers: list[Subscriber]) -> Stream:
        """Every event, page by page, checked and summed up as it goes by: the whole stream
        is never held, only a digest of each event."""
        stream = Stream(wanted={event["seq"] for s in subscribers for event in s.received})
        since = 0
        while True:
            page = await self.get(f"/v1/events?since={since}&limit=10000")
            if not page["events"]:
                break
            for event in page["events"]:
                self.take_event(stream, event)
            since = page["last_seq"]
        known = self.ledger.digests
        if len(stream.digests) < len(known):
            self.violations.append(
                f"events verified after an earlier restart were lost: {len(known)} then,"
                f" {len(stream.digests)} now"
            )
        return stream

    def take_event(self, stream: Stream, event: Json) -> None:
        seq = event["seq"]
        if seq != len(stream.digests) + 1:
            self.violations.append(
                f"event {seq} follows event {len(stream.digests)}: the stream has a gap or"
                " goes back"
            )
            raise Violation("\n".join(self.violations))
        digest = _digest(event)
        stream.digests.append(digest)
        stream.types.append(sys.intern(event["type"]))
        known = self.ledger.digests
        if seq <= len(known) and known[seq - 1] != digest:
            self.violations.append(
                f"event {seq}, verified after an earlier restart, has changed: now {event}"
            )
        if seq in stream.wanted:
            stream.by_seq[seq] = event
        data = event["data"]
        if event["type"] == "voucher.rewarded":
            self.take_reward_event(stream, event)
        elif event["type"] in ("upload.completed", "upload.failed"):
            stream.finished[(event["type"], data["upload_id"])] += 1
        elif event["type"] == "list.status_changed":
            change = (seq, data["previous_status"], data["status"])
            stream.status_changes[data["list_id"]].append(change)

    def take_reward_event(self, stream: Stream, event: Json) -> None:
        data = event["data"]
        code = data["voucherCode"]
        claim = Held(
            code,
            data["userId"],
            data["voucherListId"],
            data["campaignId"],
            event["seq"],
        )
        earlier = stream.codes.get(claim.code)
        if earlier is not None:
            self.violations.append(f"code {claim.code} given twice: events {earlier} and {claim}")
        stream.codes[claim.code] = claim
        stream.held.append(claim)
        # (Checked with plain ifs in the loops over everything: no message is made unless due.)
        source = "API" if claim.campaign_id is None else "Campaign"
        if event["name"] != "CT Partner Voucher Rewarded" or data["source"] != source:
            self.violations.append(f"reward event {event['seq']} is misnamed: {event}")
        message = None if claim.campaign_id is None else f"Hi {claim.user}, your code is {code}"
        if data["message"] != message:
            self.violations.append(f"event {event['seq']}'s message is not {message!r}: {event}")

    def check_subscriber(self, subscriber: Subscriber, stream: Stream) -> None:
        who = f"subscriber {subscriber.name}"
        self.expect(subscriber.error is None, f"{who}: {subscriber.error}")
        got = subscriber.received
        if not got:
            return
        seqs = [event["seq"] for event in got]
        for event in got:
            seq = event["seq"]
            now = stream.by_seq.get(seq)
            if now is None:
                self.violations.append(
                    f"{who} got event {seq}, which is not in the stream: {event}"
                )
            elif now != event:
                self.violations.append(
                    f"{who} got {event} but after the restart event {seq} is {now}"
                )
        if subscriber.types is None:
            first = seqs[0] if subscriber.since is None else subscriber.since + 1
            expected = list(range(first, first + len(seqs)))
        else:
            types = stream.types[seqs[0] - 1 : seqs[-1]]
            expected = [
                seq for seq, kind in enumerate(types, start=seqs[0]) if kind in subscriber.types
            ]
        self.expect(
            seqs == expected,
            f"{who} got seqs {_ranges(seqs)}, expected {_ranges(expected)}",
        )

    # Claims and rewards.

    def check_acknowledged_codes(self, by_code: dict[str, Held]) -> None:
        """Every acknowledged code is held by the one it was given to, and by nobody else."""
        given: dict[str, object] = {}
        for (list_id, user, key), claim in self.ledger.claims.items():
            code = claim.code
            ident = ("claim", list_id, user, key)
            if code in given:
                self.violations.append(f"code {code} acknowledged to {given[code]} and {ident}")
            given[code] = ident
            found = by_code.get(code)
            if found is None or (found.user, found.list_id, found.campaign_id) != (
                user,
                list_id,
                None,
            ):
                self.violations.append(f"acknowledged {ident} with {code}: the server has {found}")
        for (campaign_id, user, key), reward in self.ledger.rewards.items():
            code = reward.code
            ident = ("reward", campaign_id, user, key)
            if code in given:
                self.violations.append(f"code {code} acknowledged to {given[code]} and {ident}")
            given[code] = ident
            found = by_code.get(code)
            if found is None or (found.user, found.list_id, found.campaign_id) != (
                user,
                reward.list_id,
                campaign_id,
            ):
                self.violations.append(f"acknowledged {ident} with {code}: the server has {found}")
            if reward.list_id not in self.ledger.campaigns[campaign_id].lists:
                self.violations.append(
                    f"reward {ident} from list {reward.list_id}, not one of its campaign's"
                )
        # Claims whose answer was lost with the server, but which it had made durable.
        self.ledger.unanswered = sum(1 for code in by_code if code not in given)

    async def check_repeats(self, *, everything: bool) -> None:
        """Acknowledged claims and rewards, asked for again: the same answer, with 200. This
        round's and a sample of older ones one request each; with `everything`, all the
        others too, the keyless ones in batches (a batch repeats each of its users' claims)."""
        ledger = self.ledger
        claims = _sample(ledger.claims, ledger.new_claims, self.rng)
        rewards = _sample(ledger.rewards, ledger.new_rewards, self.rng)
        if everything:
            keyed = {i for i in ledger.claims if i[2] and i not in ledger.bulk}
            claims = sorted(keyed | set(claims))
            keyed_rewards = {i for i in ledger.rewards if i[2]}
            rewards = sorted(keyed_rewards | set(rewards))
            await self.repeat_in_batches(
                set(ledger.claims) - set(claims), set(ledger.rewards) - set(rewards)
            )

        async def claim(ident: tuple[int, str, str]) -> None:
            list_id, user, key = ident
            status, reply = await self.call(
                "POST", f"/v1/lists/{list_id}/claims", {"user_id": user, "idempotency_key": key}
            )
            self.expect(
                status == 200 and _same(reply.get("claim"), ledger.claims[ident]),
                f"acknowledged claim {ident} was {ledger.claims[ident].view}; a repeat got"
                f" {status} {reply}",
            )

        async def reward(ident: tuple[int, str, str]) -> None:
            campaign_id, user, key = ident
            status, reply = await self.call(
                "POST",
                f"/v1/campaigns/{campaign_id}/rewards",
                {"user_id": user, "idempotency_key": key},
            )
            self.expect(
                status == 200
                and reply.get("rewarded") is True
                and _same(reply.get("reward"), ledger.rewards[ident]),
                f"acknowledged reward {ident} was {ledger.rewards[ident].view}; a repeat got"
                f" {status} {reply}",
            )

        await self.gather([*map(claim, claims), *map(reward, rewards)])

    async def repeat_in_batches(
        self, claims: set[tuple[int, str, str]], rewards: set[tuple[int, str, str]]
    ) -> None:
        ledger = self.ledger
        by_list: dict[int, list[str]] = defaultdict(list)
        for list_id, user, _ in sorted(claims):
            by_list[list_id].append(user)
        by_campaign: dict[int, list[str]] = defaultdict(list)
        for campaign_id, user, _ in sorted(rewards):
            by_campaign[campaign_id].append(user)

        async def claim_batch(list_id: int, users: list[str]) -> None:
            status, reply = await self.call(
                "POST", f"/v1/lists/{list_id}/claims/batch", {"user_ids": users}
            )
            found = {claim["user_id"]: claim for claim in reply.get("claims", [])}
            if status != 200 or reply["failed"] or len(found) != len(users):
                self.violations.append(
                    f"a batch repeating {len(users)} claims on list {list_id} got {status}:"
                    f" {len(found)} claims, failed {reply.get('failed', [])[:5]}"
                )
            for user in users:
                known = ledger.claims[(list_id, user, "")]
                if not _same(found.get(user), known):
                    self.violations.append(
                        f"acknowledged claim {(list_id, user, '')} was {known.view}; a batch"
                        f" repeat got {found.get(user)}"
                    )

        async def reward_batch(campaign_id: int, users: list[str]) -> None:
            status, reply = await self.call(
                "POST", f"/v1/campaigns/{campaign_id}/rewards/batch", {"user_ids": users}
            )
            found = {result["user_id"]: result for result in reply.get("results", [])}
            if status != 200:
                self.violations.append(f"a batch repeating rewards got {status} {reply}")
            for user in users:
                known = ledger.rewards[(campaign_id, user, "")]
                result = found.get(user) or {}
                if result.get("rewarded") is not True or not _same(result.get("reward"), known):
                    self.violations.append(
                        f"acknowledged reward {(campaign_id, user, '')} was {known.view}; a batch"
                        f" repeat got {result}"
                    )

        step = 2000
        await self.gather(
            [
                *(
                    claim_batch(list_id, users[start : start + step])
                    for list_id, users in by_list.items()
                    for start in range(0, len(users), step)
                ),
                *(
                    reward_batch(campaign_id, users[start : start + step])
                    for campaign_id, users in by_campaign.items()
                    for start in range(0, len(users), step)
                ),
            ]
        )

    async def check_trays(self, held: list[Held], *, everything: bool) -> None:
        by_user: dict[str, set[tuple[str, int, int | None]]] = defaultdict(set)
        for h in held:
            by_user[h.user].add((h.code, h.list_id, h.campaign_id))
        users = self.ledger.users() | set(by_user)
        # One request per user: this round's users and a sample of the others (a larger one
        # at the end); each acknowledged claim was looked for in its tray after its own round.
        chosen = _sample(
            users, self.ledger.new_users, self.rng, size=SAMPLE * (10 if everything else 1)
        )

        async def tray(user: str) -> None:
            reply = await self.get(f"/v1/users/{user}/vouchers")
            found = [(v["code"], v["list_id"], v["campaign_id"]) for v in reply["vouchers"]]
            self.expect(
                len(found) == len(set(found)) and set(found) == by_user.get(user, set()),
                f"user {user!r} holds {sorted(found)} but the events say"
                f" {sorted(by_user.get(user, set()))}",
            )

        await self.gather(map(tray, chosen))

    def check_claimants(self, held: list[Held]) -> None:
        """No claim from nowhere: every claim names a user who asked, and no more of them than
        the keys that user tried; a fresh user refused holds nothing."""
        ledger = self.ledger
        claims: Counter[tuple[int, str]] = Counter()
        rewards: Counter[tuple[int, str]] = Counter()
        for h in held:
            if h.campaign_id is None:
                claims[(h.list_id, h.user)] += 1
            else:
                rewards[(h.campaign_id, h.user)] += 1
        for (list_id, user), count in claims.items():
            tried = len(ledger.claim_keys.get((list_id, user), ()))
            if count > tried:
                self.violations.append(
                    f"user {user!r} holds {count} claims on list {list_id} but tried {tried} keys"
                )
            if (list_id, user) in ledger.refused:
                self.violations.append(
                    f"user {user!r} was refused on list {list_id} but holds a claim there"
                )
        for (campaign_id, user), count in rewards.items():
            tried = len(ledger.reward_keys.get((campaign_id, user), ()))
            if count > tried:
                self.violations.append(
                    f"user {user!r} holds {count} rewards of campaign {campaign_id} but tried"
                    f" {tried} keys"
                )

    # Lists, uploads, statuses and campaigns.

    def check_uploads(
        self,
        uploads: dict[int, list[Json]],
        finished: Counter[tuple[str, int]],
        held_by_upload: Counter[str],
    ) -> None:
        ledger = self.ledger
        seen: set[str] = set()
        for list_id, found in uploads.items():
            for upload in found:
                name = upload["filename"]
                record = ledger.uploads.get(name)
                if record is None or record.list_id != list_id or name in seen:
                    self.violations.append(f"an upload no client sent: {upload}")
                    continue
                seen.add(name)
                self.check_upload(record, upload, finished)
        for record in ledger.uploads.values():
            if record.filename in seen:
                continue
            self.expect(
                record.state in ("sent", "absent"),
                f"upload {record.filename} was {record.state} but is gone",
            )
            record.state = "absent"
        # No code of an upload that did not complete is held by anyone.
        for record in ledger.uploads.values():
            if record.state in ("failed", "absent"):
                taken = held_by_upload[record.prefix]
                self.expect(
                    not taken,
                    f"upload {record.filename} is {record.state} but {taken} of its codes were"
                    " handed out",
                )

    def check_upload(
        self, record: UploadRecord, upload: Json, finished: Counter[tuple[str, int]]
    ) -> None:
        who = f"upload {record.filename} (id {upload['id']}, {record.state})"
        status = upload["status"]
        self.expect(record.upload_id in (None, upload["id"]), f"{who} has id {upload['id']} now")
        if record.state == "sent":
            allowed = {"failed"} if record.cut_off else {"completed", "failed"}
        elif record.state == "completed":
            allowed = {"completed", "withdrawn"} if record.withdraw_sent else {"completed"}
        else:
            allowed = {record.state}
        self.expect(status in allowed, f"{who} is {status}, expected one of {sorted(allowed)}")
        if status in ("completed", "withdrawn"):
            self.expect(
                (upload["accepted"], upload["rejected"]) == (record.count, 0),
                f"{who} accepted {upload['accepted']} of {record.count} codes: {upload}",
            )
            self.expect(
                (
                    finished[("upload.completed", upload["id"])],
                    finished[("upload.failed", upload["id"])],
                )
                == (1, 0),
                f"{who}: {finished[('upload.completed', upload['id'])]} upload.completed and"
                f" {finished[('upload.failed', upload['id'])]} upload.failed events",
            )
        elif status == "failed":
            self.expect(
                upload["accepted"] == 0 and upload["finished_at"] is not None,
                f"{who} failed but says {upload}",
            )
            if record.cut_off or record.state == "sent":
                self.expect(
                    (upload.get("error") or {}).get("code") == "interrupted",
                    f"{who} was cut off by the kill, but failed with {upload.get('error')}",
                )
            self.expect(
                (
                    finished[("upload.failed", upload["id"])],
                    finished[("upload.completed", upload["id"])],
                )
                == (1, 0),
                f"{who}: {finished[('upload.failed', upload['id'])]} upload.failed and"
                f" {finished[('upload.completed', upload['id'])]} upload.completed events",
            )
        else:
            self.violations.append(f"{who} is {status} after the restart: {upload}")
        if status in ("completed", "failed", "withdrawn"):
            record.state = status
            record.upload_id = upload["id"]
            # A withdrawal in flight at the kill has happened now or never will.
            record.withdraw_sent = False

    def check_lists(
        self, lists: dict[int, Json], held: list[Held], held_by_upload: Counter[str]
    ) -> None:
        ledger = self.ledger
        distributed = Counter(h.list_id for h in held)
        for list_id, listing in lists.items():
            counts = listing["codes"]
            ledger.available[list_id] = counts["available"]
            who = f"list {list_id} {counts}"
            self.expect(
                counts["uploaded"]
                == counts["available"] + counts["distributed"] + counts["withdrawn"],
                f"{who}: uploaded ≠ available + distributed + withdrawn",
            )
            self.expect(
                counts["distributed"] == distributed[list_id],
                f"{who}: distributed, but the server holds {distributed[list_id]} claims",
            )
            mine = [r for r in ledger.uploads.values() if r.list_id == list_id]
            uploaded = sum(r.count for r in mine if r.state in ("completed", "withdrawn"))
            self.expect(
                counts["uploaded"] == uploaded,
                f"{who}: the completed uploads hold {uploaded} codes",
            )
            withdrawn = 0
            for record in mine:
                if record.state != "withdrawn":
                    continue
                left = record.count - held_by_upload[record.prefix]
                withdrawn += left
                self.expect(
                    record.withdrawn_reply in (None, left),
                    f"withdrawal of {record.filename} answered {record.withdrawn_reply} codes,"
                    f" but {left} of its codes are held by nobody",
                )
            self.expect(
                counts["withdrawn"] == withdrawn,
                f"{who}: the withdrawn uploads hold {withdrawn} codes nobody claimed",
            )
        # Every claim names a code of a completed (or since withdrawn) upload of its list.
        uploads = {
            record.prefix: record
            for record in ledger.uploads.values()
            if record.state in ("completed", "withdrawn")
        }
        for h in held:
            owner = uploads.get(prefix_of(h.code))
            if owner is None or owner.list_id != h.list_id or not owner.owns(h.code):
                self.violations.append(
                    f"claim {h} names a code of no completed upload of list {h.list_id}"
                )

    def check_statuses(
        self, lists: dict[int, Json], changes: dict[int, list[tuple[int, str, str]]]
    ) -> None:
        for list_id, listing in lists.items():
            status = "active"
            for seq, previous, after in changes.get(list_id, []):
                self.expect(
                    previous == status,
                    f"list {list_id} was {status}, but event {seq} changes it from {previous}",
                )
                status = after
            self.expect(
                listing["status"] == status,
                f"list {list_id} is {listing['status']} but its events end at {status}",
            )
            known = self.ledger.statuses.get(list_id)
            if known is not None:
                allowed = {known.status} | ({known.in_flight} if known.in_flight else set())
                self.expect(
                    listing["status"] in allowed,
                    f"list {list_id} is {listing['status']}; clients were told {known}",
                )
                known.status, known.in_flight = listing["status"], None

    async def check_campaigns(self, held: list[Held]) -> None:
        found = {c["id"]: c for c in (await self.get("/v1/campaigns"))["campaigns"]}
        issued = Counter(h.campaign_id for h in held if h.campaign_id is not None)
        per_user: Counter[tuple[int, str]] = Counter()
        for h in held:
            if h.campaign_id is not None:
                per_user[(h.campaign_id, h.user)] += 1
        for campaign in self.ledger.campaigns.values():
            seen = found.get(campaign.id)
            if seen is None:
                self.violations.append(f"campaign {campaign.id} is gone")
                continue
            count = seen["rewards"]["issued"]
            self.expect(
                count == issued[campaign.id],
                f"campaign {campaign.id} says {count} rewards; the server holds"
                f" {issued[campaign.id]}",
            )
            self.expect(
                count <= campaign.cap,
                f"campaign {campaign.id} issued {count} > max_codes_per_campaign {campaign.cap}",
            )
        for (campaign_id, user), count in per_user.items():
            record = self.ledger.campaigns.get(campaign_id)
            if record is None:
                self.violations.append(f"user {user!r} rewarded by unknown campaign {campaign_id}")
                continue
            self.expect(
                count <= record.per_user,
                f"user {user!r} has {count} rewards of campaign {campaign_id}, above"
                f" max_codes_per_user {record.per_user}",
            )


def _sample(
    population: Iterable[T], fresh: set[T], rng: random.Random, *, size: int = SAMPLE
) -> list[T]:
    """The fresh items and a sample of the older ones."""
    items = list(population)
    rest = [item for item in items if item not in fresh]
    return [item for item in items if item in fresh] + rng.sample(rest, min(size, len(rest)))


def _ranges(seqs: list[int]) -> str:
    if not seqs:
        return "[]"
    parts = []
    start = previous = seqs[0]
    for seq in seqs[1:]:
        if seq != previous + 1:
            parts.append(f"{start}..{previous}")
            start = seq
        previous = seq
    parts.append(f"{start}..{previous}")
    return ", ".join(parts[:20]) + (" ..." if len(parts) > 20 else "")


# -- the loop ------------------------------------------------------------------------------------


@dataclass
class Report:
    seed: int
    rounds: int = 0
    seconds: float = 0.0
    totals: Counter[str] = field(default_factory=Counter)


class CrashLoop:
    def __init__(self, data_dir: Path, seed: int, log: Callable[[str], None] = print) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.server = ServerProcess(data_dir, env=dict(SERVER_ENV))
        self.ledger = Ledger()
        self.log = log
        self.report = Report(seed)
        self._log_offset = 0
        self.round = 0

    async def run(self, rounds: int) -> Report:
        started = time.monotonic()
        self.mark_log()
        self.log(
            f"crash loop: seed={self.seed} rounds={rounds} data={self.server.data_dir}"
            f" (replay with {SEED_ENV}={self.seed})"
        )
        try:
            await self.start()
            await self.set_up()
            previous: CampaignRecord | None = None
            for number in range(1, rounds + 1):
                self.round = number
                previous = await self.one_round(number, previous)
                self.report.rounds = number
            await self.finish()
        except Exception as exc:
            # Whatever went wrong, say how to replay it and where to look.
            tail = "\n".join(self.server.log().splitlines()[-15:])
            what = str(exc) if isinstance(exc, AssertionError) else repr(exc)
            raise AssertionError(
                f"seed={self.seed} round={self.round} data={self.server.data_dir}"
                f" log={self.server.log_path}:\n{what}\n-- the server's log ends:\n{tail}"
            ) from (None if isinstance(exc, AssertionError) else exc)
        finally:
            self.server.stop()
        self.report.seconds = time.monotonic() - started
        self.log(
            f"crash loop: {rounds} rounds in {self.report.seconds:.1f} s, seed={self.seed}:"
            f" {dict(self.report.totals)}"
        )
        return self.report

    # The server.

    def mark_log(self) -> None:
        """The log is checked from here on."""
        log_path = self.server.data_dir.with_suffix(f".{self.server.port}.log")
        self._log_offset = log_path.stat().st_size if log_path.exists() else 0

    async def start(self) -> None:
        self.server.start()
        await self.server.wait_ready()

    def check_log(self) -> None:
        assert self.server.log_path is not None
        with self.server.log_path.open("rb") as file:
            file.seek(self._log_offset)
            text = file.read().decode(errors="replace")
        bad = [
            line
            for line in text.splitlines()
            if "Traceback" in line or " ERROR " in line or " CRITICAL " in line
        ]
        if bad:
            raise Violation("the server logged errors:\n" + "\n".join(bad[:20]))

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=self.server.url,
            timeout=aiohttp.ClientTimeout(total=120),
            connector=aiohttp.TCPConnector(limit=0),
        )

    # Round 0: the lists.

    async def set_up(self) -> None:
        ledger = self.ledger
        async with self.session() as session:
            for role, partner, size in (
                ("a", "Puma", 2000),
                ("b", "Puma", 1000),
                ("c1", "Nike", 60),
                ("c2", "Nike", 1000),
            ):
                body = {
                    "partner": partner,
                    "tag": f"crash-{role}",
                    "name": f"Crash loop {role}",
                    "description": f"list {role} of the crash loop",
                    "expires_at": FUTURE,
                    "low_stock_threshold": 50,
                }
                async with session.post("/v1/lists", json=body) as response:
                    created = await response.json()
                    assert response.status == 201, created
                list_id = created["id"]
                ledger.lists[role] = list_id
                record = UploadRecord(f"r0-{role}.csv", list_id, f"R0-{role}-", size)
                ledger.uploads[record.filename] = record
                async with session.post(
                    f"/v1/lists/{list_id}/uploads",
                    params={"filename": record.filename},
                    data=record.csv(),
                    headers={"Content-Type": "text/csv"},
                ) as response:
                    reply = await response.json()
                    assert response.status == 201, reply
                    assert reply["status"] == "completed", reply
                record.state, record.upload_id = "completed", reply["id"]
            for role in ("b", "c1"):
                ledger.statuses[ledger.lists[role]] = StatusRecord()

    async def new_campaign(self, session: aiohttp.ClientSession, number: int) -> CampaignRecord:
        lists = (self.ledger.lists["c1"], self.ledger.lists["c2"])
        # Only active lists can be mapped.
        for list_id in lists:
            known = self.ledger.statuses.get(list_id)
            if known is not None and known.status != "active":
                async with session.post(f"/v1/lists/{list_id}/activate", json={}) as response:
                    reply = await response.json()
                    assert response.status == 200, reply
                known.status = "active"
        per_user, cap = self.rng.randint(1, 3), self.rng.randint(10, 150)
        body = {
            "name": f"crash loop round {number}",
            "lists": list(lists),
            "max_codes_per_user": per_user,
            "max_codes_per_campaign": cap,
            "qualification": None,
            "message_template": TEMPLATE,
        }
        async with session.post("/v1/campaigns", json=body) as response:
            created = await response.json()
            assert response.status == 201, created
        record = CampaignRecord(created["id"], lists, per_user, cap)
        self.ledger.campaigns[record.id] = record
        return record

    async def one_round(self, number: int, previous: CampaignRecord | None) -> CampaignRecord:
        started = time.monotonic()
        async with self.session() as session:
            campaign = await self.new_campaign(session, number)
        # Mostly somewhere in the first second; sometimes at once, before much has happened.
        kill_after = (
            self.rng.uniform(0.0, 0.08) if self.rng.random() < 0.15 else self.rng.uniform(0.1, 1.2)
        )
        load = Round(number, self.seed, self.ledger, self.server, campaign, previous)
        await load.run(kill_after)
        if load.unexpected:
            raise Violation("\n".join(load.unexpected[:30]))
        restarts = 1
        self.mark_log()
        if self.rng.random() < 0.1:
            # Killed again while it recovers, or just after.
            self.server.start()
            await asyncio.sleep(self.rng.uniform(0.0, 1.2))
            self.server.kill()
            restarts += 1
        killed = time.monotonic()
        await self.start()
        ready = time.monotonic()
        self.check_log()
        async with self.session() as session:
            checker = Checker(session, self.ledger, random.Random(f"{self.seed}:{number}:check"))
            await checker.check(everything=False, subscribers=load.subscribers)
        if checker.violations:
            raise Violation(
                f"{len(checker.violations)} violation(s) after round {number}"
                f" (killed after {kill_after:.3f} s):\n" + "\n".join(checker.violations[:30])
            )
        big = self.ledger.uploads.get(f"r{number}-big.csv")
        if big is not None:
            load.counts[f"big upload {'cut off, ' if big.cut_off else ''}{big.state}"] += 1
        self.report.totals.update(load.counts)
        received = {s.name: len(s.received) for s in load.subscribers}
        self.log(
            f"round {number}: killed after {kill_after:.2f} s, {restarts} restart(s);"
            f" {dict(load.counts)}; subscribers {received};"
            f" {len(self.ledger.digests)} events, {self.ledger.unanswered} claims held that no"
            f" client was told of; {time.monotonic() - started:.1f} s (restart"
            f" {ready - killed:.1f} s, checks {time.monotonic() - ready:.1f} s)"
        )
        return campaign

    async def finish(self) -> None:
        """Every list drained, one more kill, and a last check of everything acknowledged."""
        started = time.monotonic()
        async with self.session() as session:
            checker = Checker(session, self.ledger, random.Random(f"{self.seed}:final"))
            drained = await self.drain(session, checker)
        if checker.violations:
            raise Violation("draining:\n" + "\n".join(checker.violations[:30]))
        self.server.kill()
        self.mark_log()
        await self.start()
        self.check_log()
        async with self.session() as session:
            checker = Checker(session, self.ledger, random.Random(f"{self.seed}:last"))
            await checker.check(everything=True)
        if checker.violations:
            raise Violation(
                "after the drain and a last kill:\n" + "\n".join(checker.violations[:30])
            )
        self.log(
            f"final: {drained} codes drained; {len(self.ledger.claims) - drained} claims and"
            f" {len(self.ledger.rewards)} rewards acknowledged under load, all repeated;"
            f" {len(self.ledger.digests)} events; {time.monotonic() - started:.1f} s"
        )

    async def drain(self, session: aiohttp.ClientSession, checker: Checker) -> int:
        """Claim every code left: exactly the codes of completed uploads nobody holds."""
        ledger = self.ledger
        held = {h.code for h in ledger.held}
        total = 0
        for role, list_id in ledger.lists.items():
            known = ledger.statuses.get(list_id)
            if known is not None and known.status != "active":
                status, reply = await checker.call("POST", f"/v1/lists/{list_id}/activate")
                checker.expect(status == 200, f"activate {list_id}: {status} {reply}")
                known.status = "active"
            available = (await checker.get(f"/v1/lists/{list_id}"))["codes"]["available"]
            completed = {
                record.prefix: record
                for record in ledger.uploads.values()
                if record.list_id == list_id and record.state == "completed"
            }
            expected = sum(record.count for record in completed.values()) - sum(
                1 for code in held if prefix_of(code) in completed
            )
            drained: list[str] = []
            failures: list[Json] = []
            users = [f"drain-{role}-{n}" for n in range(available + 1)]
            for start in range(0, len(users), 50_000):
                part = users[start : start + 50_000]
                for user in part:
                    ledger.claim_keys[(list_id, user)].add("")
                status, reply = await checker.call(
                    "POST", f"/v1/lists/{list_id}/claims/batch", {"user_ids": part}
                )
                checker.expect(status == 200, f"draining list {list_id}: {status} {reply}")
                for claim in reply["claims"]:
                    ledger.claims[(list_id, claim["user_id"], "")] = _ack(claim)
                    ledger.bulk.add((list_id, claim["user_id"], ""))
                    drained.append(claim["code"])
                failures.extend(reply["failed"])
            checker.expect(
                [f["error"]["code"] for f in failures] == ["list_exhausted"],
                f"draining list {list_id} ({available} available) failed: {failures[:5]}",
            )
            # Distinct codes of its completed uploads that nobody held, as many as there are:
            # exactly those.
            extra = [
                code
                for code in drained
                if code in held
                or prefix_of(code) not in completed
                or not completed[prefix_of(code)].owns(code)
            ]
            checker.expect(
                len(drained) == len(set(drained)) == expected and not extra,
                f"list {list_id} had {len(drained)} codes left ({len(set(drained))} distinct);"
                f" expected the {expected} codes of its completed uploads that nobody holds;"
                f" {len(extra)} others, e.g. {extra[:5]}",
            )
            total += len(drained)
        return total


async def run(data_dir: Path, rounds: int, seed: int, log: Callable[[str], None] = print) -> Report:
    return await CrashLoop(data_dir, seed, log).run(rounds)


def rounds_from_env() -> int:
    return int(os.environ.get(ROUNDS_ENV) or DEFAULT_ROUNDS)


def seed_from_env() -> int:
    raw = os.environ.get(SEED_ENV)
    return int(raw) if raw else random.SystemRandom().randrange(2**32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=rounds_from_env(),
        help=f"rounds of load and kill (default: {ROUNDS_ENV} or {DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=seed_from_env(),
        help=f"the seed of every random choice (default: {SEED_ENV} or a random one)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="a directory that does not exist yet, kept afterwards (default: a temporary one,"
        " kept only if a check fails)",
    )
    args = parser.parse_args(argv)
    base: Path | None = None
    if args.data_dir is None:
        base = Path(tempfile.mkdtemp(prefix="voucherd-crash-"))
        data_dir = base / "data"
    elif args.data_dir.exists():
        parser.error(f"{args.data_dir} exists: the crash loop starts from an empty data directory")
    else:
        data_dir = args.data_dir
    try:
        asyncio.run(run(data_dir, args.rounds, args.seed))
    except AssertionError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        print(f"data kept in {data_dir}", file=sys.stderr)
        return 1
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
