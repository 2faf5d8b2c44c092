from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import WSMsgType
from conftest import ClientFactory
from support import list_with_codes, make_codes, codes_csv

from voucherd.settings import Settings


async def test_exp(start_client: ClientFactory, tmp_path: Path) -> None:
    client = await start_client(Settings(data_dir=tmp_path / "data", event_buffer=50))
    list_id = await list_with_codes(client, make_codes(30000), description="x" * 2000)
    other = await list_with_codes(client, make_codes(100, prefix="O"), tag="other")
    ws = await client.ws_connect("/v1/events", compress=0)
    for round_ in range(30):
        r = await client.post(f"/v1/lists/{list_id}/claims/batch", json={"user_ids": [f"u{round_}-{n}" for n in range(1000)]})
        assert r.status == 200
        print("round", round_)
    n = 0
    while True:
        msg = await ws.receive()
        if msg.type != WSMsgType.TEXT:
            print(msg, n, ws.close_code)
            break
        n += 1
