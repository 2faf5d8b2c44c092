"""Invariants 1–4 under `kill -9`: voucherd as a real process, killed in the middle of claims and
of an upload, then restarted on the same data directory."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from support import ServerProcess, assert_balanced, codes_csv, list_body, make_codes, nonzero

WORKERS = 32
BATCH_SIZE = 4


async def post(
    session: aiohttp.ClientSession, path: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with session.post(path, json=body) as response:
        reply: dict[str, Any] = await response.json()
        return response.status, reply


async def get(session: aiohttp.ClientSession, path: str) -> dict[str, Any]:
    async with session.get(path) as response:
        assert response.status == 200, await response.text()
        reply: dict[str, Any] = await response.json()
        return reply


async def upload_codes(session: aiohttp.ClientSession, list_id: int, codes: list[str]) -> None:
    async with session.post(
        f"/v1/lists/{list_id}/uploads",
        data=io.BytesIO(codes_csv(codes).encode()),
        headers={"Content-Type": "text/csv"},
    ) as response:
        reply = await response.json()
        assert response.status == 201, reply
        assert reply["status"] == "completed", reply
        assert reply["accepted"] == len(codes), reply


async def create_list(session: aiohttp.ClientSession, **overrides: Any) -> int:
    status, created = await post(session, "/v1/lists", list_body(**overrides))
    assert status == 201, created
    return int(created["id"])


async def poll(condition: Any, within: float = 20.0) -> Any:
    """Wait until `condition()` (a coroutine function) returns something truthy."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if found := await condition():
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {within} s")


@dataclass
class Ledger:
    """What the load did: every request's users, and every claim acknowledged with a 2xx."""

    acknowledged: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    attempted_users: set[str] = field(default_factory=set)
    refusals: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    def acknowledge(self, user_id: str, key: str, made: dict[str, Any]) -> None:
        self.acknowledged[(user_id, key)] = (made["id"], made["code"])


async def load(
    session: aiohttp.ClientSession, list_id: int, ledger: Ledger, worker: str, threshold: int
) -> None:
    """Claim until the server goes away: plain, keyed and batch claims in turn."""
    path = f"/v1/lists/{list_id}/claims"
    n = 0
    while True:
        n += 1
        try:
            if n % 3 == 0:
                users = [f"{worker}-{n}-{m}" for m in range(BATCH_SIZE)]
                ledger.attempted_users.update(users)
                status, reply = await post(session, f"{path}/batch", {"user_ids": users})
                if status == 200:
                    for made in reply["claims"]:
                        ledger.acknowledge(made["user_id"], "", made)
                    if reply["failed"]:
                        ledger.refusals.append((status, reply))
                else:
                    ledger.refusals.append((status, reply))
            else:
                # Keyed claims reuse one user per worker; plain ones use a fresh user each.
                user_id, key = (
                    (f"{worker}-keyed", f"key-{n}") if n % 3 == 1 else (f"{worker}-{n}", "")
                )
                ledger.attempted_users.add(user_id)
                status, reply = await post(
                    session, path, {"user_id": user_id, "idempotency_key": key}
                )
                if status in (200, 201):
                    ledger.acknowledge(user_id, key, reply["claim"])
                else:
                    ledger.refusals.append((status, reply))
        except aiohttp.ClientError:
            return  # killed: the load stops only because the server is gone
        if len(ledger.acknowledged) >= threshold:
            ledger.enough.set()


async def verify(
    session: aiohttp.ClientSession, list_id: int, ledger: Ledger, all_codes: set[str]
) -> set[str]:
    """Check invariants 1–4 after a restart; return the codes the list has handed out."""
    repeats = await asyncio.gather(
        *(
            post(session, f"/v1/lists/{list_id}/claims", {"user_id": user, "idempotency_key": key})
            for user, key in ledger.acknowledged
        )
    )
    for ((user, key), (claim_id, code)), (status, reply) in zip(
        ledger.acknowledged.items(), repeats, strict=True
    ):
        assert status == 200, (user, key, reply)
        assert (reply["claim"]["id"], reply["claim"]["code"]) == (claim_id, code), (user, key)

    trays = await asyncio.gather(
        *(get(session, f"/v1/users/{user}/vouchers") for user in ledger.attempted_users)
    )
    held = [v["code"] for tray in trays for v in tray["vouchers"] if v["list_id"] == list_id]
    assert len(held) == len(set(held)), "a code was handed out twice"
    assert set(held) <= all_codes
    assert {code for _, code in ledger.acknowledged.values()} <= set(held)

    listing = await get(session, f"/v1/lists/{list_id}")
    assert_balanced(listing)
    assert listing["codes"]["uploaded"] == len(all_codes)
    assert listing["codes"]["distributed"] == len(held), "a claim belongs to no known user"
    return set(held)


