"""A claim: one code given to one (list, user, idempotency key), and how the API shows it."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby, repeat
from typing import Any, NamedTuple

import orjson

from voucherd import clock, wire

MAX_USER_ID = 256
MAX_IDEMPOTENCY_KEY = 256
MAX_METADATA_BYTES = 4096

CLAIM_COLUMNS = (
    "id",
    "list_id",
    "user_id",
    "idempotency_key",
    "code_id",
    "code",
    "claimed_at",
    "source",
    "campaign_id",
    "metadata",
    "message",
)
SELECT_CLAIM = (
    "SELECT id, list_id, user_id, idempotency_key, code_id, code, claimed_at, source,"
    " campaign_id, metadata, message FROM claims"
)
RUN_COLUMNS = (
    "first_id",
    "list_id",
    "count",
    "claimed_at",
    "source",
    "campaign_id",
    "low_code",
    "high_code",
    "claims",
)


def identity(user_id: str, idempotency_key: str, campaign_id: int | None = None) -> str:
    """The in-memory key of a claim within its list. The separator cannot occur in JSON-borne
    ids that passed validation, so two different pairs never share a key. A campaign's rewards
    are keyed apart from direct claims and from other campaigns' rewards. The usual claim, with
    no key and no campaign, is keyed by its user id alone: no string is made for it."""
    if campaign_id is None:
        return f"{user_id}\x1f{idempotency_key}" if idempotency_key else user_id
    return f"{user_id}\x1f{idempotency_key}\x1f{campaign_id}"


def keys_of(user_ids: list[str], campaign_id: int | None) -> list[str]:
    """The keys of keyless claims, a batch's or a run's, for these users: for direct claims
    the user ids themselves, no string made."""
    suffix = identity("", "", campaign_id)
    return list(map(operator.add, user_ids, repeat(suffix))) if suffix else user_ids


class Claim(NamedTuple):
    """Immutable, and a tuple rather than a frozen dataclass: one is made per claim, and a
    frozen dataclass costs several times more to build."""

    id: int
    list_id: int
    user_id: str
    idempotency_key: str
    code_id: int
    code: str
    claimed_at: float
    source: str = "API"
    campaign_id: int | None = None
    # The caller's JSON object, kept as JSON text.
    metadata: str | None = None
    # A campaign's rendered message to the user.
    message: str | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Claim:
        return cls._make(row)

    def view(self, expires_at: float) -> dict[str, Any]:
        return self.shown(clock.format_time(expires_at))

    def shown(self, expires_at: str) -> dict[str, Any]:
        """The claim as the API shows it, its list's expiry already rendered (a batch's
        claims share one)."""
        return {
            "id": self.id,
            "list_id": self.list_id,
            "user_id": self.user_id,
            "idempotency_key": self.idempotency_key,
            "code": self.code,
            "claimed_at": clock.format_time(self.claimed_at),
            "expires_at": expires_at,
            "source": self.source,
            "campaign_id": self.campaign_id,
            "metadata": wire.loads(self.metadata) if self.metadata else {},
        }


@dataclass(slots=True, eq=False)
class ClaimRun:
    """Claims made together, as columns: a batch slice's, with no object a claim, because a
    batch is bound by its Python per claim; or a stretch of a list actor's turn of single
    claims (see stored_as). Their ids run on from `first_id`; they share a list, a time, a
    source and a campaign, and have no idempotency key or metadata."""

    first_id: int
    list_id: int
    claimed_at: float
    source: str
    campaign_id: int | None
    users: list[str]
    code_ids: list[int]
    codes: list[str]
    messages: list[str | None]

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ClaimRun:
        """The run a row of `claim_runs` (RUN_COLUMNS) stores."""
        first_id, list_id, _, claimed_at, source, campaign_id, _, _, claims = row
        users, code_ids, codes, messages = orjson.loads(claims)
        return cls(first_id, list_id, claimed_at, source, campaign_id, users, code_ids, codes,
                   messages)  # fmt: skip

    def __len__(self) -> int:
        return len(self.users)

    def ids(self) -> range:
        return range(self.first_id, self.first_id + len(self.users))

    def claim(self, index: int) -> Claim:
        return Claim(self.first_id + index, self.list_id, self.users[index], "",
                     self.code_ids[index], self.codes[index], self.claimed_at, self.source,
                     self.campaign_id, None, self.messages[index])  # fmt: skip

    def claims(self) -> list[Claim]:
        count = len(self.users)
        return list(map(
            Claim, self.ids(), repeat(self.list_id, count), self.users, repeat(""),
            self.code_ids, self.codes, repeat(self.claimed_at), repeat(self.source),
            repeat(self.campaign_id), repeat(None), self.messages,
        ))  # fmt: skip

    def shown(self, expires_at: str) -> list[dict[str, Any]]:
        """Each claim as Claim.shown() shows it, for encoding: the views share what the run's
        claims share, even their empty metadata object. Each is a copy of one view with its
        id, user and code put in: copying a dictionary's table costs a third less than
        building it key by key, and the keys keep their order."""
        shared = {"id": 0, "list_id": self.list_id, "user_id": "", "idempotency_key": "",
                  "code": "", "claimed_at": clock.format_time(self.claimed_at),
                  "expires_at": expires_at, "source": self.source,
                  "campaign_id": self.campaign_id, "metadata": {}}  # fmt: skip
        return [
            {**shared, "id": claim_id, "user_id": user_id, "code": code}
            for claim_id, user_id, code in zip(self.ids(), self.users, self.codes, strict=True)
        ]

    def row(self) -> tuple[Any, ...]:
        """The row of `claim_runs` that stores the run (see the schema)."""
        claims = orjson.dumps((self.users, self.code_ids, self.codes, self.messages))
        return (self.first_id, self.list_id, len(self.users), self.claimed_at, self.source,
                self.campaign_id, min(self.code_ids), max(self.code_ids),
                claims.decode())  # fmt: skip


def stored_as(claims: Sequence[Claim]) -> tuple[list[ClaimRun], list[Claim]]:
    """How the journal stores the claims of one turn of a list actor, numbered in order and
    made at one time: each stretch of claims without idempotency key or metadata that share a
    source and a campaign as one run, the others a row each. A run is one row and two index
    entries however many claims it holds; a row is three index entries a claim."""
    runs: list[ClaimRun] = []
    alone: list[Claim] = []
    for (plain, source, campaign_id), stretch in groupby(claims, _how_stored):
        if not plain:
            alone.extend(stretch)
            continue
        members = list(stretch)
        first = members[0]
        users, code_ids = [c.user_id for c in members], [c.code_id for c in members]
        codes, messages = [c.code for c in members], [c.message for c in members]
        run = ClaimRun(first.id, first.list_id, first.claimed_at, source, campaign_id, users,
                       code_ids, codes, messages)  # fmt: skip
        runs.append(run)
    return runs, alone


def _how_stored(claim: Claim) -> tuple[bool, str, int | None]:
    plain = not claim.idempotency_key and claim.metadata is None
    return plain, claim.source, claim.campaign_id
