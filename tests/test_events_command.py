"""`voucherd events` as a real command following voucherd as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import aiohttp
from support import ServerProcess, codes_csv, list_body, make_codes


async def call(server: ServerProcess, method: str, path: str, **kwargs: Any) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{server.url}{path}", **kwargs) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json()


async def claim_codes(server: ServerProcess, count: int, tag: str = "holi") -> list[str]:
    # One code to spare and no threshold: the list neither runs low nor out, so the only
    # events are the upload's and the claims'.
    body = list_body(tag=tag, low_stock_threshold=0)
    created = await call(server, "POST", "/v1/lists", json=body)
    list_id = created["id"]
    await call(
        server,
        "POST",
        f"/v1/lists/{list_id}/uploads",
        data=codes_csv(make_codes(count + 1, prefix=tag)),
        headers={"Content-Type": "text/csv"},
    )
    codes = []
    for n in range(count):
        reply = await call(server, "POST", f"/v1/lists/{list_id}/claims", json={"user_id": f"u{n}"})
        codes.append(reply["claim"]["code"])
    return codes


async def follow(server: ServerProcess, *args: str) -> asyncio.subprocess.Process:
    env = {name: value for name, value in os.environ.items() if not name.startswith("VOUCHERD_")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voucherd", "events", "--url", server.url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


async def test_the_command_prints_events_as_json_lines_and_resumes_across_a_restart(
    server_process: ServerProcess,
) -> None:
    server_process.start()
    await server_process.wait_ready()
    before = await claim_codes(server_process, 3)
    # An upload and three claims before the server is killed, as many after: eight events.
    follower = await follow(server_process, "--since", "0", "--count", "8")
    assert follower.stdout is not None
    lines = [(await asyncio.wait_for(follower.stdout.readline(), 30)).decode() for _ in range(4)]
    server_process.kill()
    server_process.start()
    await server_process.wait_ready()
    after = await claim_codes(server_process, 3, tag="diwali")
    out, err = await asyncio.wait_for(follower.communicate(), 60)
    assert follower.returncode == 0, err.decode()
    events = [json.loads(line) for line in [*lines, *out.decode().splitlines()]]
    assert [event["seq"] for event in events] == list(range(1, 9))
    rewarded = [
        event["data"]["voucherCode"] for event in events if event["type"] == "voucher.rewarded"
    ]
    assert rewarded == before + after


async def test_a_since_past_retention_ends_the_command_with_an_error(
    server_process: ServerProcess,
) -> None:
    server_process.env["VOUCHERD_EVENT_RETENTION"] = "0.2"
    server_process.start()
    await server_process.wait_ready()
    await claim_codes(server_process, 3)
    # Once the purge has run, only the newest event is kept and since=0 is past retention.
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.get(f"{server_process.url}/v1/events?since=0") as response:
                if response.status == 410:
                    break
            await asyncio.sleep(0.1)
    follower = await follow(server_process, "--since", "0")
    _, err = await asyncio.wait_for(follower.communicate(), 30)
    assert follower.returncode == 1
    assert "past retention" in err.decode()


async def test_a_refused_stream_ends_the_command_with_the_servers_reason(
    server_process: ServerProcess,
) -> None:
    server_process.start()
    await server_process.wait_ready()
    for args, says in (
        (["--types", "no.such_type"], "400 invalid_request: `types` holds 1 unknown event type"),
        (["--since", "99999"], "400 invalid_request: since=99999"),
    ):
        follower = await follow(server_process, *args)
        _, err = await asyncio.wait_for(follower.communicate(), 30)
        assert follower.returncode == 1
        assert says in err.decode(), err


async def test_a_server_serving_all_the_subscribers_it_may_is_waited_for_not_given_up_on(
    server_process: ServerProcess,
) -> None:
    server_process.env["VOUCHERD_MAX_SUBSCRIBERS"] = "1"
    server_process.start()
    await server_process.wait_ready()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{server_process.url}/v1/events") as first,
    ):
        follower = await follow(server_process, "--since", "0", "--count", "2")
        assert follower.stderr is not None
        said = await asyncio.wait_for(follower.stderr.readline(), 30)
        assert b"the server is busy (503); retrying in 1 s" in said
        await first.close()
    # Room again: the command follows the stream from where it was asked to.
    codes = await claim_codes(server_process, 1)
    out, err = await asyncio.wait_for(follower.communicate(), 30)
    assert follower.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert [event["seq"] for event in events] == [1, 2]
    assert events[1]["data"]["voucherCode"] == codes[0]
