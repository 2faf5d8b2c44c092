"""Baselines that need no server: raw SQLite inserts and the memory of plain Python containers."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.codes import codes, random_codes
from bench.servers import SERVER_CORE
from voucherd.settings import Settings


def sqlite_insert_seconds(count: int, work_dir: Path) -> float:
    """Wall time of one executemany of `count` codes into an indexed table in a WAL file."""
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        db = sqlite3.connect(Path(tmp) / "baseline.db")
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE codes (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE)")
            began = time.perf_counter()
            with db:  # one transaction, committed on exit
                db.executemany(
                    "INSERT INTO codes (code) VALUES (?)", ((c,) for c in codes("S", count))
                )
            return time.perf_counter() - began
        finally:
            db.close()


def sqlite_random_insert_seconds(
    count: int, work_dir: Path, batch: int = Settings().upload_chunk_codes
) -> float:
    """Wall time of inserting `count` random codes into an indexed table, `batch` codes per
    transaction, in a WAL file with synchronous=FULL: what voucherd's code index does with an
    upload's chunks.

    The cache size and checkpoint interval are the code index's, so neither side gets more
    memory to absorb the random index inserts than the other.
    """
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        db = sqlite3.connect(Path(tmp) / "baseline-random.db")
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA cache_size=-32768")
            db.execute("CREATE TABLE codes (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE)")
            rows = ((c,) for c in random_codes(count))
            began = time.perf_counter()
            while part := list(itertools.islice(rows, batch)):
                with db:  # one transaction per batch, committed on exit
                    db.executemany("INSERT INTO codes (code) VALUES (?)", part)
            return time.perf_counter() - began
        finally:
            db.close()


def commit_ms(work_dir: Path, commits: int = 100) -> float:
    """Mean latency of a one-row commit in WAL with synchronous=FULL on the data dirs' disk.

    voucherd's durable claims wait for a commit like this, so it bounds single-claim latency.
    """
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        db = sqlite3.connect(Path(tmp) / "commit.db")
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE t (x INTEGER)")
            began = time.perf_counter()
            for i in range(commits):
                with db:
                    db.execute("INSERT INTO t VALUES (?)", (i,))
            return (time.perf_counter() - began) / commits * 1e3
        finally:
            db.close()


# Runs in a fresh interpreter, so its RSS before/after is as clean as voucherd's own.
_MEMORY_PROBE = """
import collections, json, sys
from pathlib import Path
from bench.codes import csv_chunks

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

kind, n = sys.argv[1], int(sys.argv[2])
before = rss()
if kind == "deque":
    held = collections.deque()
    for chunk in csv_chunks("M", n):
        held.extend(chunk.decode("ascii").split("\\n")[:-1])
else:
    held = bytearray()
    for chunk in csv_chunks("M", n):
        held += chunk.replace(b"\\n", b"")
after = rss()
assert len(held) == (n if kind == "deque" else 12 * n)
print(json.dumps({"before": before, "after": after}))
"""


def container_bytes_per_code(kind: str, count: int) -> float:
    """RSS growth per code of a `deque` of str or a packed `bytes` buffer holding `count` codes."""
    cmd = ["taskset", "-c", str(SERVER_CORE), sys.executable, "-c", _MEMORY_PROBE, kind, str(count)]
    done = subprocess.run(
        cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent
    )
    raw = json.loads(done.stdout)
    return float(raw["after"] - raw["before"]) / count


@dataclass
class BaselineFigures:
    count: int = 0
    sqlite_s: float | None = None
    random_count: int = 0
    sqlite_random_s: float | None = None
    deque_bpc: float | None = None
    packed_bpc: float | None = None


def measure(figures: BaselineFigures, count: int, random_count: int, work_dir: Path) -> None:
    """Fills `figures` as it goes, so a failure part-way still leaves what was measured."""
    figures.count = count
    figures.sqlite_s = sqlite_insert_seconds(count, work_dir)
    figures.random_count = random_count
    figures.sqlite_random_s = sqlite_random_insert_seconds(random_count, work_dir)
    figures.deque_bpc = container_bytes_per_code("deque", count)
    figures.packed_bpc = container_bytes_per_code("packed", count)
