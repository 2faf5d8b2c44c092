"""Reading claims back by id. A claim is stored alone, as a row of `claims`, or in a batch
slice's run, as an element of a row of `claim_runs` (see the schema): a run holds the ids
from its `first_id` to `first_id + count - 1`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Literal, NamedTuple

import orjson

from voucherd.claims import RUN_COLUMNS, SELECT_CLAIM, Claim

# Ids a statement at most, far below SQLite's limit on parameters.
_PART = 500
_RUN_AT = (
    f"SELECT {', '.join(RUN_COLUMNS)} FROM claim_runs WHERE first_id <= ?"
    " ORDER BY first_id DESC LIMIT 1"
)


def find_claims(db: sqlite3.Connection, ids: Iterable[int]) -> list[Claim]:
    """The claims of these ids that are stored, in id order."""
    wanted = sorted(set(ids))
    found: list[Claim] = []
    for start in range(0, len(wanted), _PART):
        part = wanted[start : start + _PART]
        marks = ",".join("?" * len(part))
        rows = db.execute(f"{SELECT_CLAIM} WHERE id IN ({marks})", part).fetchall()
        found.extend(map(Claim.from_row, rows))
    alone = {claim.id for claim in found}
    end, run = 0, None
    for claim_id in wanted:
        if claim_id in alone:
            continue
        if claim_id >= end:
            # The run that holds this id, if any: ids are sorted, so each run is read once.
            row = db.execute(_RUN_AT, (claim_id,)).fetchone()
            if row is None:
                continue
            first_id, list_id, count, claimed_at, source, campaign_id, _, _, claims = row
            end, run = first_id + count, orjson.loads(claims)
        if run is None or claim_id >= end:
            continue
        users, code_ids, codes, messages = run
        at = claim_id - first_id
        user_id, code_id, code, message = users[at], code_ids[at], codes[at], messages[at]
        found.append(Claim(claim_id, list_id, user_id, "", code_id, code, claimed_at, source,
                           campaign_id, None, message))  # fmt: skip
    found.sort()
    return found


class Run(NamedTuple):
    """A run's claim ids, campaign, and the user and code id of each claim, in id order."""

    ids: range
    campaign_id: int | None
    users: list[str]
    code_ids: list[int]


def read_runs(
    db: sqlite3.Connection, column: Literal["list_id", "campaign_id"], value: int
) -> Iterator[Run]:
    """The runs of one list or one campaign, in id order, each decoded whole by orjson:
    element by element in SQL (json_each), a million claims took seconds."""
    for first_id, count, campaign_id, claims in db.execute(
        f"SELECT first_id, count, campaign_id, claims FROM claim_runs WHERE {column} = ?"
        " ORDER BY first_id",
        (value,),
    ):
        users, code_ids, _, _ = orjson.loads(claims)
        yield Run(range(first_id, first_id + count), campaign_id, users, code_ids)
