"""Campaigns at work: admitting rewards within their limits, and taking codes from their lists.

A reward is admitted in one synchronous step — status, qualification, idempotency, the user's
and the campaign's limits, then the reservation — with no await in between. On one event loop
nothing else runs during that step, so it is as serialized as an actor's turn, without a
mailbox hop: however many rewards arrive at once, the limits hold exactly. Reservations count
as rewards until their claim is committed or refused, so a limit is never exceeded, and
recovery counts rewards from the claims themselves, so it holds across restarts.

The code itself comes from the campaign's lists, tried in fallback order: a list that is
exhausted, paused, expired or archived passes the request on to the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

from voucherd import clock, errors, events
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


@dataclass(slots=True)
class BatchResult:
    rewarded: list[Rewarded] = field(default_factory=list)
    refused: list[tuple[str, Reason]] = field(default_factory=list)
    failed: list[tuple[str, errors.VoucherdError]] = field(default_factory=list)


class Campaign:
    def __init__(
        self,
        info: CampaignInfo,
        directory: Directory,
        rewards: dict[str, int] | None = None,
        per_user: Counter[str] | None = None,
    ) -> None:
        self.info = info
        self.directory = directory
        # Committed rewards by identity(user, idempotency key); rewards per user and in all,
        # reservations included.
        self._rewards: dict[str, int] = rewards or {}
        self._per_user: Counter[str] = per_user or Counter()
        self._taken = sum(self._per_user.values())
        self.issued = self._taken
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
            outcome = await asyncio.shield(earlier)
            return outcome._replace(created=False) if isinstance(outcome, Rewarded) else outcome
        reason = self._admit(user_id, trigger)
        if reason is not None:
            return Refused(reason)
        self._reserve(user_id)
        # The code is taken in a task of its own: a client that goes away must not leave a
        # reservation behind, nor a committed reward uncounted.
        issue = asyncio.ensure_future(self._issue(me, user_id, key, trigger))
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
        if self._per_user[user_id] >= self.info.max_codes_per_user:
            return Reason.USER_LIMIT_REACHED
        cap = self.info.max_codes_per_campaign
        if cap is not None and self._taken >= cap:
            return Reason.CAMPAIGN_LIMIT_REACHED
        return None

    def _reserve(self, user_id: str) -> None:
        self._per_user[user_id] += 1
        self._taken += 1

    def _release(self, user_id: str) -> None:
        self._per_user[user_id] -= 1
        if not self._per_user[user_id]:
            del self._per_user[user_id]
        self._taken -= 1

    async def _issue(
        self, me: str, user_id: str, key: str, trigger: dict[str, Any] | None
    ) -> Outcome:
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
        if isinstance(outcome, Rewarded):
            self._rewards[me] = outcome.claim_id
            self.issued += 1
        else:
            self._release(user_id)

    def _renderer(self, trigger: dict[str, Any] | None) -> Render | None:
        template = self.info.template
        if template is None:
            return None
        return partial(template.render, trigger=trigger)

    # -- a segment at once ---------------------------------------------------------------------

    async def reward_many(self, user_ids: Sequence[str]) -> BatchResult:
        """Reward each user of a segment once (no idempotency keys): a segment's users have
        qualified by belonging to it, so the live-behaviour rule is not asked."""
        result = BatchResult()
        if self.info.status() is not CampaignStatus.RUNNING:
            result.refused = [(u, Reason.CAMPAIGN_NOT_RUNNING) for u in dict.fromkeys(user_ids)]
            return result
        admitted: list[str] = []
        for user_id in dict.fromkeys(user_ids):
            me = identity(user_id, "")
            claim_id = self._rewards.get(me)
            if claim_id is not None:
                result.rewarded.append(Rewarded(claim_id, None, created=False))
            elif me in self._in_flight:
                result.failed.append(
                    (user_id, errors.Conflict("a reward for this user is in progress; retry"))
                )
            elif (reason := self._over_limit(user_id)) is not None:
                result.refused.append((user_id, reason))
            else:
                self._reserve(user_id)
                admitted.append(user_id)
        if admitted:
            issue = asyncio.ensure_future(self._issue_many(admitted, result))
            issue.add_done_callback(partial(self._settle_many, admitted, result))
            await asyncio.shield(issue)
        return result

    async def _issue_many(self, users: list[str], result: BatchResult) -> None:
        render = self._renderer(None)
        for list_id in self.info.lists:
            if not users:
                return
            take = TakeCodes(users, "Campaign", self.info.id, render)
            outcome: BatchOutcome = await self.directory.actor(list_id).ask(take)
            result.rewarded.extend(Rewarded(claim.id, claim, True) for claim in outcome.claims)
            # Repeats: the list knew the reward (it was made before this process counted it).
            result.rewarded.extend(Rewarded(i, None, False) for i in outcome.repeat_ids)
            users = [user for user, error in outcome.failed if isinstance(error, _PASS_ON)]
            result.failed.extend(
                (user, error) for user, error in outcome.failed if not isinstance(error, _PASS_ON)
            )
        result.refused.extend((user, Reason.OUT_OF_CODES) for user in users)

    def _settle_many(
        self, users: list[str], result: BatchResult, issue: asyncio.Future[None]
    ) -> None:
        given: set[str] = set()
        for rewarded in result.rewarded:
            if rewarded.claim is not None:
                given.add(rewarded.claim.user_id)
                self._rewards[identity(rewarded.claim.user_id, "")] = rewarded.claim_id
                self.issued += 1
        for user_id in users:
            if user_id not in given:
                self._release(user_id)
        if issue.cancelled() or issue.exception() is not None:
            log.error("campaign %d: a batch of rewards stopped early", self.info.id)


class Campaigns:
    """Every campaign, their creation and changes; lists learn which campaigns map them."""

    def __init__(self, journal: Journal, directory: Directory) -> None:
        self.journal = journal
        self.directory = directory
        self._campaigns: dict[int, Campaign] = {}
        self._last_id = 0

    def load(self, recovered: dict[int, RecoveredCampaign], last_id: int) -> None:
        self._last_id = last_id
        for state in recovered.values():
            self._campaigns[state.info.id] = Campaign(
                state.info, self.directory, state.rewards, state.per_user
            )

    def __iter__(self) -> Any:
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
        campaign = Campaign(info, self.directory)
        written = self.journal.submit([Rows(INSERT_CAMPAIGN, [info.row()])])

        def register(done: asyncio.Future[Any]) -> None:
            # Registered once written, even if the request was cancelled meanwhile.
            if not done.cancelled() and done.exception() is None:
                self._campaigns[info.id] = campaign
                self._map(info.id, (), info.lists)

        written.add_done_callback(register)
        await asyncio.shield(written)
        return campaign

    async def edit(self, campaign: Campaign, changes: dict[str, Any]) -> CampaignInfo:
        info = campaign.info
        if info.status() is CampaignStatus.ENDED:
            raise errors.Conflict(f"campaign {info.id} has ended: it can no longer be edited")
        if "lists" in changes:
            self.check_lists(changes["lists"], already=info.lists)
        changes["updated_at"] = clock.now()
        await self.journal.write(_update(info.id, changes))
        # Applied field by field to the campaign as it is now, in commit order: two edits of
        # different fields made at once both stay.
        before = campaign.info.lists
        campaign.info = campaign.info.replace(**changes)
        if "lists" in changes:
            self._map(info.id, before, campaign.info.lists)
        return campaign.info

    async def transition(self, campaign: Campaign, action: CampaignAction) -> CampaignInfo:
        now = clock.now()
        previous = campaign.info.check(action, now)
        changes = {"stored_status": STORED_AFTER[action], "updated_at": now}
        after = campaign.info.replace(**changes).status(now)
        data = events.status_changed("campaign", campaign.info.id, previous.value, after.value)
        await self.journal.write(
            _update(campaign.info.id, changes),
            Events([Event.of(events.CAMPAIGN_STATUS_CHANGED, data, now)]),
        )
        campaign.info = campaign.info.replace(**changes)
        return campaign.info

    def _map(self, campaign_id: int, before: Sequence[int], after: Sequence[int]) -> None:
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
