"""Start-up: rebuild every list's state from the database before serving.

Uploads cut off by a crash are failed and their codes dropped; then lists, counts, claims and the
packed code blocks are read back, the codes already claimed left out.
"""

from __future__ import annotations

import bisect
import logging
import operator
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice

from voucherd import clock, events, wire
from voucherd.campaigns import SELECT_CAMPAIGNS, CampaignInfo
from voucherd.claims import identity as identity_of
from voucherd.claims import keys_of
from voucherd.duplicates import Scope
from voucherd.lists import SELECT_LISTS, ClaimRate, ListInfo
from voucherd.persistence.claim_store import read_runs
from voucherd.pool import CodePool, StoredBlock, rebuild
from voucherd.statuses import Status
from voucherd.stream import FIRST_AND_LAST_SEQ, LAST_EVENT

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RecoveredList:
    info: ListInfo
    pool: CodePool = field(default_factory=CodePool)
    claims: dict[str, int] = field(default_factory=dict)
    keys_by_user: dict[str, list[str]] = field(default_factory=dict)
    uploads: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class RecoveredCampaign:
    info: CampaignInfo
    # Reward claim ids by (user, idempotency key), and rewards per user.
    rewards: dict[str, int] = field(default_factory=dict)
    per_user: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class Recovered:
    lists: dict[int, RecoveredList]
    max_list_id: int
    max_upload_id: int
    max_code_id: int
    max_claim_id: int
    campaigns: dict[int, RecoveredCampaign] = field(default_factory=dict)
    max_campaign_id: int = 0
    # The event stream: the oldest event kept and the last one written.
    first_seq: int = 1
    last_seq: int = 0
    last_event_time: float = 0.0


def fail_interrupted_uploads(db: sqlite3.Connection) -> int:
    rows = db.execute(
        "SELECT id, list_id, filename FROM uploads WHERE status = 'in_progress'"
    ).fetchall()
    if not rows:
        return 0
    last_seq, last_time = db.execute(LAST_EVENT).fetchone() or (0, None)
    # Event times never go back along the stream (see the journal's numbering).
    now = max(clock.now(), last_time or 0.0)
    db.execute("BEGIN IMMEDIATE")
    for upload_id, _, _ in rows:
        drop_upload_codes(db, upload_id)
    db.executemany(
        "UPDATE uploads SET status = 'failed', accepted = 0, error_code = 'interrupted',"
        " error_message = 'the server stopped before the upload finished', finished_at = ?"
        " WHERE id = ?",
        [(now, upload_id) for upload_id, _, _ in rows],
    )
    failed = [
        events.upload_failed(list_id, upload_id, filename, "interrupted", now)
        for upload_id, list_id, filename in rows
    ]
    db.executemany(
        "INSERT INTO events (seq, type, time, data) VALUES (?, ?, ?, ?)",
        [
            (last_seq + n, event.type, event.time, event.data.decode())
            for n, event in enumerate(failed, start=1)
        ],
    )
    db.execute("COMMIT")
    ids = [upload_id for upload_id, _, _ in rows]
    log.warning("marked %d interrupted upload(s) as failed", len(ids))
    return len(ids)


def drop_upload_codes(db: sqlite3.Connection, upload_id: int) -> list[StoredBlock]:
    """Delete the blocks of codes a failed upload had written so far, and return them as
    (first id, packed codes, width), so the code index can forget them too."""
    blocks: list[StoredBlock] = db.execute(
        "SELECT first_id, codes, width FROM code_blocks WHERE upload_id = ?", (upload_id,)
    ).fetchall()
    db.execute("DELETE FROM code_blocks WHERE upload_id = ?", (upload_id,))
    return blocks


