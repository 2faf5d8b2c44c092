"""Time start-up recovery of a data directory in-process: `python -m bench.recovery DATA_DIR`.

Works on a copy, so the directory is left as it was (recovery fails interrupted uploads)."""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from voucherd.persistence.recovery import recover


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__)
    parser.add_argument("data_dir", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "data"
        shutil.copytree(args.data_dir, copy)
        db = sqlite3.connect(copy / "voucherd.sqlite3", isolation_level=None)
        started = time.perf_counter()
        recovered = recover(db)
        elapsed = time.perf_counter() - started
        db.close()
    claims = sum(len(state.claims) for state in recovered.lists.values())
    codes = sum(state.pool.available for state in recovered.lists.values())
    print(f"recovered {codes:,} available codes and {claims:,} claims in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
