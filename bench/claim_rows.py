"""How fast SQLite alone stores claim rows: `python -m bench.claim_rows [--rows N]`.

The same table and indexes as voucherd's claims, WAL, synchronous=FULL, 1,000 rows a
transaction, written the two ways a journal could: one `INSERT … SELECT … FROM json_each(?)` per
group (voucherd's way), and `executemany`. It bounds batch claims from above: no Python on top
can store claims faster than this.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import orjson

from voucherd.claims import CLAIM_COLUMNS
from voucherd.persistence.journal import Insert
from voucherd.persistence.schema import SCHEMA

Row = tuple[int, int, str, str, int, str, float, str, None, None]


def measure(path: Path, rows: int, as_json: bool) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    insert = Insert("claims", CLAIM_COLUMNS, []).sql
    many = f"INSERT INTO claims ({', '.join(CLAIM_COLUMNS)}) VALUES ({', '.join('?' * 10)})"
    groups: list[list[Row]] = [
        [(n + 1, 1, f"user-{n}", "", n + 1, f"C{n:011d}", 1.7e9, "API", None, None)
         for n in range(start, min(start + 1000, rows))]
        for start in range(0, rows, 1000)
    ]  # fmt: skip
    started = time.perf_counter()
    for group in groups:
        if as_json:
            db.execute(insert, (orjson.dumps(group).decode(),))
        else:
            db.execute("BEGIN")
            db.executemany(many, group)
            db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.claim_rows", description=__doc__)
    parser.add_argument("--rows", type=int, default=300_000)
    args = parser.parse_args()
    for label, as_json in (("json_each insert", True), ("executemany", False)):
        with tempfile.TemporaryDirectory() as scratch:
            rate = measure(Path(scratch) / "claims.sqlite3", args.rows, as_json)
        print(f"{label}: {rate:,.0f} claim rows/s")


if __name__ == "__main__":
    main()
