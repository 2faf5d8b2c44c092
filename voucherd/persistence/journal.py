"""The journal: one writer task that makes every change durable, in groups.

Callers hand it operations and await a future. The writer takes everything queued, writes it in
one transaction with one commit, and only then resolves the futures — so a reply that waits on
its future is sent after its records are on disk, and a thousand concurrent claims cost one
fsync instead of a thousand.

Lifecycle::

    open() -> writer running -> close(): stop is queued behind pending work,
    which is committed first; then the connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import logging
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from voucherd import errors
from voucherd.events import Numbered
from voucherd.mailbox import Mailbox
from voucherd.metrics import Metrics
from voucherd.persistence.schema import install

log = logging.getLogger(__name__)

Row = Sequence[Any]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Rows:
    """Rows for one statement; rows of the same statement from many callers share one
    executemany."""

    sql: str
    rows: Sequence[Row]


@dataclass(frozen=True, slots=True)
class Insert:
    """Rows for one table; rows for the same table from many callers are written together,
    a few hundred rows a statement (see `insert_rows`)."""

    table: str
    columns: tuple[str, ...]
    rows: Sequence[Row]


# Rows a statement at most, so a block's parameters stay far below SQLite's limit (32,766).
_BLOCK = 256


def insert_rows(
    conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: Sequence[Row]
) -> None:
    """Insert rows as multi-row `INSERT … VALUES (…), (…)` statements of 256, 128, … 1 rows.

    SQLite binds each block's values in C and runs it in one call: about a third less time a
    row than `executemany` or a JSON array through json_each, and the writer's thread lets go
    of the GIL and takes it back once per block instead of once per row (under load each
    retake can wait for the busy event loop). Blocks come in nine sizes, so each statement is
    prepared once and then found in the connection's cache."""
    start = 0
    while start < len(rows):
        count = 1 << (min(len(rows) - start, _BLOCK).bit_length() - 1)
        block = rows[start : start + count]
        conn.execute(_values_sql(table, columns, count), list(chain.from_iterable(block)))
        start += count


@functools.lru_cache(maxsize=64)
def _values_sql(table: str, columns: tuple[str, ...], count: int) -> str:
    row = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * count)}"


@dataclass(frozen=True, slots=True)
class Events:
    """Events to append to the stream, in the same transaction as the rest of their entry.
    The writer numbers them as it writes them, so numbers run without gaps: a transaction
    that fails hands its numbers back. A run of events (rewards made together) is numbered
    as its events and stored as one row."""

    events: Sequence[Numbered]


@dataclass(frozen=True, slots=True)
class Step:
    """A function run on the writer's thread inside the group's transaction, isolated by a
    savepoint: if it raises, only its own caller gets the error."""

    run: Callable[[sqlite3.Connection], Any]


@dataclass(frozen=True, slots=True)
class Chore:
    """Work for the writer's thread outside any transaction, between groups (such as
    handing memory back), so it never holds the write lock."""

    run: Callable[[sqlite3.Connection], Any]


Op = Rows | Insert | Events | Step | Chore


@dataclass(slots=True)
class _Entry:
    ops: Sequence[Op]
    records: int
    # Entries with a step or a chore are written alone: claims queued behind a long upload
    # step then wait for it, but never share its transaction.
    alone: bool = False
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


_STOP = object()


