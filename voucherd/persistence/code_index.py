"""The code index: every uploaded code, keyed by the code, for the duplicate checks.

It lives in a database file of its own, written by a connection and thread of its own. Random
codes land on random pages of its B-tree, so its writes are large; kept apart from the journal's
file they never hold the journal's write lock, and claims commit while an upload is checked.
Chunks can then be large (tens of thousands of codes), so each page the index writes carries
many codes instead of one. The thread also runs at a lower CPU priority: on a busy server,
claims come first and the index takes what is left.

An entry names the upload its code arrived in, and is committed before the block that makes the
code part of that upload, so the index never misses a stored code. An entry whose upload failed
(or was cut off by a crash) counts for nothing in the checks; the entries of a failed upload are
deleted by its failure, or at the next start-up. The journal's blocks hold every code, so an
index file that is missing is rebuilt from them at start-up.

Each chunk is checked and inserted in one transaction on the index's one thread, so checks of
concurrent uploads are serialized, never racing. The journal's file is attached read-only: the
check reads each holder's upload, list and claims there, as last committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from voucherd import errors, wire
from voucherd.persistence.journal import shrink_memory
from voucherd.pool import StoredBlock, unpack

log = logging.getLogger(__name__)

_T = TypeVar("_T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS codes (
    code TEXT NOT NULL,
    id INTEGER NOT NULL,
    upload_id INTEGER NOT NULL,
    PRIMARY KEY (code, id)
) WITHOUT ROWID;
-- Codes entered lately, merged into `codes` once there are `index_merge_codes` of them. A chunk
-- of random codes lands on most pages of a large table, and every page it touches is written
-- again: entered into this small table and merged in key order many chunks at a time, each
-- page of `codes` is written once a merge instead of once a chunk.
CREATE TABLE IF NOT EXISTS recent (
    code TEXT NOT NULL,
    id INTEGER NOT NULL,
    upload_id INTEGER NOT NULL,
    PRIMARY KEY (code, id)
) WITHOUT ROWID;
-- The highest code id entered: a chunk cut off by a crash leaves entries past the journal's
-- last block, and new codes are numbered past them too, so no id ever names two codes.
CREATE TABLE IF NOT EXISTS high_id (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    id INTEGER NOT NULL
);
"""

TABLES = ("codes", "recent")

# Who already holds each code of a chunk, in one of the tables: its upload names the list, and
# a claim naming it keeps a withdrawn code distributed.
_HOLDERS = (
    "SELECT j.value, u.list_id, c.upload_id, l.partner, l.status, u.status,"
    " (EXISTS (SELECT 1 FROM journal.claims WHERE code_id = c.id)"
    " OR EXISTS (SELECT 1 FROM journal.claim_runs AS r, json_each(r.claims, '$[1]') AS k"
    " WHERE r.list_id = u.list_id AND r.low_code <= c.id AND r.high_code >= c.id"
    " AND k.value = c.id))"
    " FROM json_each(?) AS j CROSS JOIN {table} AS c ON c.code = j.value"
    " JOIN journal.uploads AS u ON u.id = c.upload_id"
    " JOIN journal.lists AS l ON l.id = u.list_id"
)
# Random codes in file order land on the index's pages at random, each probe or insert on a
# page of its own; in key order a chunk goes through the pages once, in order (at 5M codes,
# about 60% more codes a second). So a chunk is probed and entered in key order, sorted by
# SQLite, which lets go of the GIL meanwhile; its ids still follow the file's order.
# A chunk already in key order (sequential codes) lands on a few neighbouring pages of either
# table: it goes straight into `codes`, not sorted again, and is never merged.
_INSERT = "INSERT INTO {table} (code, id, upload_id) SELECT value, ? + key, ? FROM json_each(?)"
_SORTED = " ORDER BY value"
_MERGE = "INSERT INTO codes SELECT code, id, upload_id FROM recent ORDER BY code, id"
_IN_KEY_ORDER = (
    "SELECT json_group_array(value) FROM (SELECT value FROM json_each(?) ORDER BY value)"
)
_RAISE_HIGH_ID = (
    "INSERT INTO high_id (one, id) VALUES (1, ?)"
    " ON CONFLICT (one) DO UPDATE SET id = max(id, excluded.id)"
)

# The index thread's niceness: on Linux each thread has its own, and a higher one lets the
# event loop's thread run first whenever both want the core.
NICENESS = 10


