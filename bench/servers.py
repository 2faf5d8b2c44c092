"""Server subprocesses: start pinned to a core, wait for /readyz, read RSS, stop for sure."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SERVER_CORE = 0
CLIENT_CORE = 1
HOST = "127.0.0.1"


class ServerFailed(RuntimeError):
    """The server exited or never became ready; the message carries its stderr tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def rss_bytes(pid: int) -> int:
    """VmRSS of a live process, from /proc (kB there)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ServerFailed(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a live process, from /proc/PID/stat."""
    # Fields after the command name, which may itself hold spaces, so split after its ')'.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _readyz_ok(port: int) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@dataclass
class Server:
    """One server process. `taskset` execs the server, so `proc.pid` is the server's own pid."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None  # run as this user (PostgreSQL refuses to run as root)
    stop_signal: int = signal.SIGTERM  # what `stop` sends first
    ready_check: Callable[[int], bool] | None = None  # given the port; default: GET /readyz
    proc: subprocess.Popen[bytes] | None = None
    spawned_at: float = 0.0

    def start(self) -> None:
        cmd = ["taskset", "-c", str(SERVER_CORE), *self.argv]
        log = self.log_path.open("ab")
        log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
        log.flush()
        self.spawned_at = time.perf_counter()
        # A session of its own: a Ctrl-C in the terminal reaches the bench only, and the bench's
        # finally-block stops the servers in order.
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
            user=self.user,
            group=self.user,
            extra_groups=None if self.user is None else [],
        )
        log.close()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerFailed(f"{self.name} not started")
        return self.proc.pid

    def wait_ready(self, timeout: float = 120.0, poll: float = 0.005) -> float:
        """Seconds from spawn to the first 200 from /readyz."""
        deadline = self.spawned_at + timeout
        while time.perf_counter() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerFailed(f"{self.name} exited with {self.proc.returncode}\n{self.tail()}")
            if (self.ready_check or _readyz_ok)(self.port):
                return time.perf_counter() - self.spawned_at
            time.sleep(poll)
        raise ServerFailed(f"{self.name} not ready after {timeout:.0f} s\n{self.tail()}")

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 60.0) -> tuple[int | None, float]:
        """`stop_signal` (SIGTERM), then SIGKILL past the timeout. Returns (exit status, seconds
        to exit)."""
        if self.proc is None or self.proc.poll() is not None:
            return (None if self.proc is None else self.proc.returncode), 0.0
        began = time.perf_counter()
        self.proc.send_signal(self.stop_signal)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"{self.name}: no exit {timeout:.0f} s after a stop, killing", file=sys.stderr)
            self.kill()
            status = self.proc.returncode
        return status, time.perf_counter() - began

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def floor_server(log_dir: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "bench.floor", "--host", HOST, "--port", str(port)]
    return Server("floor", argv, port, log_dir / "floor.log")


def prototype_server(log_dir: Path, codes: int) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "bench.prototype", "--host", HOST, "--port", str(port)]
    argv += ["--data-dir", str(log_dir / "prototype-data"), "--codes", str(codes)]
    return Server("prototype", argv, port, log_dir / "prototype.log")


def voucherd_server(log_dir: Path, data_dir: Path, module: str = "voucherd") -> Server:
    port = free_port()
    argv = [sys.executable, "-m", module, "serve", "--host", HOST, "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    return Server("voucherd", argv, port, log_dir / f"voucherd-{data_dir.name}.log")


class Fleet:
    """Every server the bench started, so one finally-block stops them all."""

    def __init__(self) -> None:
        self._servers: list[Server] = []

    def start(self, server: Server, timeout: float = 120.0) -> float:
        if all(known is not server for known in self._servers):
            self._servers.append(server)
        server.start()
        return server.wait_ready(timeout)

    def stop_all(self) -> None:
        for server in reversed(self._servers):
            try:
                server.stop(timeout=30.0)
            except Exception as exc:  # one failure must not leave the others running
                print(f"stopping {server.name}: {exc!r}", file=sys.stderr)
                server.kill()
        self._servers.clear()