class Journal:
    def __init__(self, path: Path, synchronous: str, queue_limit: int, metrics: Metrics) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self.queue_limit = queue_limit
        self.metrics = metrics
        self._queue: Mailbox[_Entry | object] = Mailbox(sys.maxsize)
        self._queued_records = 0
        # Set each time a group is written, for writers waiting for room in the queue.
        self._room = asyncio.Event()
        # Writes waiting for room (see submit_waiting): while any waits, plain submits find
        # the queue full, so a stream of claims cannot keep taking the room it waits for.
        self._waiting = 0
        self._writer: asyncio.Task[None] | None = None
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpointing: asyncio.Task[None] | None = None
        # Commits since the last checkpoint ran: with none, there is nothing to copy.
        self._commits_unchecked = 0
        self._closing = False
        self._stop_seen = False
        # The number and time of the last event committed, and who hears of events once
        # committed.
        self.last_seq = 0
        self.last_event_time = 0.0
        # Ids of the event bases stored so far, by their JSON; only the writer's thread uses it.
        self._bases: dict[bytes, int] = {}
        self.on_events: Callable[[list[Numbered]], None] | None = None
        # Records written in groups not alone (claims and their kin): an upload gives way to
        # claims while this grows.
        self.shared_records = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute(f"PRAGMA synchronous={self.synchronous}")
            await self._db.execute("PRAGMA cache_size=-32768")
            await self._db.execute("PRAGMA temp_store=MEMORY")
            # The write-ahead log is copied into the database by a connection of its own, on
            # its own thread (see _checkpoint_forever), so a claim's commit seldom waits for
            # pages to be copied. But under writes that never pause (a long upload) that copy
            # never catches up with the log's end, and only a checkpoint between two writes
            # lets the log start over: so past 10,000 pages the writer checkpoints too, with
            # little left to copy.
            await self._db.execute("PRAGMA wal_autocheckpoint=10000")
            await self._on_writer_thread(install)
            self._reader = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)
            await self._reader.execute("PRAGMA cache_size=-8192")
            self._checkpointer = await aiosqlite.connect(self.path, isolation_level=None)
            await self._checkpointer.execute("PRAGMA cache_size=-1024")
        except BaseException:
            # A journal that cannot open (its disk is full, say) closes what it opened: each
            # aiosqlite connection runs a thread that is not a daemon, and one left running
            # keeps the process from ever exiting.
            await self._close_connections()
            raise

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever(), name="journal-writer")
        self._checkpointing = asyncio.create_task(
            self._checkpoint_forever(), name="journal-checkpoint"
        )

    async def _checkpoint_forever(self) -> None:
        """Copy committed pages from the log into the database every CHECKPOINT_INTERVAL.
        PASSIVE never waits for the writer or a reader: what it cannot copy yet, the next
        round does; once all is copied, the next commit starts the log over."""
        assert self._checkpointer is not None
        failing = False
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            if not self._commits_unchecked:
                continue
            self._commits_unchecked = 0
            try:
                await self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                # The disk is full, say: the log keeps the pages, and a later round copies
                # them. Said once per spell, not every round.
                if not failing:
                    log.warning("journal checkpoint failed, will retry: %s", exc)
                failing = True
            else:
                if failing:
                    log.info("journal checkpoint succeeded again")
                failing = False

    async def close(self) -> None:
        """Commit everything queued, then close; safe to call twice."""
        self._closing = True
        if self._writer is not None:
            self._queue.put_nowait(_STOP)
            await self._writer
            self._writer = None
        if self._checkpointing is not None:
            self._checkpointing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointing
            self._checkpointing = None
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await self._close_connections()

    async def _close_connections(self) -> None:
        # The read-only connection closes last, as it cannot delete the log and its index:
        # kept, they let a restart on a full disk get as far as saying the disk is full.
        for connection in (self._checkpointer, self._db, self._reader):
            if connection is not None:
                await connection.close()
        self._db = self._reader = self._checkpointer = None

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "journal is not open"
        return self._db

    def release_memory(self) -> None:
        """Hand the page cache back after a large write such as an upload; best effort."""
        with contextlib.suppress(errors.VoucherdError):
            done = self.submit([Chore(shrink_memory)], records=0)
            # Nobody waits for it: its failure is read here, so it is not reported as lost.
            done.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def call(self, function: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a function on the writer's connection and thread; for recovery, before start()."""
        assert self._writer is None, "the writer owns the connection once started"
        return await self._on_writer_thread(function)

    async def read(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run a function on the read-only connection's thread: one hop for a whole query."""
        reader = self.reader
        result: _T = await reader._execute(function, reader._conn, *args)  # type: ignore[no-untyped-call]
        return result

    @property
    def reader(self) -> aiosqlite.Connection:
        """A read-only connection: in WAL mode it never waits for the writer."""
        assert self._reader is not None, "journal is not open"
        return self._reader

    @property
    def queued_records(self) -> int:
        return self._queued_records

    # -- writing -------------------------------------------------------------------------------

    def submit(self, ops: Sequence[Op], records: int = 1) -> asyncio.Future[Any]:
        """Queue operations for the next group; the future resolves once they are committed.

        Refuses at once when the queue holds too much, so overload is a 503, not a memory leak.
        """
        if self._closing or self._writer is None:
            raise errors.NotReady("voucherd is shutting down", retry_after=1)
        if self._queued_records and (
            self._queued_records + records > self.queue_limit or self._waiting
        ):
            raise errors.Overloaded("the journal queue is full; retry shortly", retry_after=1)
        return self._queue_entry(ops, records)

    def _queue_entry(self, ops: Sequence[Op], records: int) -> asyncio.Future[Any]:
        entry = _Entry(ops, records, any(isinstance(op, Step | Chore) for op in ops))
        self._queued_records += records
        self._queue.put_nowait(entry)
        return entry.future

    async def write(self, *ops: Op, records: int = 1) -> Any:
        return await self.submit(ops, records)

    async def submit_waiting(self, ops: Sequence[Op], records: int = 1) -> asyncio.Future[Any]:
        """Queue as `submit` does, but wait for room instead of refusing: for writes that must
        not fail because claims are busy, such as an upload's chunks. Bounded all the same:
        each waiter holds one chunk."""
        try:
            return self.submit(ops, records)
        except errors.Overloaded:
            pass
        self._waiting += 1
        try:
            while True:
                self._room.clear()
                await self._room.wait()
                if self._closing or self._writer is None:
                    raise errors.NotReady("voucherd is shutting down", retry_after=1)
                if not self._queued_records or self._queued_records + records <= self.queue_limit:
                    return self._queue_entry(ops, records)
        finally:
            self._waiting -= 1

    async def write_waiting(self, *ops: Op, records: int = 1) -> Any:
        """`write`, waiting for room instead of refusing (see `submit_waiting`)."""
        return await (await self.submit_waiting(ops, records))

    async def _write_forever(self) -> None:
        backlog: deque[_Entry] = deque()
        steps_turn = False
        while True:
            if not backlog:
                if self._stop_seen:
                    return
                self._take(backlog, await self._queue.take_all())
            else:
                self._take(backlog, self._queue.take_all_now())
            if not backlog:
                continue
            group = _next_group(backlog, steps_turn)
            # After a group of rows, an entry written alone (an upload chunk) waiting behind
            # them gets the next turn, and the other way round: neither starves the other.
            steps_turn = not group[0].alone
            await self._commit(group)

    def _take(self, backlog: deque[_Entry], items: list[_Entry | object]) -> None:
        for item in items:
            if item is _STOP:
                self._stop_seen = True
            else:
                assert isinstance(item, _Entry)
                backlog.append(item)

    async def _commit(self, group: list[_Entry]) -> None:
        records = sum(entry.records for entry in group)
        started = time.perf_counter()
        numbering = _Numbering(self.last_seq, self.last_event_time, self._bases)
        try:
            outcomes = await self._on_writer_thread(_transaction, group, numbering)
        except Exception as exc:
            log.error("journal commit of %d records failed: %s", records, exc)
            self.metrics.journal_failures.inc()
            fault = errors.StorageUnavailable(
                f"the journal could not write ({type(exc).__name__}); nothing was changed",
                retry_after=2,
            )
            for entry in group:
                _settle(entry.future, exception=fault)
        else:
            if numbering.written:
                events = self.metrics.events
                for event in numbering.written:
                    events.child(event.type).inc(event.count)
                self.last_seq, self.last_event_time = numbering.last, numbering.last_time
                if self.on_events is not None:
                    self.on_events(numbering.written)
            for entry, (result, failure) in zip(group, outcomes, strict=True):
                _settle(entry.future, result, failure)
        finally:
            elapsed = time.perf_counter() - started
            self._commits_unchecked += 1
            if not group[0].alone:
                self.shared_records += records
            self._queued_records -= records
            self._room.set()
            self.metrics.journal_commit_seconds.observe(elapsed)
            self.metrics.journal_records_per_commit.observe(records)

    async def _on_writer_thread(self, function: Callable[..., _T], *args: Any) -> _T:
        # aiosqlite hops to its thread once per call, and each hop may wait for the GIL while
        # the event loop is busy. A whole group goes in one hop: BEGIN, every insert, COMMIT.
        db = self.db
        result: _T = await db._execute(function, db._conn, *args)  # type: ignore[no-untyped-call]
        return result


def _next_group(backlog: deque[_Entry], steps_turn: bool) -> list[_Entry]:
    """The next group to write. Entries written alone keep their order among themselves, and
    so do the others; rows queued behind an upload chunk need not wait for it, as no row
    entry depends on a step (a step's outcome reaches the rows only through its caller)."""
    first_alone = next((entry for entry in backlog if entry.alone), None)
    if first_alone is not None and (steps_turn or all(entry.alone for entry in backlog)):
        backlog.remove(first_alone)
        return [first_alone]
    group = [entry for entry in backlog if not entry.alone]
    kept = [entry for entry in backlog if entry.alone]
    backlog.clear()
    backlog.extend(kept)
    return group


class _Numbering:
    """Event numbers handed out while writing one group, and the ids of their bases, on the
    writer's thread."""

    def __init__(self, last: int, last_time: float, bases: dict[bytes, int]) -> None:
        self.last = last
        self.last_time = last_time
        self.written: list[Numbered] = []
        self.bases = bases

    def number(self, events: Sequence[Numbered]) -> None:
        last, last_time = self.last, self.last_time
        for event in events:
            event.seq = last + 1
            last += event.count
            # Times never go back along the stream, even if the clock does: retention finds
            # its cut by a binary search over seq.
            if event.time < last_time:
                event.time = last_time
            last_time = event.time
        self.last, self.last_time = last, last_time
        self.written.extend(events)

    def base_id(self, conn: sqlite3.Connection, base: bytes | None) -> int | None:
        if base is None:
            return None
        found = self.bases.get(base)
        if found is None:
            text = base.decode()
            conn.execute("INSERT OR IGNORE INTO event_bases (data) VALUES (?)", (text,))
            (found,) = conn.execute("SELECT id FROM event_bases WHERE data = ?", (text,)).fetchone()
            if len(self.bases) >= _MAX_BASES:
                self.bases.clear()
            self.bases[base] = found
        return found

    def mark(self) -> tuple[int, int, float]:
        return self.last, len(self.written), self.last_time

    def undo(self, mark: tuple[int, int, float]) -> None:
        self.last, count, self.last_time = mark
        del self.written[count:]
        self.forget_bases()

    def forget_bases(self) -> None:
        # A base stored in a transaction rolled back is gone; so must be its id.
        self.bases.clear()


def _transaction(
    conn: sqlite3.Connection, group: list[_Entry], numbering: _Numbering
) -> list[tuple[Any, BaseException | None]]:
    """Write a group in one transaction; runs on the writer's thread."""
    chores = [op for op in group[0].ops if isinstance(op, Chore)]
    if chores:
        for chore in chores:
            chore.run(conn)
        return [(None, None)] * len(group)
    outcomes: list[tuple[Any, BaseException | None]] = []
    pending = _Pending()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for entry in group:
            # Past the chores above, an entry is written alone when it has a step.
            if not entry.alone:
                pending.add(entry.ops)
                outcomes.append((None, None))
                continue
            # An entry with a step is all or nothing: its own savepoint, its rows in order.
            pending.flush(conn, numbering)
            conn.execute("SAVEPOINT entry")
            mark = numbering.mark()
            result: Any = None
            failure: BaseException | None = None
            try:
                for op in entry.ops:
                    if isinstance(op, Step):
                        result = op.run(conn)
                    else:
                        single = _Pending()
                        single.add((op,))
                        single.flush(conn, numbering)
            except (sqlite3.IntegrityError, errors.VoucherdError) as exc:
                conn.execute("ROLLBACK TO entry")
                numbering.undo(mark)
                failure = exc
            conn.execute("RELEASE entry")
            outcomes.append((result, failure))
        pending.flush(conn, numbering)
        conn.execute("COMMIT")
    except BaseException:
        # The bases stored in this transaction are gone, so their ids must go too, whether the
        # ROLLBACK here undoes it or SQLite already has (a COMMIT failed on a full disk).
        numbering.forget_bases()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


_EVENT_COLUMNS = ("seq", "type", "time", "data", "base", "count")
_MAX_BASES = 10_000
CHECKPOINT_INTERVAL = 0.25


class _Pending:
    """Rows gathered from many callers, merged by statement; inserts are written first, then
    the other statements (no entry without a step depends on their order), then the events."""

    def __init__(self) -> None:
        self._inserts: dict[tuple[str, tuple[str, ...]], list[Row]] = {}
        self._rows: dict[str, list[Row]] = {}
        self._events: list[Numbered] = []

    def add(self, ops: Sequence[Op]) -> None:
        for op in ops:
            if isinstance(op, Insert):
                self._inserts.setdefault((op.table, op.columns), []).extend(op.rows)
            elif isinstance(op, Rows):
                self._rows.setdefault(op.sql, []).extend(op.rows)
            elif isinstance(op, Events):
                self._events.extend(op.events)

    def flush(self, conn: sqlite3.Connection, numbering: _Numbering) -> None:
        for (table, columns), rows in self._inserts.items():
            insert_rows(conn, table, columns, rows)
        for sql, rows in self._rows.items():
            conn.executemany(sql, rows)
        if self._events:
            numbering.number(self._events)
            # The events of a group share a few bases: each is looked up once.
            base_ids = {
                base: numbering.base_id(conn, base) for base in {e.base for e in self._events}
            }
            rows = [
                (e.seq, e.type, e.time, e.stored().decode(), base_ids[e.base], e.count)
                for e in self._events
            ]
            insert_rows(conn, "events", _EVENT_COLUMNS, rows)
        self._inserts.clear()
        self._rows.clear()
        self._events = []


def shrink_memory(conn: sqlite3.Connection) -> None:
    """Give SQLite's page cache and the freed C heap back to the system."""
    conn.execute("PRAGMA shrink_memory")
    _trim_heap()


def _trim_heap() -> None:
    # Freed pages stay in the C heap until glibc is asked to give them back.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _settle(
    future: asyncio.Future[Any], result: Any = None, exception: BaseException | None = None
) -> None:
    # A caller may have been cancelled (client gone); its future must not raise here.
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