_PLAIN = "idempotency_key = '' AND campaign_id IS NULL"
_CLAIMS_OF_LIST = (
    f"SELECT group_concat(user_id, char(30)) FILTER (WHERE {_PLAIN}),"
    f" json_group_array(id) FILTER (WHERE {_PLAIN}),"
    " group_concat(user_id || char(31) || idempotency_key || IFNULL(char(31) || campaign_id, ''),"
    f" char(30)) FILTER (WHERE NOT ({_PLAIN})),"
    f" json_group_array(id) FILTER (WHERE NOT ({_PLAIN}))"
    " FROM claims {how} WHERE list_id = ?"
)
# A list holding at least this share of the claims stored alone (not in runs) is read by
# scanning the whole table in order; a smaller one through its index, a row lookup per claim.
# A scan of a million claims costs about as much as 60,000 lookups, and at most this many lists
# can hold such a share, so recovery never scans the table more than that many times however
# many lists there are.
_SCAN_SHARE = 8


def recover(db: sqlite3.Connection) -> Recovered:
    """Runs on the writer's thread before the writer starts: one hop for the whole load."""
    started = time.perf_counter()
    fail_interrupted_uploads(db)
    lists: dict[int, RecoveredList] = {}
    # In id order: the directory keeps them so, and pages of lists rely on it.
    for row in db.execute(f"{SELECT_LISTS} ORDER BY id"):
        info = ListInfo(
            id=row[0],
            partner=row[1],
            tag=row[2],
            name=row[3],
            description=row[4],
            expires_at=row[5],
            stored_status=Status(row[6]),
            duplicate_scope=Scope(row[7]),
            low_stock_threshold=row[8],
            created_at=row[9],
            updated_at=row[10],
            expiry_warning=row[11],
            warned_expiry=row[12],
        )
        lists[info.id] = RecoveredList(info)

    accepted_by_upload: dict[int, int] = {}
    for list_id, upload_id, status, accepted in db.execute(
        "SELECT list_id, id, status, accepted FROM uploads"
        " WHERE status IN ('completed', 'withdrawn')"
    ):
        state = lists[list_id]
        state.uploads[upload_id] = status
        state.info.counts.uploaded += accepted
        accepted_by_upload[upload_id] = accepted

    # A list at a time, each column aggregated into one string by SQLite and split by C code:
    # a row at a time through Python, a million claims would cost more than the rest of
    # recovery. Keys hold no control characters, so \x1e separates them; ids come as a JSON
    # array, which orjson reads four times faster than int() reads them one by one. A
    # keyless direct claim's identity is its user id (see claims.identity); the others (keyed
    # claims, rewards) are few, and the tray also finds them by what follows the user id. A
    # list's code ids come first, through its index: they count its claims, which decide how
    # its claims are read (see _SCAN_SHARE). Then its runs of claims, each decoded whole by
    # orjson (claim_store.read_runs).
    taken: dict[int, list[int]] = {}
    for list_id in lists:
        (code_ids,) = db.execute(
            "SELECT json_group_array(code_id) FROM"
            " (SELECT code_id FROM claims WHERE list_id = ? ORDER BY code_id)",
            (list_id,),
        ).fetchone()
        taken[list_id] = wire.loads(code_ids)
    all_alone = sum(map(len, taken.values()))
    claim_ids_by_list: dict[int, list[int]] = {}
    for list_id, state in lists.items():
        scan = len(taken[list_id]) * _SCAN_SHARE >= all_alone
        how = "NOT INDEXED" if scan else "INDEXED BY claims_by_list"
        users, plain_json, identities, others_json = db.execute(
            _CLAIMS_OF_LIST.format(how=how), (list_id,)
        ).fetchone()
        claim_ids: list[int] = []
        if users is not None:
            keys = users.split("\x1e")
            claim_ids = wire.loads(plain_json)
            state.claims = dict(zip(keys, claim_ids, strict=True))
        if identities is not None:
            keys = identities.split("\x1e")
            others = wire.loads(others_json)
            state.claims.update(zip(keys, others, strict=True))
            claim_ids = claim_ids + others
            for identity in keys:
                user_id, _, suffix = identity.partition("\x1f")
                state.keys_by_user.setdefault(user_id, []).append(suffix)
        code_ids = taken[list_id]
        for run in read_runs(db, "list_id", list_id):
            state.claims.update(zip(keys_of(run.users, run.campaign_id), run.ids(), strict=True))
            if run.campaign_id is not None:
                # The tray finds rewards by what follows the user id.
                suffix = identity_of("", "", run.campaign_id)[1:]
                for user_id in run.users:
                    state.keys_by_user.setdefault(user_id, []).append(suffix)
            claim_ids.extend(run.ids())
            code_ids.extend(run.code_ids)
        # In the table's order already, nearly always, and runs' codes are taken in the pool's
        # order: then sorting is a pass or two.
        claim_ids.sort()
        code_ids.sort()
        claim_ids_by_list[list_id] = claim_ids
        state.info.counts.distributed = len(code_ids)
        if any(map(operator.eq, code_ids, islice(code_ids, 1, None))):
            # Only the claims stored alone have a unique index on their code.
            log.error("list %d: a code is named by two claims", list_id)

    # A withdrawn upload's withdrawn codes are those no claim names: counted from the claims
    # themselves, so no stored tally can drift from them.
    unclaimed = dict(accepted_by_upload)
    for list_id, upload_id, first_id, count in db.execute(
        "SELECT b.list_id, b.upload_id, b.first_id, b.count FROM code_blocks b"
        " JOIN uploads u ON u.id = b.upload_id WHERE u.status = 'withdrawn'"
    ):
        ids = taken.get(list_id, [])
        unclaimed[upload_id] -= bisect.bisect_left(ids, first_id + count) - bisect.bisect_left(
            ids, first_id
        )
    for state in lists.values():
        for upload_id, status in state.uploads.items():
            if status == "withdrawn":
                state.info.counts.withdrawn += unclaimed[upload_id]

    cursor = db.execute(
        "SELECT b.list_id, b.upload_id, b.first_id, b.count, b.codes, b.width FROM code_blocks b"
        " JOIN uploads u ON u.id = b.upload_id JOIN lists l ON l.id = b.list_id"
        " WHERE u.status = 'completed' AND l.status != 'archived' ORDER BY b.first_id"
    )
    while blocks := cursor.fetchmany(256):
        for list_id, upload_id, first_id, count, data, width in blocks:
            ids = taken.get(list_id, [])
            low = bisect.bisect_left(ids, first_id)
            high = bisect.bisect_left(ids, first_id + count)
            lists[list_id].pool.add(rebuild(upload_id, first_id, data, ids[low:high], width))
    cursor.close()

    for state in lists.values():
        if state.info.stored_status is Status.ARCHIVED:
            continue
        if state.pool.available != state.info.counts.available:
            log.error(
                "list %d: %d codes in the pool but the counts say %d available",
                state.info.id,
                state.pool.available,
                state.info.counts.available,
            )

    maxima = db.execute(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM lists),"
        " (SELECT COALESCE(MAX(id), 0) FROM uploads),"
        # Every stored code sits in a block; a failed upload's ids may be used again, but
        # never one a claim names.
        " (SELECT MAX(COALESCE((SELECT MAX(first_id + count - 1) FROM code_blocks), 0),"
        " COALESCE((SELECT MAX(code_id) FROM claims), 0),"
        " COALESCE((SELECT MAX(high_code) FROM claim_runs), 0))),"
        " (SELECT MAX(COALESCE((SELECT MAX(id) FROM claims), 0),"
        " COALESCE((SELECT first_id + count - 1 FROM claim_runs ORDER BY first_id DESC LIMIT 1),"
        " 0)))"
    )
    max_list, max_upload, max_code, max_claim = maxima.fetchone()
    log.info(
        "recovered %d lists, %d claims in %.2f s",
        len(lists),
        sum(len(c) for c in taken.values()),
        time.perf_counter() - started,
    )
    recount_claim_rates(db, lists, claim_ids_by_list, max_claim)
    recovered = Recovered(lists, max_list, max_upload, max_code, max_claim)
    recover_campaigns(db, recovered)
    first_seq, last_seq = db.execute(FIRST_AND_LAST_SEQ).fetchone()
    recovered.last_seq = last_seq or 0
    if last_seq is not None:
        (_, recovered.last_event_time) = db.execute(LAST_EVENT).fetchone()
    recovered.first_seq = first_seq or recovered.last_seq + 1
    return recovered


