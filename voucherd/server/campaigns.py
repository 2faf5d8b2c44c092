"""Handlers for campaigns: create, read, edit, pause/resume/end, rewards, template previews."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from voucherd import clock, errors, wire
from voucherd.actors.campaign import (
    BatchAnswer,
    Campaign,
    Change,
    Refused,
    Rewarded,
    Transition,
)
from voucherd.campaigns import (
    MAX_LISTS,
    MAX_NAME,
    CampaignAction,
    CampaignInfo,
    CampaignStatus,
    Qualification,
)
from voucherd.claims import Claim
from voucherd.server.claims import batch_users, read_claims, user_and_key
from voucherd.server.inputs import json_body, path_id, required_text, string, timestamp
from voucherd.server.keys import BUDGETS, CAMPAIGNS, DIRECTORY, JOURNAL, METRICS, SETTINGS
from voucherd.templates import Template

MAX_EVENT_BYTES = 16 * 1024


# -- reading campaign fields -------------------------------------------------------------------


def _lists(value: Any) -> tuple[int, ...]:
    if isinstance(value, list):
        # JSON has one kind of number: 12.0 is the id 12, as a count reads it.
        value = [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_LISTS
        or not all(isinstance(item, int) and not isinstance(item, bool) for item in value)
    ):
        raise errors.InvalidRequest(f"lists must be a list of 1 to {MAX_LISTS} list ids")
    if len(set(value)) != len(value):
        raise errors.InvalidRequest("lists must not name a list twice")
    return tuple(value)


def _limit(value: Any, name: str, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**53:
        raise errors.InvalidRequest(
            f"{name} must be a whole number ≥ 1{' or null' if optional else ''}"
        )
    return value


def _template(value: Any) -> Template | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise errors.InvalidRequest("message_template must be a string or null")
    return Template.checked(value)


# Each field a campaign is created or edited with: how it is read, and the CampaignInfo field.
_FIELDS: dict[str, tuple[str, Any]] = {
    "name": ("name", lambda v: string(v, "name", max_length=MAX_NAME)),
    "lists": ("lists", _lists),
    "max_codes_per_user": (
        "max_codes_per_user",
        lambda v: _limit(v, "max_codes_per_user", optional=False),
    ),
    "max_codes_per_campaign": (
        "max_codes_per_campaign",
        lambda v: _limit(v, "max_codes_per_campaign", optional=True),
    ),
    "starts_at": ("starts_at", lambda v: timestamp({"starts_at": v}, "starts_at", required=False)),
    "ends_at": ("ends_at", lambda v: timestamp({"ends_at": v}, "ends_at", required=False)),
    "qualification": ("qualification", Qualification.parse),
    "message_template": ("template", _template),
}


def _read_fields(body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - set(_FIELDS)
    if unknown:
        # Not repeated: whatever was sent may be a secret pasted in the wrong place.
        raise errors.InvalidRequest(
            f"the body holds {len(unknown)} unknown field(s); allowed: {', '.join(_FIELDS)}"
        )
    return {_FIELDS[name][0]: _FIELDS[name][1](value) for name, value in body.items()}


def _check_window(starts_at: float | None, ends_at: float | None) -> None:
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise errors.InvalidRequest("ends_at must be later than starts_at")


def _campaign(request: web.Request) -> Campaign:
    campaign_id = path_id(request, "campaign_id", "campaign")
    return request.app[CAMPAIGNS].get(campaign_id)


def _view(campaign: Campaign) -> dict[str, Any]:
    return campaign.info.view(campaign.issued)


# -- campaigns ---------------------------------------------------------------------------------


async def create_campaign(request: web.Request) -> web.Response:
    body = await json_body(request)
    required_text(body, "name", max_length=MAX_NAME)
    if "lists" not in body:
        raise errors.InvalidRequest("lists is required")
    fields = _read_fields(body)
    _check_window(fields.get("starts_at"), fields.get("ends_at"))
    now = clock.now()
    info = CampaignInfo(
        id=0,
        name=fields["name"],
        lists=fields["lists"],
        max_codes_per_user=fields.get("max_codes_per_user") or 1,
        max_codes_per_campaign=fields.get("max_codes_per_campaign"),
        starts_at=fields.get("starts_at"),
        ends_at=fields.get("ends_at"),
        qualification=fields.get("qualification"),
        template=fields.get("template"),
        stored_status=CampaignStatus.RUNNING,
        created_at=now,
        updated_at=now,
    )
    campaign = await request.app[CAMPAIGNS].create(info)
    return wire.response(_view(campaign), status=201)


async def find_campaigns(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in CampaignStatus.__members__.values():
        raise errors.InvalidRequest("status must be one of scheduled, running, paused, ended")
    now = clock.now()
    found = [
        campaign
        for campaign in request.app[CAMPAIGNS]
        if status is None or campaign.info.status(now) == status
    ]
    return wire.response({"campaigns": [_view(campaign) for campaign in found]})


async def get_campaign(request: web.Request) -> web.Response:
    return wire.response(_view(_campaign(request)))


async def edit_campaign(request: web.Request) -> web.Response:
    campaign = _campaign(request)
    body = await json_body(request)
    changes = _read_fields(body)
    if not changes:
        raise errors.InvalidRequest(f"send at least one of {', '.join(_FIELDS)}")
    if "name" in body and body["name"] is None:
        raise errors.InvalidRequest("name must be a string")
    _check_window(
        changes.get("starts_at", campaign.info.starts_at),
        changes.get("ends_at", campaign.info.ends_at),
    )
    info: CampaignInfo = await campaign.ask(Change(changes))
    return wire.response(info.view(campaign.issued))


def transition(action: CampaignAction) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        campaign = _campaign(request)
        info: CampaignInfo = await campaign.ask(Transition(action))
        return wire.response(info.view(campaign.issued))

    handle.__name__ = f"{action}_campaign"
    return handle


# -- rewards -----------------------------------------------------------------------------------


def _trigger(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise errors.InvalidRequest("event must be an object with a name and properties")
    name = string(value.get("name"), "event.name", max_length=200)
    properties = value.get("properties", {})
    if not isinstance(properties, dict):
        raise errors.InvalidRequest("event.properties must be an object")
    if len(wire.client_json(properties, "event.properties")) > MAX_EVENT_BYTES:
        raise errors.InvalidRequest(f"event.properties must be at most {MAX_EVENT_BYTES} bytes")
    return {"name": name, "properties": properties}


async def create_reward(request: web.Request) -> web.Response:
    started = time.perf_counter()
    campaign = _campaign(request)
    body = await json_body(request)
    user_id, key = user_and_key(body)
    metrics = request.app[METRICS]
    try:
        outcome = await campaign.reward(user_id, key, _trigger(body.get("event")))
    except errors.VoucherdError as exc:
        metrics.rewards.labels(exc.code).inc()
        raise
    metrics.reward_seconds.observe(time.perf_counter() - started)
    if not isinstance(outcome, Rewarded):
        metrics.rewards.labels(outcome.reason.value).inc()
        return wire.response({"rewarded": False, "reason": outcome.reason.value})
    metrics.rewards.labels("rewarded" if outcome.created else "repeated").inc()
    (claim,) = await _claims_of(request, [outcome])
    return wire.response(
        {"rewarded": True, "reward": _reward_view(request, claim)},
        status=201 if outcome.created else 200,
    )


async def create_rewards(request: web.Request) -> web.Response:
    campaign = _campaign(request)
    body = await json_body(request)
    users = batch_users(body, request.app[SETTINGS].max_batch_users)
    # Held until the reply is written (see create_claims).
    with request.app[BUDGETS].batch_users.hold(len(users)):
        answers = await campaign.reward_many(users)
        return await wire.sent(
            request, wire.response({"results": await _results(request, answers)})
        )


async def _results(request: web.Request, answers: list[BatchAnswer]) -> list[dict[str, Any]]:
    claims = iter(await _claims_of(request, [a for _, a in answers if isinstance(a, Rewarded)]))
    results: list[dict[str, Any]] = []
    counted = request.app[METRICS].rewards
    for user, answer in answers:
        if isinstance(answer, Rewarded):
            reward = _reward_view(request, next(claims))
            results.append({"user_id": user, "rewarded": True, "reward": reward})
            counted.labels("rewarded" if answer.created else "repeated").inc()
        elif isinstance(answer, Refused):
            results.append({"user_id": user, "rewarded": False, "reason": answer.reason.value})
            counted.labels(answer.reason.value).inc()
        else:
            results.append({"user_id": user, "rewarded": False, "error": answer.body()["error"]})
            counted.labels(answer.code).inc()
    return results


async def _claims_of(request: web.Request, rewarded: list[Rewarded]) -> list[Claim]:
    """The claims of these rewards, in the same order; earlier ones are read back."""
    earlier = [outcome.claim_id for outcome in rewarded if outcome.claim is None]
    found = {claim.id: claim for claim in await read_claims(request.app[JOURNAL], earlier)}
    return [outcome.claim or found[outcome.claim_id] for outcome in rewarded]


def _reward_view(request: web.Request, claim: Claim) -> dict[str, Any]:
    info = request.app[DIRECTORY].actor(claim.list_id).info
    return {
        "id": claim.id,
        "code": claim.code,
        "list_id": claim.list_id,
        "campaign_id": claim.campaign_id,
        "user_id": claim.user_id,
        "message": claim.message,
        "rewarded_at": clock.format_time(claim.claimed_at),
        "expires_at": clock.format_time(info.expires_at),
    }


# -- templates ---------------------------------------------------------------------------------


async def render_template(request: web.Request) -> web.Response:
    body = await json_body(request)
    source = body.get("template")
    if not isinstance(source, str):
        raise errors.InvalidRequest("template must be a string")
    event, profile = body.get("event", {}), body.get("profile")
    if not isinstance(event, dict) or not isinstance(profile, dict | None):
        raise errors.InvalidRequest("event and profile must be objects")
    trigger = _trigger(body.get("trigger"))
    return wire.response({"message": Template(source).preview(event, profile, trigger)})
