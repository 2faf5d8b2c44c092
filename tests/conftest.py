"""Fixtures: a real voucherd app on a real socket over a real SQLite file in tmp_path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from support import Client, ServerProcess

from voucherd import claim_keys
from voucherd.server.app import create_app
from voucherd.settings import Settings

ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The code index merges its recent codes after nearly every upload, as it does every
    # million codes at scale, so duplicate checks meet codes in both of its tables.
    return Settings(data_dir=tmp_path / "data", index_merge_codes=7)


async def _ready(client: Client) -> None:
    for _ in range(400):
        response = await client.get("/readyz")
        if response.status == 200:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("voucherd did not become ready")


@pytest.fixture
async def start_client(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> ClientFactory:
    """Start an app with the given settings and wait until it is ready."""

    async def start(settings: Settings) -> Client:
        client = await aiohttp_client(create_app(settings))
        await _ready(client)
        return client

    return start


@pytest.fixture
async def client(start_client: ClientFactory, settings: Settings) -> Client:
    return await start_client(settings)


@pytest.fixture
async def restartable(settings: Settings) -> AsyncIterator[Callable[[], Awaitable[Client]]]:
    """A client whose server can be closed and started again on the same data directory."""
    clients: list[Client] = []

    async def restart() -> Client:
        if clients:
            await clients[-1].close()
        client: Client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        await _ready(client)
        clients.append(client)
        return client

    yield restart
    if clients:
        await clients[-1].close()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tiny_first_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Maps of claim keys (`ClaimKeys`) past their first dict after 7 keys instead of a million,
    so that a test's few claims reach the dicts chosen by hash."""
    monkeypatch.setattr(claim_keys, "FIRST", 7)
