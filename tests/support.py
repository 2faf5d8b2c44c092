"""Helpers the tests share: a list to claim from, uploads, and voucherd as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from voucherd.claims import CLAIM_COLUMNS
from voucherd.pool import unpack

FUTURE = "2030-01-01T00:00:00Z"

Client = TestClient[Any, Any]


# A test server's client, or a session talking to a server process.
Caller = Client | aiohttp.ClientSession


async def call(
    client: Caller, method: str, path: str, body: Any = None, **params: str
) -> tuple[int, Any]:
    """A JSON request: (status, decoded reply)."""
    response = await client.request(method, path, json=body, params=params)
    return response.status, await response.json()


async def pages(
    client: Caller, path: str, items: str, id_field: str, limit: int, **params: str
) -> list[list[Any]]:
    """Every page of a collection read `limit` at a time, each page asked for after the last
    id of the one before; checks that `has_more` is true on every page but the last."""
    found: list[list[Any]] = []
    after = 0
    while True:
        status, reply = await call(
            client, "GET", path, **params, limit=str(limit), after=str(after)
        )
        assert status == 200, reply
        page: list[Any] = reply[items]
        assert len(page) <= limit, reply
        found.append(page)
        if not reply["has_more"]:
            return found
        assert len(page) == limit, reply
        after = page[-1][id_field]


def error_code(reply: Any) -> str:
    """The code of an error reply, checked to have the contract's shape."""
    assert set(reply) == {"error"}, reply
    assert isinstance(reply["error"]["message"], str), reply
    assert reply["error"]["message"], reply
    code: str = reply["error"]["code"]
    return code


def list_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "partner": "Puma",
        "tag": "holi2025",
        "name": "Holi 2025 Sale",
        "description": "Orders above $100",
        "expires_at": FUTURE,
    }
    body.update(overrides)
    return body


async def create_list(client: Client, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/v1/lists", json=list_body(**overrides))
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def upload(
    client: Client, list_id: int, body: bytes | str, filename: str = "codes.csv"
) -> tuple[int, dict[str, Any]]:
    data = body.encode() if isinstance(body, str) else body
    response = await client.post(
        f"/v1/lists/{list_id}/uploads",
        params={"filename": filename},
        data=data,
        headers={"Content-Type": "text/csv"},
    )
    reply: dict[str, Any] = await response.json()
    return response.status, reply


def codes_csv(codes: Iterable[str]) -> str:
    return "".join(f"{code}\n" for code in codes)


def make_codes(count: int, prefix: str = "C") -> list[str]:
    return [f"{prefix}{index:011d}" for index in range(count)]


async def list_with_codes(client: Client, codes: list[str], **overrides: Any) -> int:
    created = await create_list(client, **overrides)
    status, reply = await upload(client, created["id"], codes_csv(codes))
    assert status == 201, reply
    assert reply["status"] == "completed", reply
    return int(created["id"])


async def get_list(client: Client, list_id: int) -> dict[str, Any]:
    response = await client.get(f"/v1/lists/{list_id}")
    assert response.status == 200
    found: dict[str, Any] = await response.json()
    return found


def nonzero(errors: dict[str, int]) -> dict[str, int]:
    """An upload's `errors` without the reasons it reports as 0."""
    return {reason: count for reason, count in errors.items() if count}


def assert_balanced(listing: dict[str, Any]) -> None:
    codes = listing["codes"]
    assert codes["uploaded"] == codes["available"] + codes["distributed"] + codes["withdrawn"], (
        codes
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """voucherd as a real process on a real port, for crash and shutdown tests; with `config`,
    started with `--config` (API keys live only there)."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    config: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path = self.data_dir.with_suffix(f".{self.port}.log")
        command = [sys.executable, "-m", "voucherd", "serve", "--port", str(self.port),
                   "--data-dir", str(self.data_dir)]  # fmt: skip
        env = dict(os.environ)
        if self.config is not None:
            command += ["--config", str(self.config)]
            # Settings come from the file and `env` alone, not from the runner's environment.
            env = {name: value for name, value in env.items() if not name.startswith("VOUCHERD_")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**env, **self.env}
            )

    async def wait_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"voucherd exited early:\n{self.log()}")
                try:
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"voucherd not ready after {within} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def to_schema_7(db: sqlite3.Connection) -> None:
    """Bring a journal back to schema 7: a run of reward events as their own objects, one a
    line, as schema 7 stored them."""
    runs = db.execute("SELECT seq, data FROM events WHERE count > 1").fetchall()
    for seq, data in runs:
        db.execute("UPDATE events SET data = ? WHERE seq = ?", ("\n".join(_owns(data)), seq))
    db.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")


def to_schema_6(db: sqlite3.Connection) -> None:
    """Bring a journal back to schema 6: no runs, every claim and every event a row."""
    columns = ", ".join(CLAIM_COLUMNS)
    db.execute(
        f"INSERT INTO claims ({columns}) SELECT {columns} FROM every_claim"
        " WHERE id NOT IN (SELECT id FROM claims)"
    )
    runs = db.execute("SELECT seq, type, time, data, base FROM events WHERE count > 1").fetchall()
    for seq, kind, made, data, base in runs:
        db.execute("DELETE FROM events WHERE seq = ?", (seq,))
        db.executemany(
            "INSERT INTO events (seq, type, time, data, base) VALUES (?, ?, ?, ?, ?)",
            [(seq + n, kind, made, own, base) for n, own in enumerate(_owns(data))],
        )
    db.execute("DROP VIEW every_claim")
    db.execute("DROP TABLE claim_runs")
    db.execute("ALTER TABLE events DROP COLUMN count")
    db.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")


def _owns(data: str) -> list[str]:
    """A stored run of reward events as each event's own properties, the JSON its row keeps
    when it is stored alone."""
    timestamp, codes, users, messages = json.loads(data)
    return [
        json.dumps(
            {"eventTimestamp": timestamp, "voucherCode": code, "userId": user,
             "message": message},
            separators=(",", ":"),
            ensure_ascii=False,
        )
        for code, user, message in zip(codes, users, messages, strict=True)
    ]  # fmt: skip


def to_schema_5(db: sqlite3.Connection) -> None:
    """Bring a journal back to schema 5's blocks: every code ended by a newline, no width."""
    to_schema_6(db)
    blocks = db.execute("SELECT first_id, codes, width FROM code_blocks").fetchall()
    lines = [(b"\n".join([*unpack(data, width), b""]), first) for first, data, width in blocks]
    db.executemany("UPDATE code_blocks SET codes = ? WHERE first_id = ?", lines)
    db.execute("ALTER TABLE code_blocks DROP COLUMN width")
    db.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")


# -- raw HTTP, for what a well-behaved client would not send -----------------------------------


@dataclass
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_reply(reader: asyncio.StreamReader) -> RawReply:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawReply(int(status_line.split()[1]), headers, body)