async def test_acknowledged_claims_survive_kill_9_in_the_middle_of_the_load(
    server_process: ServerProcess,
) -> None:
    server_process.start()
    await server_process.wait_ready()
    all_codes = make_codes(5000)
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        list_id = await create_list(session)
        await upload_codes(session, list_id, all_codes)

    ledger = Ledger()
    for round_ in range(3):
        ledger.enough = asyncio.Event()
        threshold = len(ledger.acknowledged) + 200
        async with aiohttp.ClientSession(base_url=server_process.url) as session:
            workers = [
                asyncio.create_task(load(session, list_id, ledger, f"r{round_}-w{i}", threshold))
                for i in range(WORKERS)
            ]
            await asyncio.wait_for(ledger.enough.wait(), timeout=60)
            server_process.kill()  # the load is still running
            await asyncio.gather(*workers)
        assert ledger.refusals == []

        server_process.start()
        await server_process.wait_ready()
        async with aiohttp.ClientSession(base_url=server_process.url) as session:
            held = await verify(session, list_id, ledger, set(all_codes))
            status, reply = await post(
                session, f"/v1/lists/{list_id}/claims", {"user_id": f"after-{round_}"}
            )
            assert status == 201, reply
            assert reply["claim"]["code"] not in held
            ledger.attempted_users.add(f"after-{round_}")
            ledger.acknowledge(f"after-{round_}", "", reply["claim"])
            held.add(reply["claim"]["code"])

    # The codes still available are exactly the ones nobody holds: exhaust the list to see.
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        available = len(all_codes) - len(held)
        users = [f"last-{n}" for n in range(available + 1)]
        status, reply = await post(
            session, f"/v1/lists/{list_id}/claims/batch", {"user_ids": users}
        )
        assert status == 200
        rest = [made["code"] for made in reply["claims"]]
        assert len(rest) == available
        assert [failure["error"]["code"] for failure in reply["failed"]] == ["list_exhausted"]
        assert held | set(rest) == set(all_codes)
        assert not held & set(rest)


async def test_an_upload_cut_off_by_kill_9_leaves_no_codes_behind(
    server_process: ServerProcess,
) -> None:
    # Several chunks of the file are stored before the kill.
    server_process.env["VOUCHERD_UPLOAD_CHUNK_CODES"] = "20000"
    server_process.start()
    await server_process.wait_ready()
    big = make_codes(200_000, prefix="BIG")
    killed = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        # Half the file, then wait for the kill, so it lands mid-stream whatever the speed.
        for offset in range(0, len(big), 2000):
            if offset == len(big) // 2:
                await killed.wait()
            yield codes_csv(big[offset : offset + 2000]).encode()

    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        list_id = await create_list(session)
        await upload_codes(session, list_id, make_codes(10, prefix="SMALL"))
        status, _ = await post(session, f"/v1/lists/{list_id}/claims", {"user_id": "u-1"})
        assert status == 201
        before = (await get(session, f"/v1/lists/{list_id}"))["codes"]

        async def stream() -> None:
            async with session.post(
                f"/v1/lists/{list_id}/uploads",
                params={"filename": "big.csv"},
                data=slow_body(),
                headers={"Content-Type": "text/csv"},
            ) as response:
                raise AssertionError(f"the upload finished: {await response.text()}")

        streaming = asyncio.create_task(stream())

        async def in_progress() -> bool:
            uploads = (await get(session, f"/v1/lists/{list_id}/uploads"))["uploads"]
            return any(u["status"] == "in_progress" and u["rows"] > 0 for u in uploads)

        await poll(in_progress)
        server_process.kill()
        killed.set()
        with pytest.raises(aiohttp.ClientError):
            await streaming

    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        uploads = (await get(session, f"/v1/lists/{list_id}/uploads"))["uploads"]
        assert [u["status"] for u in uploads] == ["completed", "failed"]
        cut_off = uploads[1]
        assert cut_off["filename"] == "big.csv"
        assert cut_off["error"]["code"] == "interrupted"
        assert cut_off["accepted"] == 0
        assert cut_off["finished_at"] is not None
        listing = await get(session, f"/v1/lists/{list_id}")
        assert listing["codes"] == before
        assert_balanced(listing)
        # Recovery wrote the failure to the event stream, once, after what came before it.
        events = (await get(session, "/v1/events?since=0&limit=10000"))["events"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        failed = [e for e in events if e["type"] == "upload.failed"]
        assert [e["data"] for e in failed] == [
            {"list_id": list_id, "upload_id": cut_off["id"], "filename": "big.csv",
             "error": "interrupted"}
        ]  # fmt: skip
        assert failed[0] == events[-1]

        # Its rows were dropped, so the same codes upload again without a duplicate.
        async with session.post(
            f"/v1/lists/{list_id}/uploads",
            params={"filename": "big.csv"},
            data=io.BytesIO(codes_csv(big).encode()),
            headers={"Content-Type": "text/csv"},
        ) as response:
            again = await response.json()
        assert response.status == 201, again
        assert again["status"] == "completed"
        assert (again["accepted"], again["rejected"], nonzero(again["errors"])) == (len(big), 0, {})
        listing = await get(session, f"/v1/lists/{list_id}")
        assert listing["codes"]["uploaded"] == before["uploaded"] + len(big)
        assert listing["codes"]["available"] == before["available"] + len(big)
        assert_balanced(listing)

    # A second restart finds nothing to fail again: no second upload.failed event.
    server_process.kill()
    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        again_events = (await get(session, "/v1/events?since=0&limit=10000"))["events"]
        assert [e for e in again_events if e["type"] == "upload.failed"] == failed
