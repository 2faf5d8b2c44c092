"""The list actor: owns one voucher list's available codes and claims, one turn at a time.

Claims are pipelined: a turn takes codes for every claim in the mailbox, hands all their records
to the journal as one entry and moves on; the replies go out when that entry commits. If it
fails, the codes go back to the front of the pool, so memory never drifts from the database.
Administrative messages (status changes, edits, completing or withdrawing an upload) wait for
their own commit before the next message is handled, so claims never see a half-made change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple

from voucherd import clock, errors, events
from voucherd.actors.base import Actor, Envelope
from voucherd.claim_keys import ClaimKeys
from voucherd.claims import (
    CLAIM_COLUMNS,
    RUN_COLUMNS,
    Claim,
    ClaimRun,
    identity,
    keys_of,
    stored_as,
)
from voucherd.events import Event, Render, RewardRun
from voucherd.lists import UPDATE_LIST, ListInfo, update_row
from voucherd.metrics import Metrics
from voucherd.persistence.journal import Events, Insert, Journal, Op, Rows
from voucherd.pool import Code, CodePool, Segment, Taken
from voucherd.statuses import STORED_AFTER, Action, Status, check

log = logging.getLogger(__name__)

BATCH_SLICE = 1000


# -- messages ----------------------------------------------------------------------------------


class TakeCode(NamedTuple):
    """A claim: give this (user, idempotency key) a code, or the one it already has.
    A tuple, not a frozen dataclass, because one is made per request."""

    user_id: str
    idempotency_key: str = ""
    metadata: str | None = None
    source: str = "API"
    campaign_id: int | None = None
    # Renders the reward's message from its event's properties; campaigns only.
    render: Render | None = None


@dataclass(frozen=True, slots=True)
class TakeCodes:
    """A batch claim: one code for each distinct user, without idempotency keys."""

    user_ids: Sequence[str]
    source: str = "API"
    campaign_id: int | None = None
    render: Render | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    action: Action


@dataclass(frozen=True, slots=True)
class Edit:
    name: str | None = None
    description: str | None = None
    expires_at: float | None = None
    low_stock_threshold: int | None = None
    # An ISO 8601 duration; "" removes the warning.
    expiry_warning: str | None = None


@dataclass(frozen=True, slots=True)
class WarnExpiry:
    """Write `list.expiring` if the list's expiry warning is due and not yet written."""


@dataclass(frozen=True, slots=True)
class CompleteUpload:
    upload_id: int
    segments: Sequence[Segment]
    accepted: int
    ops: Sequence[Op]


@dataclass(frozen=True, slots=True)
class Withdraw:
    upload_id: int


Message = TakeCode | TakeCodes | Transition | Edit | WarnExpiry | CompleteUpload | Withdraw


# -- replies -----------------------------------------------------------------------------------


class ClaimOutcome(NamedTuple):
    """`claim` is None for a repeat of a claim made earlier: the caller reads it by id."""

    claim_id: int
    claim: Claim | None
    created: bool


@dataclass(slots=True)
class BatchOutcome:
    # The batch's new claims, a run a slice.
    runs: list[ClaimRun] = field(default_factory=list)
    # Repeats: claims some of its users had in flight already, made by an earlier request,
    # and the ids of claims they hold.
    in_flight: list[Claim] = field(default_factory=list)
    repeat_ids: list[int] = field(default_factory=list)
    failed: list[tuple[str, errors.VoucherdError]] = field(default_factory=list)

    @property
    def created(self) -> int:
        return sum(map(len, self.runs))

    def new_claims(self) -> list[Claim]:
        """The runs' claims, one object each."""
        return [claim for run in self.runs for claim in run.claims()]


# -- state -------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Pending:
    """A claim taken from the pool whose record is not committed yet."""

    claim: Claim
    code: Code
    key: str
    durable: asyncio.Future[Any] | None = None


class _InFlight(NamedTuple):
    """A claim of a batch slice in flight, looked up by its key."""

    claim: Claim
    durable: asyncio.Future[Any] | None


