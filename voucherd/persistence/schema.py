"""The journal's database layout.

Codes are stored twice on purpose: here as packed blocks in upload order, so a restart reloads
millions of codes as a few thousand blobs instead of millions of rows, and in the code index
(`code_index.py`, a file of its own), keyed by the code for the duplicate checks. A code's state
is never updated in place: it is distributed when a claim names it, withdrawn when its upload is
withdrawn and no claim names it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import orjson

VERSION = 8

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lists (
    id INTEGER PRIMARY KEY,
    partner TEXT NOT NULL,
    tag TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL,
    duplicate_scope TEXT NOT NULL,
    low_stock_threshold INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expiry_warning TEXT,
    warned_expiry REAL
);
-- A (partner, tag) pair names one list among the non-archived ones.
CREATE UNIQUE INDEX IF NOT EXISTS lists_by_tag ON lists (partner, tag) WHERE status != 'archived';
CREATE TABLE IF NOT EXISTS uploads (
    id INTEGER PRIMARY KEY,
    list_id INTEGER NOT NULL,
    filename TEXT,
    status TEXT NOT NULL,
    rows INTEGER NOT NULL DEFAULT 0,
    accepted INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    withdrawn INTEGER NOT NULL DEFAULT 0,
    errors BLOB,
    error_code TEXT,
    error_message TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    uploaded_by TEXT
);
CREATE INDEX IF NOT EXISTS uploads_by_list ON uploads (list_id);
-- `width` is the length all the block's codes share, packed end to end; 0 when each code
-- ends with a newline (pool.pack).
CREATE TABLE IF NOT EXISTS code_blocks (
    first_id INTEGER PRIMARY KEY,
    upload_id INTEGER NOT NULL,
    list_id INTEGER NOT NULL,
    count INTEGER NOT NULL,
    codes BLOB NOT NULL,
    width INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS upload_errors (
    upload_id INTEGER NOT NULL,
    line INTEGER NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS upload_errors_by_upload ON upload_errors (upload_id, line);
CREATE TABLE IF NOT EXISTS claims (
    id INTEGER PRIMARY KEY,
    list_id INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    code_id INTEGER NOT NULL,
    code TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    source TEXT NOT NULL,
    campaign_id INTEGER,
    metadata TEXT,
    message TEXT
);
-- Claims stored alone: those with an idempotency key or metadata (the others are in runs, see
-- claim_runs). The database refuses what the actors must never do: one code in two claims.
-- Claims are found by user through the list actors' memory, not an index: an index keyed by
-- user id takes a random page write per claim and would cut the journal's throughput by three
-- quarters.
CREATE UNIQUE INDEX IF NOT EXISTS claims_by_code ON claims (code_id);
-- Recovery reads each list's claims; within a list code ids grow, so this index only appends.
CREATE INDEX IF NOT EXISTS claims_by_list ON claims (list_id, code_id);
-- Campaigns rebuild their reward counts from their claims at start-up.
CREATE INDEX IF NOT EXISTS claims_by_campaign ON claims (campaign_id) WHERE campaign_id IS NOT NULL;
-- Claims made together, stored as one row: a batch claim's slice of up to 1,000 claims, or a
-- stretch of a list actor's turn of single claims (claims.stored_as). They share a list, a time,
-- a source and a campaign, have no idempotency key or metadata, and are numbered on from
-- `first_id`. `claims` holds them as a JSON array of four columns, [[user_id…], [code_id…],
-- [code…], [message…]], in id order: decoded whole, columns cost far less than an array a
-- claim. `low_code` and `high_code` bound its code ids. A row a claim and its index entries
-- cost the journal's thread nearly as much as all of the claim's Python; `every_claim` shows
-- both tables as one.
CREATE TABLE IF NOT EXISTS claim_runs (
    first_id INTEGER PRIMARY KEY,
    list_id INTEGER NOT NULL,
    count INTEGER NOT NULL,
    claimed_at REAL NOT NULL,
    source TEXT NOT NULL,
    campaign_id INTEGER,
    low_code INTEGER NOT NULL,
    high_code INTEGER NOT NULL,
    claims TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS claim_runs_by_list ON claim_runs (list_id, low_code);
CREATE INDEX IF NOT EXISTS claim_runs_by_campaign ON claim_runs (campaign_id)
    WHERE campaign_id IS NOT NULL;
-- Every claim, one row each, whether stored alone or in a run.
CREATE VIEW IF NOT EXISTS every_claim AS
    SELECT id, list_id, user_id, idempotency_key, code_id, code, claimed_at, source,
        campaign_id, metadata, message FROM claims
    UNION ALL
    SELECT r.first_id + u.key, r.list_id, u.value, '',
        json_extract(r.claims, '$[1][' || u.key || ']'),
        json_extract(r.claims, '$[2][' || u.key || ']'), r.claimed_at, r.source, r.campaign_id,
        NULL, json_extract(r.claims, '$[3][' || u.key || ']')
    FROM claim_runs AS r, json_each(r.claims, '$[0]') AS u;
CREATE TABLE IF NOT EXISTS campaigns (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    lists TEXT NOT NULL,
    max_codes_per_user INTEGER NOT NULL,
    max_codes_per_campaign INTEGER,
    starts_at REAL,
    ends_at REAL,
    qualification TEXT,
    message_template TEXT,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
-- The event stream. `seq` is given by the journal's writer, one more per event, no gaps;
-- `data` is the event's JSON object, or with a `base`, the properties it adds to that base's
-- (a reward event stores the few that vary per reward; its list's are stored once). A row
-- with a `count` above one holds reward events made together, numbered on from `seq`, one
-- time and base: `data` is [eventTimestamp, [voucherCode…], [userId…], [message…]], each
-- event's own properties as columns (events.RewardRun).
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    time REAL NOT NULL,
    data TEXT NOT NULL,
    base INTEGER,
    count INTEGER NOT NULL DEFAULT 1
);
-- One row per list, source and campaign (and per edit of the list): retention leaves them,
-- as they are few.
CREATE TABLE IF NOT EXISTS event_bases (
    id INTEGER PRIMARY KEY,
    data TEXT NOT NULL UNIQUE
);
"""