class CodeIndex:
    """The index's file and the connection that alone writes it."""

    def __init__(
        self, path: Path, journal_path: Path, synchronous: str, merge_codes: int = 1_000_000
    ) -> None:
        self.path = path
        self.journal_path = journal_path
        self.synchronous = synchronous
        self.merge_codes = merge_codes
        self._db: aiosqlite.Connection | None = None
        # The highest code id entered, as read at start-up (see `high_id` in the schema).
        self.high_id = 0
        # Codes in `recent`, about (a failed upload's are not taken off): only the index's
        # thread touches it.
        self._recent = 0
        # Merging and handing memory back after an upload, which its reply does not wait for.
        self._tidying: set[asyncio.Task[None]] = set()
        # Uploads that failed while the journal could not record it (a full disk): they still
        # read in progress there, but their entries hold no code that can be claimed.
        self.failing: set[int] = set()

    async def open(self) -> None:
        """Open (or create) the index, after the journal's file exists. Entries of uploads the
        journal still has in progress were cut off by a stop: they are deleted here, before
        recovery marks those uploads failed and drops their blocks."""
        # No statement cache: a cached statement keeps a copy of the chunk it last took (a
        # JSON array of 100,000 codes, 1.5 MB) until it runs again, and every statement here
        # runs once a chunk, where preparing it costs nothing measurable.
        self._db = await aiosqlite.connect(self.path, isolation_level=None, cached_statements=0)
        try:
            journal_uri = f"file:{self.journal_path}?mode=ro"
            self.high_id = await self.call(_prepare, journal_uri, self.synchronous)
            forgotten = await self.call(_forget_interrupted)
            self._recent = await self.call(_count_recent)
        except BaseException:
            await self.close()
            raise
        if forgotten:
            log.info("code index: forgot %d codes of interrupted uploads", forgotten)

    async def close(self) -> None:
        if self._tidying:
            await asyncio.wait(self._tidying)
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def call(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run a function with the index's connection on its thread: one hop for a chunk."""
        db = self._db
        if db is None:
            raise errors.NotReady("the code index is not open", retry_after=1)
        try:
            result: _T = await db._execute(function, db._conn, *args)  # type: ignore[no-untyped-call]
        except sqlite3.Error as exc:
            # A full disk, say: the transaction was rolled back, so nothing was entered.
            log.error("code index write failed: %s", exc)
            raise errors.StorageUnavailable(
                f"the code index could not write ({type(exc).__name__}); nothing was changed",
                retry_after=2,
            ) from exc
        return result

    def tidy(self) -> None:
        """After an upload, in the background: merge the recent codes if due, so an upload
        that brought them to `merge_codes` is answered without waiting for the merge, then
        hand the page cache back; best effort. The next upload's chunks queue behind it."""
        task = asyncio.create_task(self._tidy())
        self._tidying.add(task)
        task.add_done_callback(self._tidying.discard)

    async def _tidy(self) -> None:
        with contextlib.suppress(errors.VoucherdError):
            await self.call(self.merge_when_due)
            await self.call(shrink_memory)

    def holders(
        self, db: sqlite3.Connection, codes_json: str, ordered: bool
    ) -> Iterator[tuple[Any, ...]]:
        """On the index's thread: the holders of these codes (a JSON array, `ordered` when
        already in key order), from both tables, probed in key order."""
        probe = codes_json if ordered else in_key_order(db, codes_json)
        for table in TABLES:
            yield from db.execute(_HOLDERS.format(table=table), (probe,))

    def enter(
        self,
        db: sqlite3.Connection,
        first_id: int,
        upload_id: int,
        codes_json: str,
        count: int,
        ordered: bool,
    ) -> None:
        """On the index's thread, inside a transaction: enter `count` codes (a JSON array),
        numbered from `first_id`: into `codes` when `ordered`, else into the recent ones."""
        table = "codes" if ordered else "recent"
        enter(db, first_id, upload_id, codes_json, count, table=table, ordered=ordered)
        if not ordered:
            self._recent += count

    def merge_when_due(self, db: sqlite3.Connection) -> None:
        """On the index's thread, between transactions: once enough codes are recent, move
        them into `codes` in key order, in one transaction; before a chunk, or after the
        upload (see tidy). A merge that fails (a full disk)
        leaves them where they are, found all the same, for the next chunk to try again."""
        if self._recent < self.merge_codes:
            return
        began = time.perf_counter()
        db.execute("BEGIN")
        try:
            db.execute(_MERGE)
            db.execute("DELETE FROM recent")
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            # A COMMIT that fails on a full disk may already have been rolled back by SQLite.
            if db.in_transaction:
                db.execute("ROLLBACK")
            log.warning("code index: merging recent codes failed, will retry: %s", exc)
            return
        log.info("code index: merged %d recent codes in %.2f s", self._recent,
                 time.perf_counter() - began)  # fmt: skip
        self._recent = 0

    async def forget(self, blocks: list[StoredBlock]) -> int:
        """Delete the entries of a failed upload's blocks (see StoredBlock)."""
        return await self.call(_forget, blocks)


# Whole-chunk work in C goes this many codes at a time, with give_way() between pieces.
PIECE = 10_000


def give_way() -> None:
    """Let go of the GIL for a moment, so that the event loop, if it waits for it, has it now.
    A thread in one long C call holds the GIL throughout, and a waiting thread only asks for it
    after the switch interval (5 ms): a chunk of 100,000 codes took C calls of 3 to 10 ms each
    (splitting it, finding its repeats, joining its JSON), which claims waited out."""
    time.sleep(0)


def in_order(codes: Sequence[bytes]) -> bool:
    """Whether the codes rise strictly, as sequential codes do; checked in C a piece at a time,
    and random codes fail at their first pair."""
    for start in range(0, len(codes) - 1, PIECE):
        piece = codes[start : start + PIECE + 1]
        if not all(map(operator.lt, piece, piece[1:])):
            return False
        give_way()
    return True


def json_array(codes: Sequence[bytes]) -> str:
    """Codes as a JSON array, for json_each. A valid code holds no `"` and no control
    character, so unless one holds a backslash the array is joined in C, with no Python per
    code, a piece at a time."""
    if not codes:
        return "[]"
    pieces = []
    for start in range(0, len(codes), PIECE):
        pieces.append(b'","'.join(codes[start : start + PIECE]))
        give_way()
    joined = b'","'.join(pieces)
    if b"\\" in joined:
        return wire.dumps([code.decode("ascii") for code in codes])
    return f'["{joined.decode("ascii")}"]'


def in_key_order(db: sqlite3.Connection, codes_json: str) -> str:
    """The same JSON array of codes, sorted, for probing the index (see _INSERT)."""
    (ordered,) = db.execute(_IN_KEY_ORDER, (codes_json,)).fetchone()
    return str(ordered)


def enter(
    db: sqlite3.Connection,
    first_id: int,
    upload_id: int,
    codes_json: str,
    count: int,
    *,
    table: str = "codes",
    ordered: bool = False,
) -> None:
    """Enter `count` codes (a JSON array), numbered from `first_id`, in key order (sorted here
    unless `ordered`); inside a transaction."""
    sql = _INSERT.format(table=table) + ("" if ordered else _SORTED)
    db.execute(sql, (first_id, upload_id, codes_json))
    db.execute(_RAISE_HIGH_ID, (first_id + count - 1,))


def _prepare(db: sqlite3.Connection, journal_uri: str, synchronous: str) -> int:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA cache_size=-32768")
    db.executescript(SCHEMA)
    db.execute("ATTACH DATABASE ? AS journal", (journal_uri,))
    empty = not any(db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() for table in TABLES)
    if empty and db.execute("SELECT 1 FROM journal.code_blocks LIMIT 1").fetchone():
        log.warning("code index: rebuilding it from the journal's blocks")
        log.info("code index: %d codes entered", _rebuild(db))
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
    row = db.execute("SELECT id FROM high_id").fetchone()
    return int(row[0]) if row else 0


def _rebuild(db: sqlite3.Connection) -> int:
    """Enter every code of the journal's blocks: for an index file that is new while the
    journal holds codes (lost, or from a version that kept the index in the journal's file)."""
    db.execute("BEGIN")
    entered = 0
    for first_id, upload_id, data, width in db.execute(
        "SELECT first_id, upload_id, codes, width FROM journal.code_blocks ORDER BY first_id"
    ).fetchall():
        codes = unpack(data, width)
        enter(db, first_id, upload_id, json_array(codes), len(codes))
        entered += len(codes)
    db.execute("COMMIT")
    return entered


def drop_journal_copy(db: sqlite3.Connection) -> None:
    """Runs on the journal's connection once the index is open: databases written before the
    index had a file of its own kept it in the journal's file, as the table `codes`."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'codes'").fetchone():
        db.execute("DROP TABLE codes")
        log.info("code index: dropped the journal's old copy")


def _forget_interrupted(db: sqlite3.Connection) -> int:
    """Delete the entries of the uploads the journal still has in progress, through their
    blocks: run at start-up, before recovery marks them failed and drops the blocks."""
    blocks = db.execute(
        "SELECT b.first_id, b.codes, b.width FROM journal.code_blocks AS b"
        " JOIN journal.uploads AS u ON u.id = b.upload_id WHERE u.status = 'in_progress'"
    ).fetchall()
    return _forget(db, blocks)


def _forget(db: sqlite3.Connection, blocks: list[StoredBlock]) -> int:
    if not blocks:
        return 0
    db.execute("BEGIN")
    forgotten = 0
    for first_id, data, width in blocks:
        codes = [code.decode("ascii") for code in unpack(data, width)]
        entries = [(code, first_id + offset) for offset, code in enumerate(codes)]
        for table in TABLES:
            db.executemany(f"DELETE FROM {table} WHERE code = ? AND id = ?", entries)
        forgotten += len(codes)
    db.execute("COMMIT")
    return forgotten


def _count_recent(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COUNT(*) FROM recent").fetchone()[0])
