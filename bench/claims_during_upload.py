"""j. claims during an upload: single-claim latency on one list, alone and while another list
takes a large upload.

On a fresh voucherd, claims go open loop (bench.open_loop) at half its maximum to one list: first
alone for a fixed time, then at the same rate for as long as an upload of sequential codes (10M;
quick 1M) streams into a second list. The figures: the upload's codes/s, and the claims' p50, p99
and max from intended send, alone and during the upload. The target: the claims' p99 grows by
less than 2x.

The upload streams from a child process on the client core at `nice 10`, so the open-loop client
keeps its timing (the notes give how late the client saw claims due in both phases), and the
upload is not slowed by the claims' client more than the scheduler's share says.

`python -m bench.claims_during_upload [--codes N] [--rate N] [--seconds S] [--random]` runs it on
its own; without `--rate` it first measures voucherd's maximum with wrk, as the soak does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import client, lists, report, soak, standalone
from bench.open_loop import Load, OpenLoop, ms
from bench.report import MISSING, Row, rate, shown, verdict
from bench.scenarios import Profile, run_async
from bench.servers import Fleet, Server, voucherd_server

SHARE = 0.5  # of voucherd's maximum: the claims' rate
CONNECTIONS = 64
WARM_S = 2.0  # open loop at the same rate first, not recorded
LONGEST_UPLOAD_RATE = 20_000  # codes/s: the claims list holds enough codes for an upload this slow
TARGET_GROWTH = 2.0  # the claims' p99 during the upload, as a multiple of it alone
SCENARIO = "j. claims during upload"
_STARTED = "started"


@dataclass
class BusyFigures:
    codes: int  # the upload's size
    random: bool = False  # random codes instead of sequential
    maximum: float | None = None  # claims/s the rate is a share of
    alone: Load | None = None
    during: Load | None = None
    upload: client.UploadResult | None = None

    def p99_growth(self) -> float | None:
        alone = ms(self.alone.latency, 99.0) if self.alone else None
        during = ms(self.during.latency, 99.0) if self.during else None
        return during / alone if alone and during is not None else None


def busy_side(
    fleet: Fleet,
    module: str,
    work_dir: Path,
    maximum: float,
    seconds: float,
    notes: list[str],
    figures: BusyFigures,
    server: Server | None = None,
) -> None:
    """Fills `figures` as it goes. `server`: a started voucherd to use, else a fresh one."""
    if server is None:
        server = voucherd_server(work_dir, work_dir / "busy-data", module)
        fleet.start(server)
    figures.maximum = maximum
    claims_rate = SHARE * maximum
    # The claims during the upload last as long as it does: size the list for a slow upload.
    during_cap = figures.codes / LONGEST_UPLOAD_RATE + 10.0
    count = int(1.2 * claims_rate * (WARM_S + seconds + during_cap)) + 10_000
    claims_list = run_async(lists.filled_list(server, "bench-busy", "claims", "K", count, notes))
    upload_list = run_async(lists.new_list(server, "bench-busy", "upload"))
    path = f"/v1/lists/{claims_list}/claims"

    warm = Load(claims_rate, WARM_S, CONNECTIONS)
    run_async(OpenLoop(server.url, path, "busy-warm-", warm, server).run())
    alone = figures.alone = Load(claims_rate, seconds, CONNECTIONS)
    try:
        run_async(OpenLoop(server.url, path, "busy-alone-", alone, server).run())
        during = figures.during = Load(claims_rate, during_cap, CONNECTIONS)
        opened = OpenLoop(server.url, path, "busy-during-", during, server)
        figures.upload = run_async(_during(server, upload_list, figures, opened))
    finally:
        busy_notes(figures, notes)
    lists.stop(server, "busy server", notes)


async def _during(
    server: Server, list_id: int, figures: BusyFigures, opened: OpenLoop
) -> client.UploadResult:
    """The upload in a child process, the claims open loop from its start to its reply."""
    cmd = [sys.executable, "-m", "bench.claims_during_upload", "--upload-to", server.url]
    cmd += ["--list", str(list_id), "--codes", str(figures.codes)]
    cmd += ["--random"] if figures.random else []
    child = await asyncio.create_subprocess_exec(
        "nice", "-n", "10", *cmd, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        line = await child.stdout.readline()  # the child is about to send its first byte
        if line.strip() != _STARTED.encode():
            raise client.ApiError(f"upload child: {line!r}")
        claims = asyncio.create_task(opened.run())
        reply = await child.stdout.readline()
        if claims.done():
            opened.figures.stopped = "the claims' schedule ended before the upload did"
        opened.finish()
        await claims
        if await child.wait() != 0 or not reply:
            raise client.ApiError(f"upload child exited {child.returncode}: {reply!r}")
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    raw = json.loads(reply)
    return client.UploadResult(raw["count"], raw["accepted"], raw["seconds"], raw["reply"])


def busy_notes(figures: BusyFigures, notes: list[str]) -> None:
    up = figures.upload
    if up is not None:
        kind = "random" if figures.random else "sequential"
        notes.append(
            f"scenario j: upload of {up.count:,} {kind} codes: {up.accepted:,} accepted in "
            f"{up.seconds:.1f} s, {up.count / up.seconds:,.0f} codes/s, beside the claims"
            + ("" if up.accepted == up.count else f" (SHORT: {up.reply})")
        )
    for when, load in (("alone", figures.alone), ("during the upload", figures.during)):
        if load is not None:
            notes.append(f"scenario j claims {when}: {load.describe()}")


def busy_rows(figures: BusyFigures) -> list[Row]:
    up = figures.upload
    kind = "random" if figures.random else "sequential"
    share = f"{100 * SHARE:.0f}% of max" + (
        f" ({SHARE * figures.maximum:,.0f}/s)" if figures.maximum else ""
    )
    rows = [
        Row(
            SCENARIO,
            f"upload codes/s, {figures.codes / 1e6:g}M {kind} codes, claims at {share} beside",
            rate(up.count / up.seconds) if up else MISSING,
        )
    ]
    for label, percentile in (("p50", 50.0), ("p99", 99.0), ("max", None)):
        alone = ms(figures.alone.latency, percentile) if figures.alone else None
        during = ms(figures.during.latency, percentile) if figures.during else None
        is_p99 = percentile == 99.0
        growth = during / alone if alone and during is not None else None
        rows.append(
            Row(
                SCENARIO,
                f"claims' {label} from intended send during the upload, {share}",
                shown(during, "{:.2f} ms"),
                "same claims, no upload",
                shown(alone, "{:.2f} ms"),
                f"{growth:.2f}x" if growth is not None else "",
                f"< {TARGET_GROWTH:g}x" if is_p99 else "",
                verdict(None if growth is None or not is_p99 else growth < TARGET_GROWTH),
            )
        )
    loads = [x for x in (figures.alone, figures.during) if x is not None]
    both = len(loads) == 2
    held = all(x.held for x in loads)
    rows.append(
        Row(
            SCENARIO,
            "claims without a 2xx, alone / during; rate held both times",
            " / ".join(f"{x.errors:,}" for x in loads) + ("; yes" if held else "; NO")
            if both
            else MISSING,
            target="0 / 0; yes",
            met=verdict(None if not both else held and all(x.errors == 0 for x in loads)),
        )
    )
    return rows


# ---------------------------------------------------------------------------------------------
# On its own, and the child process that streams the upload.


async def _upload_child(url: str, list_id: int, count: int, random: bool) -> None:
    async with client.session() as http:
        print(_STARTED, flush=True)
        if random:
            up = await client.upload_random(http, url, list_id, count)
        else:
            up = await client.upload(http, url, list_id, "U", count)
    print(json.dumps({"count": up.count, "accepted": up.accepted, "seconds": up.seconds,
                      "reply": up.reply}), flush=True)  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.claims_during_upload", description=__doc__
    )
    parser.add_argument("--codes", type=int, default=Profile.full().busy_upload_codes)
    parser.add_argument("--random", action="store_true", help="random codes, not sequential")
    parser.add_argument(
        "--rate",
        type=float,
        help=f"claims/s (default: {100 * SHARE:.0f}%% of the maximum wrk measures first)",
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="the claims alone")
    standalone.common_options(parser)
    parser.add_argument("--upload-to", help=argparse.SUPPRESS)  # the child: stream one upload
    parser.add_argument("--list", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.upload_to:
        run_async(_upload_child(args.upload_to, args.list, args.codes, args.random))
        return 0
    command = "python -m bench.claims_during_upload"
    work_dir = standalone.prepare(command, args.work_dir)
    load_before = report.busy_neighbours()
    notes: list[str] = []
    figures = BusyFigures(args.codes, args.random)
    fleet = Fleet()

    def run() -> None:
        server = voucherd_server(work_dir, work_dir / "busy-data", args.module)
        fleet.start(server)
        measured = soak.warm_up(server, 20_000.0, args.rate is None, "j", notes)
        if measured is not None:
            notes.append(f"scenario j maximum: {soak.describe_capacity(*measured)}")
        maximum = measured[0].rps if measured else args.rate / SHARE
        busy_side(fleet, args.module, work_dir, maximum, args.seconds, notes, figures, server)

    standalone.run_steps([("voucherd: claims during an upload", run)], notes, fleet)
    table = busy_rows(figures)
    standalone.finish(command, argv, load_before, table, notes, work_dir, args.markdown_out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
