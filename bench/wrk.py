"""Run wrk pinned to the client core and read the line claims.lua's done() prints."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.servers import CLIENT_CORE

LUA_SCRIPT = Path(__file__).with_name("claims.lua")
_MARK = "BENCH_WRK "


class WrkFailed(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class WrkResult:
    connections: int
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s


def ensure_wrk() -> str:
    """Path to wrk, installing the Debian package if missing (apt-get update only on failure)."""
    found = shutil.which("wrk")
    if found:
        return found
    install = ["apt-get", "install", "-y", "wrk"]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(install, check=True, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise WrkFailed("wrk not found after apt-get install")
    return found


def parse(output: str, connections: int) -> WrkResult:
    for line in output.splitlines():
        if line.startswith(_MARK):
            raw = json.loads(line[len(_MARK) :])
            break
    else:
        raise WrkFailed(f"no {_MARK.strip()} line in wrk output:\n{output}")
    socket_errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors"))
    return WrkResult(
        connections=connections,
        requests=raw["requests"],
        duration_s=raw["duration_us"] / 1e6,
        # wrk counts statuses above 399 here; voucherd answers claims with 201/200 or 4xx/5xx.
        non_2xx=raw["status_errors"],
        socket_errors=socket_errors + raw["timeout_errors"],
        p50_ms=raw["p50_us"] / 1e3,
        p90_ms=raw["p90_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        p999_ms=raw["p999_us"] / 1e3,
        max_ms=raw["max_us"] / 1e3,
    )


def run(url: str, connections: int, seconds: int, run_prefix: str, threads: int = 1) -> WrkResult:
    cmd = ["taskset", "-c", str(CLIENT_CORE), ensure_wrk(), f"-t{threads}", f"-c{connections}"]
    cmd += [f"-d{seconds}s", "--latency", "--timeout", "10s", "-s", str(LUA_SCRIPT), url]
    cmd += ["--", run_prefix]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise WrkFailed(f"wrk exited {done.returncode}: {done.stderr}{done.stdout}")
    return parse(done.stdout, connections)
