"""Campaigns at work: admitting rewards within their limits, and taking codes from their lists.

A reward is admitted in one synchronous step — status, qualification, idempotency, the user's
and the campaign's limits, then the reservation — with no await in between. On one event loop
nothing else runs during that step, so it is as serialized as an actor's turn, without a
mailbox hop: however many rewards arrive at once, the limits hold exactly. Reservations count
as rewards until their claim is committed or refused, so a limit is never exceeded, and
recovery counts rewards from the claims themselves, so it holds across restarts.

The code itself comes from the campaign's lists, tried in fallback order: a list that is
exhausted, paused, expired or archived passes the request on to the next.

Changes to the campaign itself (edits, pause, resume, end) go through its mailbox, one at a
time, each checked against the state the previous one left and applied once written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any, NamedTuple

from voucherd import clock, errors, events
from voucherd.actors.base import Actor, Envelope
from voucherd.actors.directory import Directory
from voucherd.actors.voucher_list import BatchOutcome, ClaimOutcome, TakeCode, TakeCodes
from voucherd.campaigns import (
    INSERT_CAMPAIGN,
    STORED_AFTER,
    CampaignAction,
    CampaignInfo,
    CampaignStatus,
    Reason,
    stored_values,
)
from voucherd.claim_keys import ClaimKeys
from voucherd.claims import Claim, identity
from voucherd.events import Event, Render
from voucherd.persistence.journal import Events, Journal, Rows
from voucherd.persistence.recovery import RecoveredCampaign
from voucherd.statuses import Status

log = logging.getLogger(__name__)

# A list in one of these states passes a reward on to the next list of the campaign.
_PASS_ON = (errors.ListExhausted, errors.ListPaused, errors.ListExpired, errors.ListArchived)


class Rewarded(NamedTuple):
    """A reward given now (`claim` set, `created`) or earlier (read `claim_id` back)."""

    claim_id: int
    claim: Claim | None
    created: bool


class Refused(NamedTuple):
    reason: Reason


Outcome = Rewarded | Refused
# A batch's answer for one user: an outcome, or the error that stopped it (overload, say).
BatchAnswer = tuple[str, Outcome | errors.VoucherdError]


# -- messages for the campaign's mailbox -------------------------------------------------------


class Change(NamedTuple):
    changes: dict[str, Any]


class Transition(NamedTuple):
    action: CampaignAction


Message = Change | Transition


class Campaign(Actor[Message]):
    def __init__(
        self,
        info: CampaignInfo,
        campaigns: Campaigns,
        rewards: dict[str, int] | None = None,
        per_user: Counter[str] | None = None,
    ) -> None:
        super().__init__(f"campaign-{info.id}", mailbox_size=1000)
        self.info = info
        self.campaigns = campaigns
        self.directory = campaigns.directory
        # Committed rewards by identity(user, idempotency key); rewards per user and in all,
        # reservations included; rewards committed.
        self._rewards: ClaimKeys[int] = ClaimKeys(rewards)
        self._per_user: ClaimKeys[int] = ClaimKeys(per_user)
        self._taken = sum(per_user.values()) if per_user else 0
        self.issued = self._taken
        # Rewards being given, single or in a batch: a repeat waits for the same answer.
        self._in_flight: dict[str, asyncio.Future[Outcome]] = {}

    # -- one reward ----------------------------------------------------------------------------

    async def reward(
        self, user_id: str, key: str = "", trigger: dict[str, Any] | None = None
    ) -> Outcome:
        me = identity(user_id, key)
        claim_id = self._rewards.get(me)
        if claim_id is not None:
            return Rewarded(claim_id, None, created=False)
        earlier = self._in_flight.get(me)
        if earlier is not None:
            return _repeat(await asyncio.shield(earlier))
        reason = self._admit(user_id, trigger)
        if reason is not None:
            return Refused(reason)
        self._reserve(user_id)
        # The code is taken in a task of its own: a client that goes away must not leave a
        # reservation behind, nor a committed reward uncounted.
        issue = asyncio.ensure_future(self._issue(user_id, key, trigger))
        self._in_flight[me] = issue
        issue.add_done_callback(partial(self._settle, me, user_id))
        return await asyncio.shield(issue)

    def _admit(self, user_id: str, trigger: dict[str, Any] | None) -> Reason | None:
        """Why this reward cannot be given now, or None: checked and reserved with no await."""
        info = self.info
        if info.status() is not CampaignStatus.RUNNING:
            return Reason.CAMPAIGN_NOT_RUNNING
        if info.qualification is not None and not info.qualification.admits(trigger):
            return Reason.NOT_QUALIFIED
        return self._over_limit(user_id)

    def _over_limit(self, user_id: str) -> Reason | None:
        if (self._per_user.get(user_id) or 0) >= self.info.max_codes_per_user:
            return Reason.USER_LIMIT_REACHED
        cap = self.info.max_codes_per_campaign
        if cap is not None and self._taken >= cap:
            return Reason.CAMPAIGN_LIMIT_REACHED
        return None

    def _reserve(self, user_id: str) -> None:
        self._per_user.set(user_id, (self._per_user.get(user_id) or 0) + 1)
        self._taken += 1

    def _release(self, user_id: str) -> None:
        left = (self._per_user.get(user_id) or 0) - 1
        if left:
            self._per_user.set(user_id, left)
        else:
            self._per_user.pop(user_id)
        self._taken -= 1

    async def _issue(self, user_id: str, key: str, trigger: dict[str, Any] | None) -> Outcome:
        render = self._renderer(trigger)
        for list_id in self.info.lists:
            actor = self.directory.actor(list_id)
            take = TakeCode(user_id, key, None, "Campaign", self.info.id, render)
            try:
                outcome: ClaimOutcome = await actor.ask(take)
            except _PASS_ON:
                continue
            return Rewarded(outcome.claim_id, outcome.claim, outcome.created)
        return Refused(Reason.OUT_OF_CODES)

    def _settle(self, me: str, user_id: str, issue: asyncio.Future[Outcome]) -> None:
        del self._in_flight[me]
        outcome = None if issue.cancelled() or issue.exception() else issue.result()
        self._count(me, user_id, outcome)

    def _count(self, me: str, user_id: str, outcome: Outcome | None) -> None:
        """A reservation ends: a new reward keeps it; anything else gives it back."""
        if isinstance(outcome, Rewarded):
            self._rewards.set(me, outcome.claim_id)
            if outcome.created:
                self.issued += 1
                return
        self._release(user_id)

    def _renderer(self, trigger: dict[str, Any] | None) -> Render | None:
        template = self.info.template
        if template is None:
            return None
        return partial(template.render, trigger=trigger)

    # -- a segment at once ---------------------------------------------------------------------

    async def reward_many(self, user_ids: Sequence[str]) -> list[BatchAnswer]:
        """Reward each user of a segment once (no idempotency keys), answering in the order
        given: a segment's users have qualified by belonging to it, so the live-behaviour rule
        is not asked. Admission is one synchronous step for the whole batch."""
        users = list(dict.fromkeys(user_ids))
        # Repeats get their first answer whatever the campaign's status now.
        running = self.info.status() is CampaignStatus.RUNNING
        answers: dict[str, Outcome | errors.VoucherdError] = {}
        waits: dict[str, asyncio.Future[Outcome]] = {}
        admitted: dict[str, asyncio.Future[Outcome]] = {}
        loop = asyncio.get_running_loop()
        for user_id in users:
            me = identity(user_id, "")
            claim_id = self._rewards.get(me)
            if claim_id is not None:
                answers[user_id] = Rewarded(claim_id, None, created=False)
            elif me in self._in_flight:
                waits[user_id] = self._in_flight[me]
            elif not running:
                answers[user_id] = Refused(Reason.CAMPAIGN_NOT_RUNNING)
            elif (reason := self._over_limit(user_id)) is not None:
                answers[user_id] = Refused(reason)
            else:
                self._reserve(user_id)
                admitted[user_id] = self._in_flight[me] = loop.create_future()
        if admitted:
            issue = asyncio.ensure_future(self._issue_many(list(admitted)))
            issue.add_done_callback(partial(self._settle_many, admitted))
            await asyncio.wait([issue])
        for user_id, future in (*admitted.items(), *waits.items()):
            await asyncio.wait([future])
            if future.exception() is not None:
                error = future.exception()
                answers[user_id] = (
                    error
                    if isinstance(error, errors.VoucherdError)
                    else errors.StorageUnavailable("the reward was not written")
                )
            else:
                outcome = future.result()
                answers[user_id] = _repeat(outcome) if user_id in waits else outcome
        return [(user, answers[user]) for user in users]

    async def _issue_many(self, users: list[str]) -> dict[str, Outcome | errors.VoucherdError]:
        render = self._renderer(None)
        outcomes: dict[str, Outcome | errors.VoucherdError] = {}
        for list_id in self.info.lists:
            if not users:
                break
            take = TakeCodes(users, "Campaign", self.info.id, render)
            try:
                batch: BatchOutcome = await self.directory.actor(list_id).ask(take)
            except errors.VoucherdError as exc:
                outcomes.update((user, exc) for user in users)
                return outcomes
            made = batch.new_claims()
            outcomes.update((claim.user_id, Rewarded(claim.id, claim, True)) for claim in made)
            outcomes.update(
                (claim.user_id, Rewarded(claim.id, claim, False)) for claim in batch.in_flight
            )
            users = []
            for user, error in batch.failed:
                if isinstance(error, _PASS_ON):
                    users.append(user)
                else:
                    outcomes[user] = error
        outcomes.update((user, Refused(Reason.OUT_OF_CODES)) for user in users)
        return outcomes

    def _settle_many(
        self,
        admitted: dict[str, asyncio.Future[Outcome]],
        issue: asyncio.Future[dict[str, Outcome | errors.VoucherdError]],
    ) -> None:
        failed = issue.cancelled() or issue.exception() is not None
        outcomes = {} if failed else issue.result()
        if failed:
            log.error("campaign %d: a batch of rewards stopped early", self.info.id)
        for user_id, future in admitted.items():
            me = identity(user_id, "")
            del self._in_flight[me]
            outcome = outcomes.get(user_id)
            if isinstance(outcome, Rewarded | Refused):
                self._count(me, user_id, outcome)
                future.set_result(outcome)
            else:
                self._count(me, user_id, None)
                future.set_exception(
                    outcome or errors.StorageUnavailable("the reward was not written")
                )

    # -- changes to the campaign ---------------------------------------------------------------

    async def receive(self, batch: list[Envelope[Message]]) -> None:
        for envelope in batch:
            try:
                envelope.reply(await self._change(envelope.message))
            except errors.VoucherdError as exc:
                envelope.fail(exc)

    async def _change(self, message: Message) -> CampaignInfo:
        info, now = self.info, clock.now()
        if isinstance(message, Transition):
            previous = info.check(message.action, now)
            changes: dict[str, Any] = {"stored_status": STORED_AFTER[message.action]}
            after = info.replace(**changes).status(now)
            data = events.status_changed("campaign", info.id, previous.value, after.value)
            written: tuple[Events, ...] = (
                Events([Event.of(events.CAMPAIGN_STATUS_CHANGED, data, now)]),
            )
        else:
            if info.status(now) is CampaignStatus.ENDED:
                raise errors.Conflict(f"campaign {info.id} has ended: it can no longer be edited")
            changes = dict(message.changes)
            if "lists" in changes:
                self.campaigns.check_lists(changes["lists"], already=info.lists)
            written = ()
        changes["updated_at"] = now
        await self.campaigns.journal.write(_update(info.id, changes), *written)
        self.info = info.replace(**changes)
        if "lists" in changes:
            self.campaigns.map(info.id, info.lists, self.info.lists)
        return self.info


def _repeat(outcome: Outcome) -> Outcome:
    """What a repeat of a request answered meanwhile gets: the same reward, as a repeat."""
    return outcome._replace(created=False) if isinstance(outcome, Rewarded) else outcome


class Campaigns:
    """Every campaign, and their creation; lists learn which campaigns map them."""

    def __init__(self, journal: Journal, directory: Directory) -> None:
        self.journal = journal
        self.directory = directory
        self._campaigns: dict[int, Campaign] = {}
        self._last_id = 0

    def load(self, recovered: dict[int, RecoveredCampaign], last_id: int) -> None:
        self._last_id = last_id
        for state in recovered.values():
            self._add(Campaign(state.info, self, state.rewards, state.per_user))

    def _add(self, campaign: Campaign) -> None:
        self._campaigns[campaign.info.id] = campaign
        campaign.start()

    async def stop(self) -> None:
        await asyncio.gather(*(campaign.stop() for campaign in self._campaigns.values()))

    def __iter__(self) -> Iterator[Campaign]:
        return iter(self._campaigns.values())

    def get(self, campaign_id: int) -> Campaign:
        campaign = self._campaigns.get(campaign_id)
        if campaign is None:
            raise errors.NotFound(f"campaign {campaign_id} does not exist")
        return campaign

    def check_lists(self, list_ids: Sequence[int], already: Sequence[int] = ()) -> None:
        """Only active, unexpired lists can be mapped; lists mapped before may stay whatever
        their state (the campaign passes over them)."""
        now = clock.now()
        for list_id in list_ids:
            info = self.directory.actor(list_id).info
            if list_id not in already and info.status(now) is not Status.ACTIVE:
                raise errors.ListNotActive(
                    f"list {list_id} is {info.status(now)}: only active lists can be mapped"
                )

    async def create(self, info: CampaignInfo) -> Campaign:
        self.check_lists(info.lists)
        self._last_id += 1
        info.id = self._last_id
        written = self.journal.submit([Rows(INSERT_CAMPAIGN, [info.row()])])
        campaign = Campaign(info, self)

        def register(done: asyncio.Future[Any]) -> None:
            # Registered once written, even if the request was cancelled meanwhile.
            if not done.cancelled() and done.exception() is None:
                self._add(campaign)
                self.map(info.id, (), info.lists)

        written.add_done_callback(register)
        await asyncio.shield(written)
        return campaign

    def map(self, campaign_id: int, before: Sequence[int], after: Sequence[int]) -> None:
        """Keep each list's `campaigns` field in step with the campaign's lists."""
        for list_id in set(before) - set(after):
            mapped = self.directory.actor(list_id).info.campaigns
            if campaign_id in mapped:
                mapped.remove(campaign_id)
        for list_id in after:
            mapped = self.directory.actor(list_id).info.campaigns
            if campaign_id not in mapped:
                mapped.append(campaign_id)


def _update(campaign_id: int, changes: dict[str, Any]) -> Rows:
    """An UPDATE of the changed columns only."""
    stored = stored_values(changes)
    assignments = ", ".join(f"{column} = ?" for column in stored)
    return Rows(
        f"UPDATE campaigns SET {assignments} WHERE id = ?", [(*stored.values(), campaign_id)]
    )