def recount_claim_rates(
    db: sqlite3.Connection,
    lists: dict[int, RecoveredList],
    claim_ids: dict[int, list[int]],
    last: int,
) -> None:
    """Each list's claims per minute over the last window, from the claims themselves. Claim
    ids grow with time, so a binary search over ids finds where each minute of the window
    begins, with no index on time; each list's claim ids, sorted, are then counted between
    those bounds, with no claim read again."""
    now = clock.now()
    since = now - (ClaimRate.WINDOW + 1) * 60
    minutes = range(int(since // 60), int(now // 60) + 1)
    starts = [_first_claim_at(db, max(since, minute * 60.0), last) for minute in minutes]
    ends = [*starts[1:], last + 1]
    for list_id, ids in claim_ids.items():
        rate = lists[list_id].info.rate
        for minute, start, end in zip(minutes, starts, ends, strict=True):
            count = bisect.bisect_left(ids, end) - bisect.bisect_left(ids, start)
            if count:
                rate.record(minute * 60, count)


def _first_claim_at(db: sqlite3.Connection, moment: float, last: int) -> int:
    """The id of the first claim made at `moment` or later; last + 1 if none was."""
    low, high = 1, last + 1
    while low < high:
        middle = (low + high) // 2
        when = _time_from(db, middle)
        if when is None or when >= moment:
            high = middle
        else:
            low = middle + 1
    return low


def _time_from(db: sqlite3.Connection, claim_id: int) -> float | None:
    """When the first claim numbered `claim_id` or above was made, whether stored alone or in
    a run; None if there is none."""
    found = []
    alone = db.execute(
        "SELECT id, claimed_at FROM claims WHERE id >= ? ORDER BY id LIMIT 1", (claim_id,)
    ).fetchone()
    if alone is not None:
        found.append(alone)
    run = db.execute(
        "SELECT first_id, count, claimed_at FROM claim_runs WHERE first_id <= ?"
        " ORDER BY first_id DESC LIMIT 1",
        (claim_id,),
    ).fetchone()
    if run is not None and run[0] + run[1] > claim_id:
        found.append((claim_id, run[2]))
    else:
        after = db.execute(
            "SELECT first_id, claimed_at FROM claim_runs WHERE first_id > ?"
            " ORDER BY first_id LIMIT 1",
            (claim_id,),
        ).fetchone()
        if after is not None:
            found.append(after)
    return float(min(found)[1]) if found else None


def recover_campaigns(db: sqlite3.Connection, recovered: Recovered) -> None:
    """Campaigns, with their rewards counted from their claims: the limits hold across
    restarts because nothing but the claims themselves is counted."""
    for row in db.execute(SELECT_CAMPAIGNS):
        info = CampaignInfo.from_row(tuple(row))
        campaign = recovered.campaigns[info.id] = RecoveredCampaign(info)
        identities, claim_ids, users = db.execute(
            "SELECT group_concat(iif(idempotency_key = '', user_id,"
            " user_id || char(31) || idempotency_key), char(30)),"
            " json_group_array(id), group_concat(user_id, char(30))"
            " FROM claims WHERE campaign_id = ?",
            (info.id,),
        ).fetchone()
        if identities is not None:
            campaign.rewards = dict(
                zip(identities.split("\x1e"), wire.loads(claim_ids), strict=True)
            )
            campaign.per_user = Counter(users.split("\x1e"))
        for run in read_runs(db, "campaign_id", info.id):
            # Runs hold keyless rewards only, each keyed by its user id.
            campaign.rewards.update(zip(run.users, run.ids(), strict=True))
            campaign.per_user.update(run.users)
        for list_id in info.lists:
            if list_id in recovered.lists:
                recovered.lists[list_id].info.campaigns.append(info.id)
    (recovered.max_campaign_id,) = db.execute(
        "SELECT COALESCE(MAX(id), 0) FROM campaigns"
    ).fetchone()
