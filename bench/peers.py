"""PostgreSQL and Redis for the bench, and the front door before each.

Each store is installed with apt when missing, started fresh in the work dir on a free loopback
port (never the system's service), pinned to the server core like voucherd, whose storage runs
in-process on that core, and stopped by the fleet with everything else.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

from bench.servers import HOST, SERVER_CORE, Server, free_port

PG_USER = "postgres"  # initdb and postgres refuse to run as root
# Enough to hold every code a run loads, and its indexes, in memory (the machine has plenty).
PG_SETTINGS = {
    "listen_addresses": HOST,
    "synchronous_commit": "on",  # durable: a claim's reply waits for its WAL on disk
    "fsync": "on",
    "full_page_writes": "on",
    "shared_buffers": "2GB",
    "wal_buffers": "64MB",
    "max_wal_size": "8GB",  # no checkpoint forced by WAL volume during a run
    "checkpoint_timeout": "30min",
    "jit": "off",  # compiling the batch statement costs more than it saves
    # Costs for a cached, SSD-backed database: without them a batch's UPDATE joins its rows by
    # a hash over the whole table instead of by primary key, and a fresh list's claim may
    # walk the primary key past every claimed row instead of the partial index.
    "random_page_cost": "1.1",
    "effective_cache_size": "16GB",
    "max_connections": "200",
}
# Connections from the door to its store. PostgreSQL: enough backends in flight for several
# commits to share a WAL flush, few enough that they do not crowd the one core; 8, 16 and 32
# measured alike within this machine's noise. Redis runs one command at a time: the pool only
# keeps requests queued at the server, and 16 did as well as 64.
PG_POOL = 16
REDIS_POOL = 16


def apt_install(package: str) -> None:
    """`apt-get install -y PACKAGE` (update only on failure), letting no service start."""
    guard = Path("/usr/sbin/policy-rc.d")  # exit 101: invoke-rc.d starts nothing
    placed = not guard.exists()
    if placed:
        guard.write_text("#!/bin/sh\nexit 101\n")
        guard.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", package]
    try:
        if subprocess.run(install, capture_output=True, env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], check=True, capture_output=True, env=env)
            subprocess.run(install, check=True, capture_output=True, env=env)
    finally:
        if placed:
            guard.unlink(missing_ok=True)


def _pg_bin_dir() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def pg_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin dir, installing the package when there is none."""
    found = _pg_bin_dir()
    if found is None:
        apt_install("postgresql")
        found = _pg_bin_dir()
    if found is None:
        raise RuntimeError("no /usr/lib/postgresql/*/bin/postgres after apt-get install")
    return found


def redis_bin() -> str:
    found = shutil.which("redis-server")
    if found is None:
        apt_install("redis-server")
        found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server after apt-get install redis-server")
    return found


def _fresh(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def _pg_ready(bin_dir: Path, socket_dir: Path, port: int) -> bool:
    cmd = [str(bin_dir / "pg_isready"), "-q", "-h", str(socket_dir), "-p", str(port)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def pg_sockets(work_dir: Path) -> Path:
    return work_dir / "postgres" / "run"


def postgres(work_dir: Path) -> Server:
    """A fresh cluster in WORK_DIR/postgres: initdb as the postgres user, then the server."""
    bin_dir = pg_bin_dir()
    owner = pwd.getpwnam(PG_USER)
    root = _fresh(work_dir / "postgres")
    data, sockets = root / "data", pg_sockets(work_dir)
    sockets.mkdir()
    for path in (root, sockets):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    # The postgres user must reach its directory: let it through (not read) the work dir.
    mode = work_dir.stat().st_mode
    if not mode & stat.S_IXOTH:
        work_dir.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust"]
    initdb += ["-E", "UTF8", "--no-locale", "--no-sync"]  # a throwaway cluster
    done = subprocess.run(initdb, capture_output=True, text=True, user=PG_USER, group=PG_USER)
    if done.returncode != 0:
        raise RuntimeError(f"initdb exited {done.returncode}: {done.stderr[-2000:]}")
    port = free_port()
    argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port)]
    for name, value in {**PG_SETTINGS, "unix_socket_directories": str(sockets)}.items():
        argv += ["-c", f"{name}={value}"]
    return Server(
        "postgres",
        argv,
        port,
        work_dir / "postgres.log",
        user=PG_USER,
        stop_signal=signal.SIGINT,  # fast shutdown; SIGTERM would wait for clients to leave
        ready_check=functools.partial(_pg_ready, bin_dir, sockets),
    )


def _redis_ready(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")  # -LOADING while it reads its AOF
    except OSError:
        return False


def redis_socket(work_dir: Path, appendfsync: str) -> str:
    """The door talks to Redis over a unix socket, sparing it the loopback TCP stack as
    PostgreSQL's socket does; sun_path holds 108 bytes, so a long work dir means TCP ("")."""
    sock = str(work_dir / f"redis-{appendfsync}" / "redis.sock")
    return sock if len(sock) < 100 else ""


def redis(work_dir: Path, appendfsync: str) -> Server:
    """A fresh redis-server in WORK_DIR/redis-APPENDFSYNC, AOF on, no RDB snapshots."""
    root = _fresh(work_dir / f"redis-{appendfsync}")
    port = free_port()
    argv = [redis_bin(), "--bind", HOST, "--port", str(port), "--dir", str(root)]
    argv += ["--appendonly", "yes", "--appendfsync", appendfsync, "--save", ""]
    argv += ["--daemonize", "no", "--logfile", ""]
    if sock := redis_socket(work_dir, appendfsync):
        argv += ["--unixsocket", sock, "--unixsocketperm", "700"]
    return Server(
        f"redis ({appendfsync})",
        argv,
        port,
        work_dir / f"redis-{appendfsync}.log",
        ready_check=_redis_ready,
    )


def door(work_dir: Path, name: str, kind: str, store_port: int, store_socket: str) -> Server:
    """The front door (bench.peer_door) before a store; KIND is `postgres` or `redis`."""
    port = free_port()
    pool = PG_POOL if kind == "postgres" else REDIS_POOL
    argv = [sys.executable, "-m", "bench.peer_door", "--store", kind, "--host", HOST]
    argv += ["--port", str(port), "--store-port", str(store_port)]
    argv += ["--store-socket", store_socket, "--pool", str(pool)]
    return Server(f"{name} door", argv, port, work_dir / f"door-{name}.log")


def core_busy_seconds(core: int = SERVER_CORE) -> float:
    """CPU time the core spent busy (not idle or waiting on I/O), from /proc/stat: the door and
    its store share the server core, in several processes."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(x) for x in line.split()[1:]]
            idle = ticks[3] + ticks[4]  # idle, iowait
            return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    raise RuntimeError(f"no cpu{core} in /proc/stat")
