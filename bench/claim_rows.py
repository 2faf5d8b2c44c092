"""How fast SQLite alone stores claims: `python -m bench.claim_rows [--rows N]`.

The same tables and indexes as voucherd's, WAL, synchronous=FULL, 1,000 claims a transaction.
Claim rows alone are written the three ways a journal could: multi-row `INSERT … VALUES` blocks
(voucherd's way, `journal.insert_rows`), one `INSERT … SELECT … FROM json_each(?)` per group, and
`executemany`. Then what voucherd writes for each single claim: its row and its reward event's
row (the properties that vary per reward, about 90 bytes of JSON text; the list's are stored
once), both in blocks. Last, what it writes for a batch slice of 1,000 claims: one row of
`claim_runs` and one row of events holding the slice's 1,000 (`events.count`), their JSON
columns made in the timed loop (`claims.ClaimRun.row`, `events.RewardRun.stored`). Each bounds
its kind of claims from above: no Python on top can store claims faster than this.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from voucherd import events
from voucherd.claims import CLAIM_COLUMNS, RUN_COLUMNS, ClaimRun
from voucherd.duplicates import Scope
from voucherd.lists import ListInfo
from voucherd.persistence.journal import insert_rows
from voucherd.persistence.schema import SCHEMA
from voucherd.statuses import Status

GROUP = 1000
NOW = 1.7e9

Group = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]
Write = Callable[[sqlite3.Connection, Group], None]

_VALUES = ", ".join(f"value ->> {index}" for index in range(len(CLAIM_COLUMNS)))
_JSON_EACH = f"INSERT INTO claims ({', '.join(CLAIM_COLUMNS)}) SELECT {_VALUES} FROM json_each(?)"
_MANY = f"INSERT INTO claims ({', '.join(CLAIM_COLUMNS)}) VALUES ({', '.join('?' * len(CLAIM_COLUMNS))})"  # noqa: E501
_EVENT_COLUMNS = ("seq", "type", "time", "data", "base")


def groups(rows: int) -> list[Group]:
    info = ListInfo(1, "Bench", "rows", "rows", "bench list", 4e9, Status.ACTIVE, Scope.PARTNER,
                    0, 0, 0)  # fmt: skip
    reward = events.Rewards(info).event
    made: list[Group] = []
    for start in range(0, rows, GROUP):
        claims, written = [], []
        for n in range(start, min(start + GROUP, rows)):
            code, user = f"C{n:011d}", f"user-{n}"
            claims.append((n + 1, 1, user, "", n + 1, code, NOW, "API", None, None, None))
            event, _ = reward(code, user, NOW)
            assert event.own is not None
            written.append((n + 1, event.type, event.time, event.own.decode(), 1))
        made.append((claims, written))
    return made


def blocks(db: sqlite3.Connection, group: Group) -> None:
    insert_rows(db, "claims", CLAIM_COLUMNS, group[0])


def json_each(db: sqlite3.Connection, group: Group) -> None:
    db.execute(_JSON_EACH, (orjson.dumps(group[0]).decode(),))


def executemany(db: sqlite3.Connection, group: Group) -> None:
    db.executemany(_MANY, group[0])


def with_events(db: sqlite3.Connection, group: Group) -> None:
    blocks(db, group)
    insert_rows(db, "events", _EVENT_COLUMNS, group[1])


def runs(db: sqlite3.Connection, group: Group) -> None:
    claims, written = group
    users, code_ids, codes = [c[2] for c in claims], [c[4] for c in claims], [c[5] for c in claims]
    messages: list[str | None] = [None] * len(claims)
    run = ClaimRun(claims[0][0], 1, NOW, "API", None, users, code_ids, codes, messages)
    insert_rows(db, "claim_runs", RUN_COLUMNS, [run.row()])
    rewards = events.RewardRun(b"{}", NOW, int(NOW), codes, users, messages)
    first = written[0]
    db.execute(
        "INSERT INTO events (seq, type, time, data, base, count) VALUES (?, ?, ?, ?, 1, ?)",
        (first[0], first[1], first[2], rewards.stored().decode(), len(written)),
    )


def measure(path: Path, made: list[Group], write: Write) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    # Every event shares its list's base, stored once, as the journal stores it.
    db.execute("INSERT INTO event_bases (id, data) VALUES (1, '{}')")
    started = time.perf_counter()
    for group in made:
        db.execute("BEGIN")
        write(db, group)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return sum(len(group[0]) for group in made) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.claim_rows", description=__doc__)
    parser.add_argument("--rows", type=int, default=300_000)
    args = parser.parse_args()
    made = groups(args.rows)
    for label, write in (
        ("claim rows, VALUES blocks", blocks),
        ("claim rows, json_each", json_each),
        ("claim rows, executemany", executemany),
        ("claim rows and their events", with_events),
        ("a run of claims and a run of events a group", runs),
    ):
        with tempfile.TemporaryDirectory() as scratch:
            rate = measure(Path(scratch) / "claims.sqlite3", made, write)
        print(f"{label}: {rate:,.0f} claims/s ({1e6 / rate:.1f} µs a claim)")


if __name__ == "__main__":
    main()
