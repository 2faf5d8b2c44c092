"""The event stream: committed events, handed to subscribers through bounded buffers.

The journal's writer publishes each group's events once they are committed; publishing only
appends to each subscriber's buffer, so a slow subscriber costs claims nothing. A subscriber
that asks for older events reads them from the database, page by page, then joins the live
buffer where the pages end:

    catching up (cursor < base): read events (cursor, base] from the journal, a page at a time;
                                 live events after `base` gather in the buffer meanwhile (if
                                 too many, they are dropped and `base` moves on: the pages
                                 will bring them)
    live (cursor >= base):       send what the buffer holds; more than `limit` waiting means
                                 the subscriber cannot keep up, and it is told where to resume
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable

from voucherd.events import Event, Numbered, RewardRun, expand, join

PAGE = 1000

# (after, up to, types, limit) -> events with after < seq <= up to, in order.
Reader = Callable[[int, int, Collection[str] | None, int], Awaitable[list[Event]]]


class Expired(Exception):
    """The subscriber asked for events that retention has already removed."""


class Subscription:
    def __init__(
        self, stream: EventStream, since: int, types: frozenset[str] | None, limit: int
    ) -> None:
        self.stream = stream
        self.types = types
        self.limit = limit
        # The last event handed out; every matching event after `base` is in the buffer.
        self.cursor = since
        self.base = stream.last_seq
        # The last event the subscriber was sent: where it resumes.
        self.sent = since
        self.buffer: deque[Event] = deque()
        self.lagging = False
        # Set when the stream gives up on the subscriber (it fell behind, or the server is
        # stopping): its sender may be stuck waiting for a socket that does not drain.
        self.ended = asyncio.Event()
        self._wake = asyncio.Event()

    def offer(self, events: list[Event]) -> None:
        if self.lagging:
            return
        types = self.types
        added = events if types is None else [event for event in events if event.type in types]
        if not added:
            return
        self.buffer.extend(added)
        if len(self.buffer) > self.limit:
            if self.cursor >= self.base:
                self.lagging = True
                self.buffer.clear()
                self.ended.set()
            else:
                # Still catching up: these will come from the journal instead.
                self.buffer.clear()
                self.base = events[-1].seq
        self._wake.set()

    async def next(self) -> list[Event]:
        """The next events to deliver, in order; waits while there are none."""
        while True:
            if self.cursor < self.base:
                if self.cursor < self.stream.first_seq - 1:
                    raise Expired
                upto = self.base
                page = await self.stream.read(self.cursor, upto, self.types, PAGE)
                if self.cursor < self.stream.first_seq - 1:
                    # Retention moved past the cursor while the page was read.
                    raise Expired
                self.cursor = page[-1].seq if len(page) == PAGE else upto
                buffer = self.buffer
                while buffer and buffer[0].seq <= self.cursor:
                    buffer.popleft()
                if page:
                    return page
                continue
            if self.buffer:
                batch = list(self.buffer)
                self.buffer.clear()
                self.cursor = batch[-1].seq
                return batch
            self._wake.clear()
            await self._wake.wait()


class EventStream:
    def __init__(self, read: Reader) -> None:
        self.read = read
        self.last_seq = 0
        # The oldest event retention has kept; `since` below first_seq - 1 has lost events.
        self.first_seq = 1
        self.stopping = False
        self._subscribers: set[Subscription] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def buffered(self) -> int:
        return sum(len(subscription.buffer) for subscription in self._subscribers)

    def subscribe(
        self, since: int | None, types: frozenset[str] | None, limit: int
    ) -> Subscription:
        start = self.last_seq if since is None else since
        subscription = Subscription(self, start, types, limit)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def stop(self) -> None:
        """Shutting down: every subscriber is told where to resume."""
        self.stopping = True
        for subscription in self._subscribers:
            subscription.ended.set()

    def publish(self, numbered: list[Numbered]) -> None:
        """Called by the journal's writer with each group's events, once committed. A run of
        events is made into its events only if someone listens."""
        last = numbered[-1]
        self.last_seq = last.seq + last.count - 1
        if not self._subscribers:
            return
        events = expand(numbered)
        for subscription in self._subscribers:
            subscription.offer(events)


# Events as they were stored: a row with a base holds the properties the event adds to that
# base's, and a row with a count above one holds a run of reward events, their own properties
# as columns (see the schema and events.RewardRun). Both are made back as they were published.
SELECT_EVENTS = (
    "SELECT e.seq, e.type, e.time, e.data, b.data, e.count"
    " FROM events AS e LEFT JOIN event_bases AS b ON b.id = e.base"
)


# Subqueries, not MIN and MAX in one: SQLite finds a lone MIN or MAX of the key at one end of
# the index, but both in one query scan the whole table.
FIRST_AND_LAST_SEQ = (
    "SELECT (SELECT MIN(seq) FROM events),"
    " (SELECT seq + count - 1 FROM events ORDER BY seq DESC LIMIT 1)"
)
# The number and time of the newest event.
LAST_EVENT = "SELECT seq + count - 1, time FROM events ORDER BY seq DESC LIMIT 1"
# The row that holds event `seq`: the last that starts at or before it.
_ROW_OF = "SELECT seq, count, time FROM events WHERE seq <= ? ORDER BY seq DESC LIMIT 1"


def read_events(
    db: sqlite3.Connection, after: int, upto: int, types: Iterable[str] | None, limit: int
) -> list[Event]:
    row = db.execute(_ROW_OF, (after + 1,)).fetchone()
    sql = f"{SELECT_EVENTS} WHERE e.seq >= ? AND e.seq <= ?"
    args: list[object] = [after + 1 if row is None else row[0], upto]
    if types is not None:
        wanted = sorted(types)
        sql += f" AND e.type IN ({', '.join('?' * len(wanted))})"
        args.extend(wanted)
    sql += " ORDER BY e.seq LIMIT ?"
    args.append(limit)
    found: list[Event] = []
    for seq, type, time, data, base, count in db.execute(sql, args):
        # Only the events of a run past `after`, up to `upto` and the page's end.
        first = max(seq, after + 1)
        last = min(seq + count - 1, upto, first + limit - len(found) - 1)
        if first > last:
            continue
        if count > 1:
            run = RewardRun.from_stored(base.encode(), time, seq, data.encode())
            found += run.events(first, last)
        else:
            whole = data.encode() if base is None else join(base.encode(), data.encode())
            found.append(Event(type, whole, time, seq))
        if len(found) >= limit:
            break
    return found


def retention_cutoff(db: sqlite3.Connection, before: float, limit: int) -> int | None:
    """The last seq to delete: events are numbered in the order they were written, so times
    grow with seq and a binary search over seq finds where `before` falls. At most `limit`
    events, and never the newest, so numbering goes on from it after a restart. A row is
    deleted whole: a cut that falls inside a run of events moves back to before it, or when
    the run is the oldest row, on to its end, whatever the limit."""
    first, last = db.execute(FIRST_AND_LAST_SEQ).fetchone()
    if first is None or first == last:
        return None
    low, high = first, min(last - 1, first + limit - 1)
    if _time_of(db, low) >= before:
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if _time_of(db, middle) < before:
            low = middle
        else:
            high = middle - 1
    start, count, _ = db.execute(_ROW_OF, (low,)).fetchone()
    end = start + count - 1
    if end > low:
        low = start - 1 if start > first else end
    return int(low) if low < last else None


def _time_of(db: sqlite3.Connection, seq: int) -> float:
    (_, _, time) = db.execute(_ROW_OF, (seq,)).fetchone()
    return float(time)


def delete_events(db: sqlite3.Connection, upto: int) -> None:
    """Delete the rows of events up to `upto`, which ends a row (see retention_cutoff)."""
    db.execute("DELETE FROM events WHERE seq <= ?", (upto,))
