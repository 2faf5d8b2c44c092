"""The short tour of the README, end to end: create a list, upload codes, claim one; and the
tour's own commands, run as written against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
from support import Client, ServerProcess, assert_balanced, create_list, get_list, upload

README = Path(__file__).resolve().parent.parent / "README.md"


async def test_a_list_hands_out_an_uploaded_code(client: Client) -> None:
    created = await create_list(client)
    status, reply = await upload(client, created["id"], "code\nPM500FF\nPM500FG\n")
    assert status == 201
    assert reply["accepted"] == 2

    response = await client.post(f"/v1/lists/{created['id']}/claims", json={"user_id": "u-42"})
    assert response.status == 201
    claim = (await response.json())["claim"]
    assert claim["code"] == "PM500FF"

    listing = await get_list(client, created["id"])
    assert listing["codes"] == {"uploaded": 2, "available": 1, "distributed": 1, "withdrawn": 0}
    assert_balanced(listing)


def tour_script(port: int) -> str:
    """The README's tour, pointed at a server on `port`; the event follower stops after one."""
    text = README.read_text()
    start = text.index("```sh", text.index("## A short tour")) + len("```sh")
    script = text[start : text.index("```", start)]
    script = script.replace("localhost:8080", f"127.0.0.1:{port}")
    script = script.replace(".venv/bin/voucherd", f"{sys.executable} -m voucherd")
    script = script.replace("--types voucher.rewarded", "--types voucher.rewarded --count 1")
    return "set -euo pipefail\n" + script


async def test_the_readme_tour_runs_as_written(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    server_process.start()
    await server_process.wait_ready()
    env = {**os.environ, "VOUCHERD_URL": server_process.url}
    shell = await asyncio.create_subprocess_exec(
        "bash", "-c", tour_script(server_process.port), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(shell.communicate(), 60)
    assert shell.returncode == 0, err.decode()
    assert b'"error":{' not in out, out.decode()  # an error reply; `"error":null` is none
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        async with session.get("/v1/lists/1") as response:
            listing = await response.json()
        async with session.get("/v1/campaigns/1") as response:
            campaign = await response.json()
    # Three claims and the campaign's reward, from codes the tour uploaded.
    assert listing["codes"]["distributed"] == 4, listing
    assert listing["codes"]["uploaded"] == listing["codes"]["available"] + 4
    assert campaign["rewards"]["issued"] == 1, campaign
    # The follower's line comes last, after the page of events (curl ends no line).
    followed = out.rsplit(b'"last_seq":', 1)[1].split(b"}", 1)[1]
    assert json.loads(followed)["type"] == "voucher.rewarded", followed