@dataclass(slots=True, eq=False)
class _Slice:
    """A batch slice's claims taken from the pool, not committed yet: a run of claims and a
    run of reward events, no object a claim."""

    run: ClaimRun
    keys: list[str]
    taken: Taken
    rewards: RewardRun
    durable: asyncio.Future[Any] | None = None

    def in_flight(self, claim_id: int) -> _InFlight | None:
        """The claim of this id, if it is one of the slice's."""
        index = claim_id - self.run.first_id
        if 0 <= index < len(self.keys):
            return _InFlight(self.run.claim(index), self.durable)
        return None


@dataclass(slots=True)
class _Turn:
    taken: list[_Pending] = field(default_factory=list)
    waits: list[tuple[Envelope[Any], _Pending | _InFlight, bool]] = field(default_factory=list)
    # The clock and the list's status, read once for every claim of the turn, and the codes
    # available before its first claim.
    now: float = 0.0
    status: Status | None = None
    available: int = 0


class Ids:
    """Id sequences shared by all actors; they run on one event loop, so plain ints suffice."""

    def __init__(self, list_id: int = 0, upload_id: int = 0, code_id: int = 0, claim_id: int = 0):
        self.list_id = list_id
        self.upload_id = upload_id
        self.code_id = code_id
        self.claim_id = claim_id

    def next_list(self) -> int:
        self.list_id += 1
        return self.list_id

    def next_upload(self) -> int:
        self.upload_id += 1
        return self.upload_id

    def next_claim(self) -> int:
        self.claim_id += 1
        return self.claim_id

    def following_claims(self, count: int) -> range:
        """The ids the next `count` claims will get, not reserved yet."""
        return range(self.claim_id + 1, self.claim_id + 1 + count)

    def next_claims(self, count: int) -> int:
        """Reserve `count` consecutive claim ids; returns the first."""
        first = self.claim_id + 1
        self.claim_id += count
        return first

    def take_codes(self, count: int) -> int:
        first = self.code_id + 1
        self.code_id += count
        return first


