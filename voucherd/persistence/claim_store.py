"""Reading claims back by id. A claim is stored alone, as a row of `claims`, or in a run of
claims made together, as an element of a row of `claim_runs` (see the schema): a run holds the ids
from its `first_id` to `first_id + count - 1`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Literal

from voucherd.claims import RUN_COLUMNS, SELECT_CLAIM, Claim, ClaimRun

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
    run: ClaimRun | None = None
    for claim_id in wanted:
        if claim_id in alone:
            continue
        if run is None or claim_id not in run.ids():
            # The run that holds this id, if any: ids are sorted, so each run is read once.
            row = db.execute(_RUN_AT, (claim_id,)).fetchone()
            run = None if row is None else ClaimRun.from_row(row)
        if run is not None and claim_id in run.ids():
            found.append(run.claim(claim_id - run.first_id))
    found.sort()
    return found


def read_runs(
    db: sqlite3.Connection, column: Literal["list_id", "campaign_id"], value: int
) -> Iterator[ClaimRun]:
    """The runs of one list or one campaign, in id order, each decoded whole by orjson:
    element by element in SQL (json_each), a million claims took seconds."""
    for row in db.execute(
        f"SELECT {', '.join(RUN_COLUMNS)} FROM claim_runs WHERE {column} = ? ORDER BY first_id",
        (value,),
    ):
        yield ClaimRun.from_row(row)