_SCHEMA_7_RUNS = "SELECT seq, data FROM events WHERE seq > ? AND count > 1 ORDER BY seq LIMIT 100"


def _event_runs_as_columns(db: sqlite3.Connection) -> None:
    """Schema 7 stored a run of reward events as their own objects, one a line; a hundred runs
    are read at a time, as there may be many."""
    seq = 0
    while runs := db.execute(_SCHEMA_7_RUNS, (seq,)).fetchall():
        for seq, data in runs:
            owns = [orjson.loads(line) for line in data.split("\n")]
            columns = [
                owns[0]["eventTimestamp"],
                *([own[name] for own in owns] for name in ("voucherCode", "userId", "message")),
            ]
            stored = orjson.dumps(columns).decode()
            db.execute("UPDATE events SET data = ? WHERE seq = ?", (stored, seq))


# Changes to databases made by an earlier version, applied in order at start-up: statements,
# or functions where SQL alone cannot say it.
MIGRATIONS: dict[int, tuple[str | Callable[[sqlite3.Connection], None], ...]] = {
    2: ("ALTER TABLE claims ADD COLUMN message TEXT",),
    3: (
        "ALTER TABLE lists ADD COLUMN expiry_warning TEXT",
        "ALTER TABLE lists ADD COLUMN warned_expiry REAL",
    ),
    4: ("ALTER TABLE events ADD COLUMN base INTEGER",),
    # The code index moved to a file of its own, rebuilt there from the blocks at start-up;
    # then code_index.drop_journal_copy drops the old table.
    5: (),
    # Blocks of codes of one length are stored without newlines (pool.pack).
    6: ("ALTER TABLE code_blocks ADD COLUMN width INTEGER NOT NULL DEFAULT 0",),
    # A batch's slice of claims is one row of claim_runs (created above), and its reward
    # events one row of events.
    7: ("ALTER TABLE events ADD COLUMN count INTEGER NOT NULL DEFAULT 1",),
    # A run of reward events keeps their own properties as columns.
    8: (_event_runs_as_columns,),
}


def install(db: sqlite3.Connection) -> None:
    """Create the tables of a new database, or bring an older one up to this version."""
    fresh = not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'claims'").fetchone()
    db.executescript(SCHEMA)
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = VERSION if fresh else int(row[0]) if row else 1
    if version > VERSION:
        raise RuntimeError(f"the database is from a newer voucherd (schema {version})")
    # The changes and the new version are one transaction: a start that stops half way
    # leaves the database as it was.
    db.execute("BEGIN IMMEDIATE")
    try:
        for step in range(version + 1, VERSION + 1):
            for change in MIGRATIONS[step]:
                if isinstance(change, str):
                    db.execute(change)
                else:
                    change(db)
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(VERSION),),
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
