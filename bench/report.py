"""The results table, in plain text for the terminal and Markdown for bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench.servers import CLIENT_CORE, SERVER_CORE

BUSY_WARNING = (
    "WARNING: other processes were using CPU on this machine during the run (see "
    "'Other load'); the figures are skewed by them, run again on a quiet machine"
)
HEADERS = ("Scenario", "Metric", "voucherd", "Baseline", "Baseline value", "Ratio", "Target", "Met")


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    metric: str
    voucherd: str
    baseline_name: str = ""
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""

    def cells(self) -> tuple[str, ...]:
        return (
            self.scenario,
            self.metric,
            self.voucherd,
            self.baseline_name,
            self.baseline,
            self.ratio,
            self.target,
            self.met,
        )


# What a table cell shows for a figure the run could not measure.
MISSING = "-"


def shown(value: float | None, form: str) -> str:
    """`value` formatted by `form` (such as "{:.2f} ms"), or MISSING when there is none."""
    return MISSING if value is None else form.format(value)


def times(value: float | None, baseline: float | None) -> str:
    """value / baseline as "1.23x"; blank when either is missing or the baseline is 0."""
    return f"{value / baseline:.2f}x" if value is not None and baseline else ""


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "NO")


def rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    except OSError:
        return "not installed"
    return out.split("Copyright")[0].strip() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _cpu_ticks() -> dict[int, tuple[str, int]]:
    ticks: dict[int, tuple[str, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, tail = stat.read_text().rpartition(")")
        except OSError:
            continue  # the process ended meanwhile
        fields = tail.split()
        ticks[int(stat.parent.name)] = (head.partition("(")[2], int(fields[11]) + int(fields[12]))
    return ticks


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:100]


def busy_neighbours(seconds: float = 1.0, threshold: float = 0.15) -> tuple[str, bool]:
    """Other processes using CPU now, and whether there were any: they share the bench's two
    cores and skew its figures."""
    mine = os.getpid()
    before = _cpu_ticks()
    time.sleep(seconds)
    after = _cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (name, t) in after.items():
        share = (t - before.get(pid, (name, t))[1]) / hz / seconds
        if pid != mine and share >= threshold:
            busy.append(f"{_cmdline(pid) or name} (pid {pid}) {100 * share:.0f}%")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"load average {load}; busy processes: {', '.join(busy) or 'none'}", bool(busy)


def machine_facts(
    argv: list[str], before: str, after: str, command: str = "python -m bench"
) -> list[tuple[str, str]]:
    py = sys.version.split()[0]
    libs = ", ".join(
        f"{p} {_version(p)}" for p in ("aiohttp", "uvloop", "aiosqlite", "orjson", "hdrhistogram")
    )
    return [
        ("Command", " ".join([command, shlex.join(argv)]).strip()),
        ("Date", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
        ("Machine", f"nproc {os.cpu_count()}, {_cpu_model()}, {platform.release()}"),
        ("Python", f"{py} ({platform.python_implementation()}); {libs}"),
        ("SQLite", sqlite3.sqlite_version),
        ("wrk", _wrk_version()),
        (
            "Pinning",
            f"servers (voucherd, floor, memory probes) on core {SERVER_CORE} via taskset -c "
            f"{SERVER_CORE}; wrk and the bench's Python client (batch, uploads, WebSocket "
            f"subscribers, latency probe, soak client) on core {CLIENT_CORE}",
        ),
        ("Other load, before", before),
        ("Other load, after", after),
    ]


def plain_table(rows: list[Row]) -> str:
    grid = [HEADERS, *(r.cells() for r in rows)]
    widths = [max(len(line[i]) for line in grid) for i in range(len(HEADERS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown(rows: list[Row], facts: list[tuple[str, str]], notes: list[str]) -> str:
    out = [f"## Run of {time.strftime('%Y-%m-%d %H:%M')}", ""]
    out += [f"- **{k}**: `{v}`" if k == "Command" else f"- **{k}**: {v}" for k, v in facts]
    out += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r.cells()) + " |" for r in rows]
    if notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"