class ListActor(Actor[Message]):
    def __init__(
        self,
        info: ListInfo,
        *,
        journal: Journal,
        ids: Ids,
        metrics: Metrics,
        mailbox_size: int,
        pool: CodePool | None = None,
        claims: dict[str, int] | None = None,
        keys_by_user: dict[str, list[str]] | None = None,
        uploads: dict[int, str] | None = None,
    ) -> None:
        super().__init__(f"list-{info.id}", mailbox_size)
        self.info = info
        self.pool = pool or CodePool()
        self.journal = journal
        self.ids = ids
        self.metrics = metrics
        # Every claim by (user, idempotency key), from the moment its code is taken, and the
        # keys each user has used: idempotency answers from here, and so does a user's voucher
        # tray. Claims not committed yet are also in `_pending` (single claims, by key) or in
        # `_slices` (a batch's, by their first id), and a lookup asks those first: so a batch
        # checks and enters its keys in one lookup each.
        self._claims: ClaimKeys[int] = ClaimKeys(claims)
        self._keys_by_user: ClaimKeys[list[str]] = ClaimKeys(keys_by_user)
        self._pending: dict[str, _Pending] = {}
        self._slices: dict[int, _Slice] = {}
        # Status of each finished upload of this list: completed or withdrawn.
        self.uploads: dict[int, str] = uploads or {}
        # Codes stored by uploads still in progress: they count against the list's cap.
        self.incoming = 0

    async def receive(self, batch: list[Envelope[Message]]) -> None:
        turn = _Turn()
        try:
            for envelope in batch:
                message = envelope.message
                if isinstance(message, TakeCode):
                    self._take_one(envelope, message, turn)
                    continue
                self._commit_turn(turn)
                turn = _Turn()
                try:
                    if isinstance(message, TakeCodes):
                        await self._take_many(envelope, message)
                    else:
                        envelope.reply(await self._administer(message))
                except errors.VoucherdError as exc:
                    envelope.fail(exc)
        finally:
            # Whatever happened above, the codes taken this turn are written or given back.
            self._commit_turn(turn)

    # -- claims --------------------------------------------------------------------------------

    def claim_keys_of(self, user_id: str) -> list[str]:
        """The keys a user's claims on this list go by: the user id alone, and one for each
        idempotency key or campaign reward."""
        suffixes = self._keys_by_user.get(user_id) or ()
        return [user_id, *(f"{user_id}\x1f{suffix}" for suffix in suffixes)]

    def committed_claims(self, keys: Sequence[str]) -> list[int]:
        """The ids of the committed claims these keys name."""
        held = {key: claim_id for key in keys if (claim_id := self._claims.get(key)) is not None}
        if self._pending or self._slices:  # leave out claims not committed yet
            held = {key: id_ for key, id_ in held.items() if self._in_flight(key, id_) is None}
        return list(held.values())

    def _take_one(self, envelope: Envelope[Message], message: TakeCode, turn: _Turn) -> None:
        key = identity(message.user_id, message.idempotency_key, message.campaign_id)
        claim_id = self._claims.get(key)
        if claim_id is not None:
            in_flight = self._in_flight(key, claim_id)
            if in_flight is not None:
                turn.waits.append((envelope, in_flight, False))
            else:
                envelope.reply(ClaimOutcome(claim_id, None, created=False))
            return
        if turn.status is None:
            turn.now = clock.now()
            turn.status = self.info.status(turn.now)
            turn.available = self.info.counts.available
        try:
            check(turn.status, Action.CLAIM, self.info.id)
            pending = self._take(key, message, turn.now)
        except errors.VoucherdError as exc:
            envelope.fail(exc)
            return
        turn.taken.append(pending)
        turn.waits.append((envelope, pending, True))

    def _take(self, key: str, message: TakeCode, now: float) -> _Pending:
        """Take a code for a new claim; the caller has checked the list's status."""
        code = self.pool.pop()
        if code is None:
            raise errors.ListExhausted(f"list {self.info.id} has no codes left")
        text = None
        if message.render is not None:
            rewards = events.Rewards(self.info, message.source, message.campaign_id, message.render)
            text = rewards.message(code.code, message.user_id, now)
        claim = Claim(
            self.ids.next_claim(),
            self.info.id,
            message.user_id,
            message.idempotency_key,
            code.id,
            code.code,
            now,
            message.source,
            message.campaign_id,
            message.metadata,
            text,
        )
        self.info.counts.distributed += 1
        pending = _Pending(claim, code, key)
        self._pending[key] = pending
        self._claims.set(key, claim.id)
        return pending

    def _in_flight(self, key: str, claim_id: int) -> _Pending | _InFlight | None:
        """The claim of this key and id if it is still in flight (a batch's few slices are
        looked through by id)."""
        pending = self._pending.get(key)
        if pending is not None:
            return pending
        for made in self._slices.values():
            in_flight = made.in_flight(claim_id)
            if in_flight is not None:
                return in_flight
        return None

    def _take_slice(
        self, keys: list[str], users: list[str], taken: Taken, message: TakeCodes, now: float
    ) -> _Slice:
        """New keyless claims for a batch slice, one for each user and key, with the codes
        taken for them; the keys are in the claims map already, with the ids they get."""
        count = len(taken.ids)
        info = self.info
        keys, users = keys[:count], users[:count]
        rewards = events.Rewards(info, message.source, message.campaign_id, message.render)
        messages: list[str | None] = (
            [None] * count
            if message.render is None
            else list(map(rewards.message, taken.codes, users, repeat(now)))
        )
        run = ClaimRun(self.ids.next_claims(count), info.id, now, message.source,
                       message.campaign_id, users, taken.ids, taken.codes, messages)  # fmt: skip
        made = _Slice(run, keys, taken, rewards.run(taken.codes, users, messages, now))
        self._slices[run.first_id] = made
        info.counts.distributed += count
        return made

    def _commit_slice(self, made: _Slice, available: int) -> errors.VoucherdError | None:
        """Hand a slice's claims and reward events to the journal, two rows in all; the
        journal's refusal if it refused them (their codes went back to the pool)."""
        run = made.run
        stock = self._stock_events(available, self.info.counts.available, run.claimed_at)
        rows = Insert("claim_runs", RUN_COLUMNS, [run.row()])
        ops: list[Op] = [rows, Events([made.rewards, *stock])]
        try:
            made.durable = self.journal.submit(ops, records=len(run))
        except errors.VoucherdError as exc:
            self._give_back_slice(made)
            self._restate_stock(stock, run.claimed_at)
            return exc
        made.durable.add_done_callback(partial(self._settle_slice, made, stock))
        return None

    def _settle_slice(self, made: _Slice, stock: list[Event], durable: asyncio.Future[Any]) -> None:
        if durable.cancelled() or durable.exception() is not None:
            self._give_back_slice(made)
            self._restate_stock(stock, made.run.claimed_at)
            return
        run, keys = made.run, made.keys
        self.info.rate.record(run.claimed_at, len(run))
        del self._slices[run.first_id]
        if run.campaign_id is not None:
            # The tray finds rewards by what follows the user id.
            for user_id, key in zip(run.users, keys, strict=True):
                self._keys_by_user.setdefault(user_id, []).append(key[len(user_id) + 1 :])

    def _give_back_slice(self, made: _Slice) -> None:
        """Undo a slice whose records were never written (see _give_back)."""
        self._slices.pop(made.run.first_id, None)
        self._claims.remove(made.keys)
        self.info.counts.distributed -= len(made.keys)
        self.pool.give_back_taken(made.taken)

    def _commit_turn(self, turn: _Turn) -> None:
        if turn.taken:
            stock = self._stock_events(turn.available, self.info.counts.available, turn.now)
            try:
                # The turn's claims and their reward events, in one transaction, stored as
                # runs where they can be: a few rows for the whole turn.
                claims = [p.claim for p in turn.taken]
                runs, alone = stored_as(claims)
                ops: list[Op] = [
                    Insert("claims", CLAIM_COLUMNS, alone),
                    Insert("claim_runs", RUN_COLUMNS, [run.row() for run in runs]),
                    Events([*events.rewarded(self.info, claims), *stock]),
                ]
                durable = self.journal.submit(ops, records=len(turn.taken))
            except errors.VoucherdError as exc:
                self._give_back(turn.taken)
                self._restate_stock(stock, turn.now)
                refused = {id(pending) for pending in turn.taken}
                for envelope, pending, _ in turn.waits:
                    if id(pending) in refused:
                        envelope.fail(exc)
                turn.waits = [w for w in turn.waits if id(w[1]) not in refused]
            else:
                for pending in turn.taken:
                    pending.durable = durable
                # One callback answers the whole turn: a callback per claim costs too much.
                answers = [w for w in turn.waits if w[1].durable is durable]
                durable.add_done_callback(partial(self._settle, turn.taken, stock, answers))
                turn.waits = [w for w in turn.waits if w[1].durable is not durable]
        for envelope, pending, created in turn.waits:
            # Repeats of claims still in flight from an earlier turn.
            assert pending.durable is not None
            pending.durable.add_done_callback(partial(_answer, envelope, pending.claim, created))

    def _stock_events(self, before: int, after: int, now: float) -> list[Event]:
        """`list.low_stock` when the available codes fall to the threshold, `list.exhausted`
        when they run out: once each, re-armed only when a top-up lifts the list back above."""
        threshold = self.info.low_stock_threshold
        crossed = (
            (events.LIST_LOW_STOCK, before > threshold >= after),
            (events.LIST_EXHAUSTED, before > 0 == after),
        )
        return [_stock_event(self.info, kind, after, now) for kind, yes in crossed if yes]

    def _settle(
        self,
        taken: list[_Pending],
        stock: list[Event],
        answers: list[tuple[Envelope[Any], _Pending | _InFlight, bool]],
        durable: asyncio.Future[Any],
    ) -> None:
        if durable.cancelled() or durable.exception() is not None:
            self._give_back(taken)
            self._restate_stock(stock, taken[0].claim.claimed_at)
        else:
            in_flight = self._pending
            self.info.rate.record(taken[0].claim.claimed_at, len(taken))
            for pending in taken:
                claim = pending.claim
                del in_flight[pending.key]
                if claim.idempotency_key or claim.campaign_id is not None:
                    # The tray finds keyed claims and rewards by what follows the user id.
                    suffix = pending.key[len(claim.user_id) + 1 :]
                    self._keys_by_user.setdefault(claim.user_id, []).append(suffix)
        for envelope, waiting, created in answers:
            _answer(envelope, waiting.claim, created, durable)

    def _restate_stock(self, lost: list[Event], now: float) -> None:
        """A failed write took its stock alerts with it, and its codes are back. If other
        claims, written without an alert, still keep the list past the mark, no later claim
        crosses it again: the alert is written now, on its own."""
        available = self.info.counts.available
        holds = {
            events.LIST_LOW_STOCK: available <= self.info.low_stock_threshold,
            events.LIST_EXHAUSTED: available == 0,
        }
        owed = [_stock_event(self.info, e.type, available, now) for e in lost if holds[e.type]]
        if not owed:
            return
        try:
            written = self.journal.submit([Events(owed)], records=len(owed))
        except errors.VoucherdError as exc:
            log.warning("list %d: a stock alert could not be written: %s", self.info.id, exc)
            return
        written.add_done_callback(partial(_logged, self.info.id, "a stock alert"))

    def _give_back(self, taken: list[_Pending]) -> None:
        """Undo claims whose records were never written: their codes go out next.

        Their upload cannot have been withdrawn yet: the journal settles entries in order, and
        these claims were queued before any withdrawal that could take their codes."""
        for pending in reversed(taken):
            self._pending.pop(pending.key, None)
            self._claims.pop(pending.key)
            self.info.counts.distributed -= 1
            self.pool.give_back(pending.code)

    def _withdraw_late(self, upload_id: int, count: int) -> None:
        # Codes given back by failed claims while their upload was being withdrawn: they join
        # the withdrawn ones. Recovery recounts withdrawn codes, so this write is a courtesy.
        self.info.counts.withdrawn += count
        try:
            written = self.journal.submit(
                [
                    Rows(
                        "UPDATE uploads SET withdrawn = withdrawn + ? WHERE id = ?",
                        [(count, upload_id)],
                    )
                ]
            )
        except errors.VoucherdError:
            log.error("list %d: could not record a late withdrawal", self.info.id)
        else:
            written.add_done_callback(partial(_logged, self.info.id, "a late withdrawal"))

    async def _take_many(self, envelope: Envelope[Message], message: TakeCodes) -> None:
        outcome = BatchOutcome()
        slices: list[_Slice] = []
        waits: list[_Pending | _InFlight] = []
        users = list(dict.fromkeys(message.user_ids))
        for start in range(0, len(users), BATCH_SLICE):
            try:
                check(self.info.status(), Action.CLAIM, self.info.id)
                refusal = None
            except errors.VoucherdError as exc:
                # Kept for every user of the slice, so without its traceback: that holds this
                # frame, and the frame holds the refusal, a cycle only a full collection frees.
                refusal = exc.with_traceback(None)
            part = users[start : start + BATCH_SLICE]
            keys = keys_of(part, message.campaign_id)
            # The slice's new claims get the ids that follow: the keys go into the claims map
            # with them at once, unless one is there already.
            ids = self.ids.following_claims(len(keys))
            if refusal is not None or not self._claims.add_new(keys, ids):
                keys, part = self._sort_out(keys, part, refusal, outcome, waits)
                self._claims.add(keys, ids[: len(keys)])
            now, available = clock.now(), self.info.counts.available
            taken = self.pool.take(len(keys))
            if len(taken.ids) < len(keys):
                exhausted = errors.ListExhausted(f"list {self.info.id} has no codes left")
                outcome.failed.extend((user_id, exhausted) for user_id in part[len(taken.ids) :])
                self._claims.remove(keys[len(taken.ids) :])
            if taken.ids:
                made = self._take_slice(keys, part, taken, message, now)
                assert made.run.first_id == ids.start  # the ids its keys went in with
                refused = self._commit_slice(made, available)
                if refused is None:
                    slices.append(made)
                else:
                    outcome.failed.extend((user_id, refused) for user_id in made.run.users)
            # Let other lists and requests run between slices of a large batch.
            await asyncio.sleep(0)
        durables = {id(p.durable): p.durable for p in (*slices, *waits) if p.durable is not None}
        done = asyncio.gather(*durables.values(), return_exceptions=True)
        done.add_done_callback(partial(_answer_batch, envelope, outcome, slices, waits))

    def _sort_out(
        self,
        keys: list[str],
        users: list[str],
        refusal: errors.VoucherdError | None,
        outcome: BatchOutcome,
        waits: list[_Pending | _InFlight],
    ) -> tuple[list[str], list[str]]:
        """A batch's users who already hold a claim, or have one in flight, or are refused:
        each is answered apart. Returns the keys and ids of the users left to claim for."""
        fresh_keys, fresh_users = [], []
        for key, user_id in zip(keys, users, strict=True):
            claim_id = self._claims.get(key)
            if claim_id is not None:
                in_flight = self._in_flight(key, claim_id)
                if in_flight is not None:
                    waits.append(in_flight)
                else:
                    outcome.repeat_ids.append(claim_id)
            elif refusal is not None:
                outcome.failed.append((user_id, refusal))
            else:
                fresh_keys.append(key)
                fresh_users.append(user_id)
        return fresh_keys, fresh_users

    # -- administration ------------------------------------------------------------------------

    async def _administer(self, message: Message) -> Any:
        now = clock.now()
        info = self.info
        if isinstance(message, Transition):
            previous = info.status(now)
            check(previous, message.action, info.id)
            changed = info.replace(stored_status=STORED_AFTER[message.action], updated_at=now)
            await self.journal.write(
                Rows(UPDATE_LIST, [update_row(changed)]), *_status_events(previous, changed, now)
            )
            self.info = changed
            if changed.stored_status is Status.ARCHIVED:
                self.pool.clear()
            return changed
        if isinstance(message, Edit):
            return await self._edit(message, now)
        if isinstance(message, WarnExpiry):
            return await self._warn_expiry(now)
        if isinstance(message, CompleteUpload):
            # Archived or expired during the upload: the codes would join a list that takes
            # none.
            check(info.status(now), Action.UPLOAD, info.id)
            # Waiting for room, as the upload's chunks did: a finished upload does not fail
            # because claims fill the journal's queue.
            await self.journal.write_waiting(*message.ops)
            self.pool.add(message.segments)
            info.counts.uploaded += message.accepted
            self.uploads[message.upload_id] = "completed"
            return None
        if isinstance(message, Withdraw):
            return await self._withdraw(message.upload_id, now)
        raise TypeError(f"unexpected message {type(message).__name__}")

    async def _edit(self, edit: Edit, now: float) -> ListInfo:
        info = self.info
        status = info.status(now)
        check(status, Action.EDIT, info.id)
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("name", edit.name),
                ("description", edit.description),
                ("expires_at", edit.expires_at),
                ("low_stock_threshold", edit.low_stock_threshold),
                ("expiry_warning", edit.expiry_warning),
            )
            if value is not None
        }
        if changes.get("expiry_warning") == "":
            changes["expiry_warning"] = None
        changed = info.replace(updated_at=now, **changes)
        if status is Status.EXPIRED and changed.expires_at > now:
            # Extending an expired list's date re-activates it, as the status table says.
            changed.stored_status = Status.ACTIVE
        available = info.counts.available
        # A mark raised past the stock crosses it as surely as a claim taking the stock past it.
        crossed = info.low_stock_threshold < available <= changed.low_stock_threshold
        alerts = [_stock_event(changed, events.LIST_LOW_STOCK, available, now)] if crossed else []
        await self.journal.write(
            Rows(UPDATE_LIST, [update_row(changed)]),
            Events(alerts),
            *_status_events(status, changed, now),
        )
        self.info = changed
        return changed

    async def _warn_expiry(self, now: float) -> bool:
        info = self.info
        due = info.warning_at()
        if (
            due is None
            or not due <= now < info.expires_at
            or info.warned_expiry == info.expires_at
            or info.status(now) not in (Status.ACTIVE, Status.PAUSED)
        ):
            return False
        changed = info.replace(warned_expiry=info.expires_at)
        data = {
            "list_id": info.id,
            "partner": info.partner,
            "tag": info.tag,
            "expires_at": clock.format_time(info.expires_at),
            "expiry_warning": info.expiry_warning,
            "available": info.counts.available,
        }
        await self.journal.write(
            Rows(UPDATE_LIST, [update_row(changed)]),
            Events([Event.of(events.LIST_EXPIRING, data, now)]),
        )
        self.info = changed
        return True

    async def _withdraw(self, upload_id: int, now: float) -> int:
        status = self.uploads.get(upload_id)
        if status != "completed":
            state = "already withdrawn" if status == "withdrawn" else "not completed"
            raise errors.Conflict(f"upload {upload_id} is {state}: nothing to withdraw")
        if self.info.stored_status is Status.ARCHIVED:
            raise errors.ListArchived(f"list {self.info.id} is archived")
        count = self.pool.held(upload_id)
        available = self.info.counts.available
        alerts = self._stock_events(available, available - count, now)
        # Nothing is deleted: a withdrawn upload's codes that no claim names are withdrawn.
        await self.journal.write(
            Rows(
                "UPDATE uploads SET status = 'withdrawn', withdrawn = ? WHERE id = ?",
                [(count, upload_id)],
            ),
            Events(alerts),
        )
        # Claims wait for this turn, but a failed claim may have given a code back meanwhile.
        removed = self.pool.withdraw(upload_id)
        self.uploads[upload_id] = "withdrawn"
        self.info.counts.withdrawn += count
        if removed > count:
            self._withdraw_late(upload_id, removed - count)
        return removed


