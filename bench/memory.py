"""k. memory at scale: voucherd's resident bytes per available code at 1, 10 and 100 million codes,
and its restart-to-ready time holding them.

Each size runs on a fresh voucherd and data dir: VmRSS right after start, an upload of that many
sequential codes to one list, VmRSS once it has settled (as in scenario d), then a SIGKILL and
the time from spawn to the first 200 from /readyz, the list's counts compared before and after,
and VmRSS once more after the restart (the codes loaded back from disk rather than uploaded). The
size scenario d measured already (its upload runs on a fresh server too) is taken from d, not
run again. Each size's data dir is removed after it (100M codes take gigabytes).

100M codes upload in about three and a half minutes here, so `python -m bench` runs them only
with `--memory-100m`; `python -m bench.memory [--sizes N ...]` runs any sizes on their own.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import client, lists, report, standalone
from bench.report import MISSING, Row, shown, times, verdict
from bench.scenarios import Profile, SettledRss, StateFigures, run_async, settled_rss
from bench.servers import Fleet, voucherd_server

LARGE = 100_000_000  # the spec's largest size; `--memory-100m` adds it to a bench run
TARGET_BYTES_PER_CODE = 24.0
READY_TIMEOUT_S = 900.0  # a restart holding 100M codes loads them all first
SCENARIO = "k. memory at scale"
MIB = 2**20


@dataclass
class SizeFigures:
    codes: int
    from_d: bool = False  # measured by scenario d on its server, not here
    rss_empty: int | None = None
    upload: client.UploadResult | None = None
    settled: SettledRss | None = None
    ready_empty_s: float | None = None
    ready_after_kill_s: float | None = None
    rss_after_restart: SettledRss | None = None

    def bytes_per_code(self) -> float | None:
        if self.rss_empty is None or self.settled is None:
            return None
        return (self.settled.rss - self.rss_empty) / self.codes


@dataclass
class MemoryFigures:
    sizes: list[SizeFigures] = field(default_factory=list)


def memory_side(
    fleet: Fleet,
    profile: Profile,
    work_dir: Path,
    sizes: tuple[int, ...],
    state: StateFigures | None,
    notes: list[str],
    figures: MemoryFigures,
) -> None:
    """Every size in turn, smallest first; `state`, when given, supplies scenario d's size."""
    for count in sorted(set(sizes)):
        size = SizeFigures(count)
        figures.sizes.append(size)
        if state is not None and _from_d(count, profile, state, size):
            continue
        try:
            _one_size(fleet, profile, work_dir, size, notes)
        finally:
            if size.settled is not None:
                notes.append(size_note(size))


def _from_d(count: int, profile: Profile, state: StateFigures, size: SizeFigures) -> bool:
    if count != profile.upload_codes or state.upload is None or state.rss_loaded is None:
        return False
    size.from_d = True
    size.rss_empty, size.upload = state.rss_empty, state.upload
    size.settled = SettledRss(state.rss_loaded, 0.0, True)
    size.ready_empty_s = state.ready_empty_s
    return True


def _one_size(
    fleet: Fleet, profile: Profile, work_dir: Path, size: SizeFigures, notes: list[str]
) -> None:
    data_dir = work_dir / f"memory-{size.codes}-data"
    server = voucherd_server(work_dir, data_dir, profile.module)
    size.ready_empty_s = fleet.start(server)
    size.rss_empty = server.rss()
    list_id = run_async(lists.new_list(server, "bench-memory", f"codes-{size.codes}"))
    size.upload = run_async(lists.upload(server, list_id, "M", size.codes))
    if size.upload.accepted != size.codes:
        notes.append(
            f"scenario k: upload of {size.codes:,} codes accepted {size.upload.accepted:,}: "
            f"{size.upload.reply}"
        )
    size.settled = settled_rss(server, profile.settle_seconds)
    before = run_async(lists.codes(server, list_id))
    server.kill()
    size.ready_after_kill_s = fleet.start(server, timeout=READY_TIMEOUT_S)
    after = run_async(lists.codes(server, list_id))
    if after != before:
        notes.append(f"scenario k: list counts after SIGKILL were {after}, before {before}")
    size.rss_after_restart = settled_rss(server, profile.settle_seconds, first_after=1.0)
    lists.stop(server, "memory server", notes)
    shutil.rmtree(data_dir, ignore_errors=True)


def size_note(size: SizeFigures) -> str:
    up, settled = size.upload, size.settled
    assert up is not None
    assert settled is not None
    assert size.rss_empty is not None
    note = (
        f"scenario k, {size.codes:,} codes: RSS {size.rss_empty / MIB:,.1f} MiB empty, "
        f"{settled.rss / MIB:,.1f} MiB holding them ({settled.describe()}); upload "
        f"{up.count / up.seconds:,.0f} codes/s over {up.seconds:.1f} s"
    )
    if size.from_d:
        return note + " (scenario d's server and upload)"
    if size.ready_after_kill_s is not None and size.rss_after_restart is not None:
        note += (
            f"; after SIGKILL ready in {size.ready_after_kill_s:.2f} s, RSS then "
            f"{size.rss_after_restart.rss / MIB:,.1f} MiB (settled: "
            f"{'yes' if size.rss_after_restart.settled else 'NO'})"
        )
    return note


def memory_rows(figures: MemoryFigures) -> list[Row]:
    rows: list[Row] = []
    for size in figures.sizes:
        n = f"{size.codes / 1e6:g}M codes" + (" (scenario d)" if size.from_d else "")
        bpc = size.bytes_per_code()
        empty, loaded = size.rss_empty, size.settled.rss if size.settled else None
        rows.append(
            Row(
                SCENARIO,
                f"RSS bytes per available code, {n}",
                shown(bpc, "{:.1f} B"),
                "RSS empty -> holding them",
                f"{empty / MIB:,.1f} -> {loaded / MIB:,.1f} MiB"
                if empty is not None and loaded is not None
                else MISSING,
                "",
                f"<= {TARGET_BYTES_PER_CODE:g} B",
                verdict(None if bpc is None else bpc <= TARGET_BYTES_PER_CODE),
            )
        )
        if size.from_d:
            continue  # its restart is scenario e's, with more on the server
        ready, empty_s = size.ready_after_kill_s, size.ready_empty_s
        rows.append(
            Row(
                SCENARIO,
                f"spawn to /readyz 200 after SIGKILL, {n}",
                shown(ready, "{:.2f} s"),
                "empty data dir",
                shown(empty_s, "{:.2f} s"),
                times(ready, empty_s),
            )
        )
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, LARGE], help="code counts"
    )
    standalone.common_options(parser)
    args = parser.parse_args(argv)
    command = "python -m bench.memory"
    work_dir = standalone.prepare(command, args.work_dir)
    load_before = report.busy_neighbours()
    notes: list[str] = []
    figures = MemoryFigures()
    fleet = Fleet()
    profile = Profile.full(args.module)

    def run() -> None:
        memory_side(fleet, profile, work_dir, tuple(args.sizes), None, notes, figures)

    standalone.run_steps([("voucherd: memory at scale", run)], notes, fleet)
    table = memory_rows(figures)
    standalone.finish(command, argv, load_before, table, notes, work_dir, args.markdown_out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
