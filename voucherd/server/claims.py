"""Handlers for claims: one code for one user, a batch of users, and a user's voucher tray."""

from __future__ import annotations

import time
from bisect import bisect_right
from typing import Any

from aiohttp import web

from voucherd import clock, errors, wire
from voucherd.actors.voucher_list import (
    BatchOutcome,
    ClaimOutcome,
    ListActor,
    TakeCode,
    TakeCodes,
)
from voucherd.claims import (
    MAX_IDEMPOTENCY_KEY,
    MAX_METADATA_BYTES,
    MAX_USER_ID,
    Claim,
)
from voucherd.lists import ListInfo
from voucherd.persistence.claim_store import find_claims
from voucherd.persistence.journal import Journal
from voucherd.server.inputs import json_body, page, path_id, string, strings
from voucherd.server.keys import BUDGETS, DIRECTORY, JOURNAL, METRICS, SETTINGS
from voucherd.server.pieces import in_one_piece, pieces


async def create_claim(request: web.Request) -> web.Response:
    started = time.perf_counter()
    metrics = request.app[METRICS]
    list_id = path_id(request, "list_id", "list")
    actor = request.app[DIRECTORY].actor(list_id)
    body = await json_body(request)
    user_id, key = user_and_key(body)
    metadata = _metadata(body.get("metadata"))
    try:
        outcome: ClaimOutcome = await actor.ask(TakeCode(user_id, key, metadata))
    except errors.VoucherdError as exc:
        metrics.claims.labels(exc.code).inc()
        raise
    claim = outcome.claim or await _read_claim(request.app[JOURNAL], outcome.claim_id)
    (metrics.claims_created if outcome.created else metrics.claims_repeated).inc()
    metrics.claim_seconds.observe(time.perf_counter() - started)
    return wire.response(
        {"claim": claim.view(actor.info.expires_at)}, status=201 if outcome.created else 200
    )


def user_and_key(body: dict[str, Any]) -> tuple[str, str]:
    """Who a claim or a reward is for, and its idempotency key ("" when absent)."""
    user_id = string(body.get("user_id"), "user_id", max_length=MAX_USER_ID)
    key = body.get("idempotency_key")
    if key is None:
        return user_id, ""
    return user_id, string(key, "idempotency_key", max_length=MAX_IDEMPOTENCY_KEY, min_length=0)


def batch_users(body: dict[str, Any], limit: int) -> list[str]:
    """Whom a batch claim or a batch of rewards is for: 1 to `limit` user ids."""
    users = body.get("user_ids")
    if not isinstance(users, list) or not 1 <= len(users) <= limit:
        raise errors.InvalidRequest(f"user_ids must be a list of 1 to {limit} user ids")
    strings(users, "each user id", max_length=MAX_USER_ID)
    return users


def _metadata(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise errors.InvalidRequest("metadata must be a JSON object")
    text = wire.client_json(value, "metadata")
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise errors.InvalidRequest(f"metadata must be at most {MAX_METADATA_BYTES} bytes")
    return text


async def create_claims(request: web.Request) -> web.Response:
    list_id = path_id(request, "list_id", "list")
    actor = request.app[DIRECTORY].actor(list_id)
    body = await json_body(request)
    users = batch_users(body, request.app[SETTINGS].max_batch_users)
    # Held until the reply is written: a batch of 100,000 holds about 40 MiB until then.
    with request.app[BUDGETS].batch_users.hold(len(users)):
        outcome: BatchOutcome = await actor.ask(TakeCodes(users))
        return await wire.sent(request, await _batch_reply(request, actor, outcome))


async def _batch_reply(
    request: web.Request, actor: ListActor, outcome: BatchOutcome
) -> web.Response:
    repeats = await read_claims(request.app[JOURNAL], outcome.repeat_ids)
    expires_at = clock.format_time(actor.info.expires_at)
    shown = [view for run in outcome.runs for view in run.shown(expires_at)]
    shown += [claim.shown(expires_at) for claim in (*outcome.in_flight, *repeats)]
    metrics = request.app[METRICS]
    metrics.claims_created.inc(outcome.created)
    metrics.claims_repeated.inc(len(outcome.in_flight) + len(outcome.repeat_ids))
    retry_after = 0
    for _, error in outcome.failed:
        metrics.claims.labels(error.code).inc()
        if isinstance(error, errors.Overloaded):
            retry_after = max(retry_after, error.retry_after)
    # Users refused for overload may be sent again: the reply says when, as a 503 would.
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return wire.response(
        {
            "claims": shown,
            "failed": [
                {"user_id": user, "error": error.body()["error"]} for user, error in outcome.failed
            ],
        },
        headers=headers,
    )


async def _read_claim(journal: Journal, claim_id: int) -> Claim:
    found = await read_claims(journal, [claim_id])
    if not found:
        # The actor knows the claim, so it is committed; the reader must see it.
        raise errors.StorageUnavailable(f"claim {claim_id} could not be read back; retry")
    return found[0]


async def read_claims(journal: Journal, ids: list[int]) -> list[Claim]:
    """The claims of these ids, read on the reader's thread in one hop."""
    return await journal.read(find_claims, ids) if ids else []


async def user_vouchers(request: web.Request) -> web.Response:
    user_id = string(request.match_info["user_id"], "user_id", max_length=MAX_USER_ID)
    directory = request.app[DIRECTORY]
    ids: list[int] = []
    async for actors in pieces(directory):
        for actor in actors:
            keys = actor.claim_keys_of(user_id)
            if in_one_piece(keys):
                ids += actor.committed_claims(keys)
                continue
            # A user with very many keyed claims on one list: those too a piece at a time.
            async for part in pieces(keys):
                ids += actor.committed_claims(part)
    ids.sort()
    wanted = page(request)
    ids, more = wanted.cut(ids[bisect_right(ids, wanted.after) :])
    vouchers = []
    async for claims in pieces(await read_claims(request.app[JOURNAL], ids)):
        vouchers += [_voucher(claim, directory.actor(claim.list_id).info) for claim in claims]
    return wire.response({"vouchers": vouchers, "has_more": more})


def _voucher(claim: Claim, info: ListInfo) -> dict[str, Any]:
    return {
        "claim_id": claim.id,
        "code": claim.code,
        "list_id": claim.list_id,
        "partner": info.partner,
        "tag": info.tag,
        "name": info.name,
        "description": info.description,
        "expires_at": clock.format_time(info.expires_at),
        "claimed_at": clock.format_time(claim.claimed_at),
        "campaign_id": claim.campaign_id,
    }