def _stock_event(info: ListInfo, kind: str, available: int, now: float) -> Event:
    data = {
        "list_id": info.id,
        "partner": info.partner,
        "tag": info.tag,
        "available": available,
        "low_stock_threshold": info.low_stock_threshold,
    }
    return Event.of(kind, data, now)


def _logged(list_id: int, what: str, written: asyncio.Future[Any]) -> None:
    """For a write nobody waits for: its failure is logged, not reported as lost."""
    if not written.cancelled() and (exc := written.exception()) is not None:
        log.warning("list %d: %s could not be written: %s", list_id, what, exc)


def _status_events(previous: Status, changed: ListInfo, now: float) -> tuple[Events, ...]:
    status = changed.status(now)
    if status is previous:
        return ()
    data = events.status_changed("list", changed.id, previous.value, status.value)
    return (Events([Event.of(events.LIST_STATUS_CHANGED, data, now)]),)


def _answer(
    envelope: Envelope[Any], claim: Claim, created: bool, durable: asyncio.Future[Any]
) -> None:
    if durable.cancelled():
        envelope.fail(errors.StorageUnavailable("the claim was not written"))
    elif (exc := durable.exception()) is not None:
        envelope.fail(exc)
    else:
        envelope.reply(ClaimOutcome(claim.id, claim, created))


def _answer_batch(
    envelope: Envelope[Any],
    outcome: BatchOutcome,
    slices: list[_Slice],
    waits: list[_Pending | _InFlight],
    done: asyncio.Future[list[Any]],
) -> None:
    unwritten = errors.StorageUnavailable("the claim was not written")
    for made in slices:
        if _written(made.durable):
            outcome.runs.append(made.run)
        else:
            outcome.failed.extend((user_id, unwritten) for user_id in made.run.users)
    for pending in waits:
        if _written(pending.durable):
            outcome.in_flight.append(pending.claim)
        else:
            outcome.failed.append((pending.claim.user_id, unwritten))
    envelope.reply(outcome)


def _written(durable: asyncio.Future[Any] | None) -> bool:
    assert durable is not None
    return not durable.cancelled() and durable.exception() is None
