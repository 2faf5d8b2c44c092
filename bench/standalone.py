"""What every bench entry point does around its scenarios: signals, the client core, the work
dir, running the steps so a failure or Ctrl-C still stops every server, and printing the table."""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import report, scenarios, wrk
from bench.report import Row
from bench.servers import CLIENT_CORE, Fleet

ROOT = Path(__file__).resolve().parent.parent

Step = tuple[str, Callable[[], None]]


def common_options(parser: argparse.ArgumentParser) -> None:
    """--module, --work-dir and --markdown-out, which every entry point takes."""
    parser.add_argument(
        "--module", default="voucherd", help="server to bench, run as `python -m MODULE serve`"
    )
    parser.add_argument("--work-dir", type=Path, help="keep data dirs and logs here")
    parser.add_argument("--markdown-out", type=Path, help="also write the Markdown to this file")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def prepare(command: str, work_dir: Path | None, what: str = "") -> Path:
    """Signals, pinning and wrk for a run; returns the work dir (a fresh one unless given)."""
    # SIGTERM (and SIGINT even where a shell ignored it) unwind through `run_steps`'s
    # finally-block, which stops every server the run started.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    # The bench's own client work (bodies, upload streams, open-loop claims) stays off the
    # server's core.
    os.sched_setaffinity(0, {CLIENT_CORE})
    wrk.ensure_wrk()
    os.chdir(ROOT)
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix="voucherd-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"{command}: {what + ', ' if what else ''}logs and data in {work_dir}", flush=True)
    return work_dir


def run_steps(steps: Sequence[Step], notes: list[str], fleet: Fleet) -> None:
    """Each step in turn, a failure a note; whatever happens, every server is stopped. How
    long each step took becomes the last note."""
    took: list[str] = []
    started = time.monotonic()
    try:
        for title, run in steps:
            print(f"bench: {title} ...", flush=True)
            began = time.monotonic()
            scenarios.attempt(title, notes, run)
            took.append(f"{title}: {time.monotonic() - began:.0f} s")
    except KeyboardInterrupt as exc:
        notes.append(f"interrupted ({exc or 'SIGINT'}): the figures are partial")
    finally:
        fleet.stop_all()
        total = (time.monotonic() - started) / 60
        notes.append(f"time taken: {total:.1f} min in all; by step, " + "; ".join(took))


def finish(
    command: str,
    argv: list[str],
    load_before: tuple[str, bool],
    table: list[Row],
    notes: list[str],
    work_dir: Path,
    markdown_out: Path | None = None,
    extra_facts: Sequence[tuple[str, str]] = (),
    markdown_title: str = "Markdown",
) -> None:
    """The facts, the table and the notes, in plain text and then as Markdown."""
    load_after = report.busy_neighbours()
    if load_before[1] or load_after[1]:
        notes.insert(0, report.BUSY_WARNING)
    facts = report.machine_facts(argv, load_before[0], load_after[0], command)
    facts += extra_facts
    print()
    for key, value in facts:
        print(f"{key}: {value}")
    print()
    print(report.plain_table(table))
    if notes:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in notes))
    md = report.markdown(table, facts, notes)
    print(f"\n----- {markdown_title} -----\n")
    print(md)
    if markdown_out:
        markdown_out.write_text(md)
    print(f"logs: {work_dir}")
