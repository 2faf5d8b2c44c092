"""Storage faults, real ones: the journal's disk fills up, or another process keeps it from
writing. Claims are refused with `503 storage_unavailable`, nothing is acknowledged that was
not written, memory does not drift from the database, and the server recovers by itself.

voucherd runs as a real process with its data directory on a small tmpfs of its own, mounted
for the test (this needs root, as on the developers' machines and CI: where mounting fails the
test fails, it does not skip). A filler file takes the rest of the space; deleting it, or
growing the mount, gives the space back. What is on disk is read with sqlite3 once the server
has stopped, and compared with what clients were told.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import Client, ServerProcess, codes_csv, list_body, make_codes, nonzero

from voucherd.settings import Settings
from voucherd.stream import read_events

ClientFactory = Callable[[Settings], Awaitable[Client]]

# Small enough to fill at once, large enough for the work after space returns: the journal's
# write-ahead log grows by a few pages per commit until 10,000 pages (wal_autocheckpoint)
# before it starts over, so each commit takes new space until then.
DISK_SIZE = 16 * 1024**2
DATABASE = "voucherd.sqlite3"


class Disk:
    """A tmpfs of DISK_SIZE at `path`, and a filler file that takes its free space."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE // 1024}k", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )

    def unmount(self) -> None:
        result = subprocess.run(["umount", str(self.path)], capture_output=True)
        if result.returncode != 0:
            subprocess.run(["umount", "--lazy", str(self.path)], check=True)

    @property
    def free(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Take every free byte but `leave`."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for block in (1024**2, 4096):
                _write_until_full(fd, b"\xff" * block)
            size = os.fstat(fd).st_size
            os.ftruncate(fd, max(size - leave, 0))
        finally:
            os.close(fd)
        assert self.free <= leave + 4096

    def empty(self) -> None:
        self.filler.unlink()

    def grow(self, size: int) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={size // 1024}k", str(self.path)],
            check=True,
            capture_output=True,
        )


def empty_log(database: Path) -> None:
    """Empty the journal's write-ahead log, so the next commit must grow it: on a full disk,
    that commit fails, whatever space earlier writes left in the log."""
    with sqlite3.connect(database) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _write_until_full(fd: int, data: bytes) -> None:
    while True:
        try:
            os.write(fd, data)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                return
            raise


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    disk = Disk(tmp_path / "data")
    disk.mount()
    try:
        yield disk
    finally:
        disk.unmount()


@pytest.fixture
def server(disk: Disk) -> Iterator[ServerProcess]:
    # Its log goes next to the data directory, off the small disk.
    server = ServerProcess(disk.path)
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def session_to(server: ServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=server.url, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        yield session


async def call(
    session: aiohttp.ClientSession, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any], str | None]:
    async with session.request(method, path, json=body) as response:
        reply: dict[str, Any] = json.loads(await response.read())
        return response.status, reply, response.headers.get("Retry-After")


def assert_storage_unavailable(status: int, reply: dict[str, Any], retry_after: str | None) -> None:
    assert status == 503, (status, reply)
    assert retry_after is not None
    assert retry_after.isdigit(), retry_after
    assert set(reply) == {"error"}, reply
    assert reply["error"]["code"] == "storage_unavailable", reply
    assert reply["error"]["message"], reply


async def upload(session: aiohttp.ClientSession, list_id: int, codes: list[str]) -> Any:
    async with session.post(
        f"/v1/lists/{list_id}/uploads",
        data=codes_csv(codes).encode(),
        headers={"Content-Type": "text/csv"},
    ) as response:
        return (
            response.status,
            json.loads(await response.read()),
            response.headers.get("Retry-After"),
        )


async def new_list(session: aiohttp.ClientSession, codes: list[str], **overrides: Any) -> int:
    status, created, _ = await call(session, "POST", "/v1/lists", list_body(**overrides))
    assert status == 201, created
    list_id = int(created["id"])
    status, reply, _ = await upload(session, list_id, codes)
    assert status == 201, reply
    assert reply["status"] == "completed", reply
    return list_id


async def upload_states(session: aiohttp.ClientSession, list_id: int) -> dict[int, tuple[str, int]]:
    status, listed, _ = await call(session, "GET", f"/v1/lists/{list_id}/uploads")
    assert status == 200, listed
    return {item["id"]: (item["status"], item["accepted"]) for item in listed["uploads"]}


async def counts(session: aiohttp.ClientSession, list_id: int) -> dict[str, int]:
    status, listing, _ = await call(session, "GET", f"/v1/lists/{list_id}")
    assert status == 200, listing
    found: dict[str, int] = listing["codes"]
    assert found["uploaded"] == found["available"] + found["distributed"] + found["withdrawn"]
    return found


# -- what is on disk ---------------------------------------------------------------------------


@dataclass
class OnDisk:
    # (user, idempotency key, campaign) -> code, for one list
    claims: dict[tuple[str, str, int | None], str]
    codes: dict[str, int]
    upload_status: dict[int, str]
    event_seqs: list[int]
    rewarded_codes: Counter[str]


def read_disk(database: Path, list_id: int) -> OnDisk:
    """Read the database directly, once the server has stopped."""
    conn = sqlite3.connect(database)
    try:
        rows = conn.execute(
            "SELECT user_id, idempotency_key, campaign_id, code FROM every_claim WHERE list_id = ?",
            (list_id,),
        ).fetchall()
        claims = {(user, key, campaign): code for user, key, campaign, code in rows}
        assert len(claims) == len(rows), "one (user, key, campaign) holds two claims"
        codes = [code for *_, code in rows]
        assert len(codes) == len(set(codes)), "a code was handed out twice"
        uploaded, withdrawn = conn.execute(
            "SELECT COALESCE(SUM(accepted), 0), COALESCE(SUM(withdrawn), 0) FROM uploads"
            " WHERE list_id = ? AND status IN ('completed', 'withdrawn')",
            (list_id,),
        ).fetchone()
        # The codes stored for the list's completed uploads are exactly the ones counted.
        (stored,) = conn.execute(
            "SELECT COALESCE(SUM(b.count), 0) FROM code_blocks AS b JOIN uploads AS u"
            " ON u.id = b.upload_id WHERE b.list_id = ? AND u.status IN ('completed', 'withdrawn')",
            (list_id,),
        ).fetchone()
        assert stored == uploaded
        upload_status = dict(
            conn.execute("SELECT id, status FROM uploads WHERE list_id = ?", (list_id,))
        )
        events = [(e.seq, e.type, e.data) for e in read_events(conn, 0, 10**9, None, 10**9)]
    finally:
        conn.close()
    rewarded = Counter(
        json.loads(data)["voucherCode"]
        for _, kind, data in events
        if kind == "voucher.rewarded" and json.loads(data)["voucherListId"] == list_id
    )
    return OnDisk(
        claims=claims,
        codes={
            "uploaded": uploaded,
            "available": uploaded - len(rows) - withdrawn,
            "distributed": len(rows),
            "withdrawn": withdrawn,
        },
        upload_status=upload_status,
        event_seqs=[seq for seq, _, _ in events],
        rewarded_codes=rewarded,
    )


# -- the disk fills up under claims ------------------------------------------------------------


@dataclass
class Told:
    """What clients were told: every acknowledged claim, and every refused one."""

    acknowledged: dict[tuple[str, str, int | None], str] = field(default_factory=dict)
    refused: set[tuple[str, str, int | None]] = field(default_factory=set)
    rewards: int = 0

    def ack(self, key: tuple[str, str, int | None], code: str) -> None:
        assert code not in self.acknowledged.values() or self.acknowledged.get(key) == code, (
            f"{code} was handed out twice"
        )
        self.acknowledged[key] = code
        self.refused.discard(key)


async def a_round(
    session: aiohttp.ClientSession, list_id: int, campaign_id: int, round_: int, told: Told
) -> int:
    """Singles, keyed singles, batches and campaign rewards, all at once; the refusals."""

    async def single(n: int) -> int:
        user, key = f"s{round_}-{n}", f"k{n}" if n % 3 == 0 else ""
        body = {"user_id": user, **({"idempotency_key": key} if key else {})}
        status, reply, retry_after = await call(
            session, "POST", f"/v1/lists/{list_id}/claims", body
        )
        if status == 201:
            told.ack((user, key, None), reply["claim"]["code"])
            return 0
        assert_storage_unavailable(status, reply, retry_after)
        told.refused.add((user, key, None))
        return 1

    async def batch(n: int) -> int:
        users = [f"b{round_}-{n}-{m}" for m in range(40)]
        status, reply, retry_after = await call(
            session, "POST", f"/v1/lists/{list_id}/claims/batch", {"user_ids": users}
        )
        if status == 503:
            return 1
        assert status == 200, reply
        # Users refused for want of disk may be sent again: the reply says when.
        assert (retry_after is not None) == bool(reply["failed"]), (retry_after, reply)
        for made in reply["claims"]:
            told.ack((made["user_id"], "", None), made["code"])
        for failed in reply["failed"]:
            assert failed["error"]["code"] == "storage_unavailable", failed
            told.refused.add((failed["user_id"], "", None))
        assert len(reply["claims"]) + len(reply["failed"]) == len(users)
        return len(reply["failed"])

    async def reward(n: int) -> int:
        user = f"r{round_}-{n}"
        status, reply, retry_after = await call(
            session, "POST", f"/v1/campaigns/{campaign_id}/rewards", {"user_id": user}
        )
        if status == 201:
            assert reply["rewarded"] is True, reply
            told.ack((user, "", campaign_id), reply["reward"]["code"])
            told.rewards += 1
            return 0
        assert_storage_unavailable(status, reply, retry_after)
        told.refused.add((user, "", campaign_id))
        return 1

    refusals = await asyncio.gather(
        *(single(n) for n in range(200)),
        *(batch(n) for n in range(5)),
        *(reward(n) for n in range(40)),
    )
    return sum(refusals)


async def retry(session: aiohttp.ClientSession, list_id: int, campaign_id: int, told: Told) -> None:
    """Every refused claim again, now that there is room: each gets a fresh code."""

    async def again(user: str, key: str, campaign: int | None) -> None:
        if campaign is None:
            body = {"user_id": user, **({"idempotency_key": key} if key else {})}
            status, reply, _ = await call(session, "POST", f"/v1/lists/{list_id}/claims", body)
            assert status == 201, (user, key, reply)
            told.ack((user, key, None), reply["claim"]["code"])
        else:
            status, reply, _ = await call(
                session, "POST", f"/v1/campaigns/{campaign}/rewards", {"user_id": user}
            )
            assert status == 201, (user, campaign, reply)
            told.ack((user, key, campaign), reply["reward"]["code"])
            told.rewards += 1

    await asyncio.gather(*(again(*who) for who in list(told.refused)))
    assert not told.refused


async def test_a_full_disk_refuses_claims_with_503_keeps_every_promise_and_recovers_by_itself(
    disk: Disk, server: ServerProcess
) -> None:
    server.start()
    await server.wait_ready()
    told = Told()
    async with session_to(server) as session:
        list_id = await new_list(session, make_codes(8000))
        status, campaign, _ = await call(
            session, "POST", "/v1/campaigns",
            {"name": "Disk", "lists": [list_id], "qualification": None},
        )  # fmt: skip
        assert status == 201, campaign
        campaign_id = campaign["id"]
        assert await a_round(session, list_id, campaign_id, 0, told) == 0

        # Leave room for a few commits, then claim until the journal cannot write.
        disk.fill(leave=128 * 1024)
        for round_ in range(1, 20):
            if await a_round(session, list_id, campaign_id, round_, told):
                break
        else:
            raise AssertionError("the disk never filled up")
        assert disk.free < 64 * 1024
        assert told.refused

        # While the disk is full: what the server shows matches what clients were told.
        full = await counts(session, list_id)
        assert full["distributed"] == len(told.acknowledged)
        status, campaign, _ = await call(session, "GET", f"/v1/campaigns/{campaign_id}")
        assert campaign["rewards"]["issued"] == told.rewards
        # A claim already made is still answered, from what was written.
        (user, key, _), code = next(
            (who, code) for who, code in told.acknowledged.items() if who[1] and who[2] is None
        )
        status, reply, _ = await call(
            session, "POST", f"/v1/lists/{list_id}/claims",
            {"user_id": user, "idempotency_key": key},
        )  # fmt: skip
        assert (status, reply["claim"]["code"]) == (200, code)
        # An edit is refused too, and changes nothing.
        status, reply, retry_after = await call(
            session, "PATCH", f"/v1/lists/{list_id}", {"name": "Renamed on a full disk"}
        )
        if status != 200:
            assert_storage_unavailable(status, reply, retry_after)
            status, listing, _ = await call(session, "GET", f"/v1/lists/{list_id}")
            assert listing["name"] == "Holi 2025 Sale"

        # Space comes back: the same server, not restarted, takes claims again.
        disk.empty()
        await retry(session, list_id, campaign_id, told)
        assert await a_round(session, list_id, campaign_id, 99, told) == 0
        before = await counts(session, list_id)
        assert before["distributed"] == len(told.acknowledged)
        status, campaign, _ = await call(session, "GET", f"/v1/campaigns/{campaign_id}")
        assert campaign["rewards"]["issued"] == told.rewards
    # No flush, no checkpoint: what was acknowledged was on disk when it was acknowledged.
    server.kill()

    # On disk: every acknowledged claim, nothing else, no code twice, one event per claim,
    # the event sequence without a gap, and the counts the server showed.
    found = read_disk(disk.path / DATABASE, list_id)
    assert found.claims == told.acknowledged
    assert found.codes == before
    assert found.event_seqs == list(range(1, len(found.event_seqs) + 1))
    assert found.rewarded_codes == Counter(told.acknowledged.values())

    # And after a restart, memory is rebuilt from the disk to the same numbers.
    server.start()
    await server.wait_ready()
    async with session_to(server) as session:
        assert await counts(session, list_id) == before
        status, campaign, _ = await call(session, "GET", f"/v1/campaigns/{campaign_id}")
        assert campaign["rewards"]["issued"] == told.rewards


async def test_a_commit_the_full_disk_undid_leaves_no_trace_in_later_events(
    disk: Disk, server: ServerProcess
) -> None:
    # A list's first reward event stores the list's details (partner, tag, …) once, in the
    # same transaction, and the writer remembers their row. When the disk is full, SQLite
    # undoes the failed COMMIT by itself: that row is gone, and so must be its memory, or
    # later events point at nothing, or at the next list's details stored in its place.
    server.start()
    await server.wait_ready()
    async with session_to(server) as session:
        lists = [
            await new_list(session, make_codes(4, f"L{n}-"), partner=f"P{n}", tag=f"t{n}")
            for n in range(10)
        ]
        empty_log(disk.path / DATABASE)
        disk.fill()
        refused = None
        for list_id in lists:
            status, reply, retry_after = await call(
                session, "POST", f"/v1/lists/{list_id}/claims", {"user_id": "first"}
            )
            if status != 201:
                assert_storage_unavailable(status, reply, retry_after)
                refused = list_id
                break
        assert refused is not None, "the disk never filled up"
        disk.empty()

        # The refused list's claims, two at once (stored together), then a list not claimed yet.
        untouched = lists[lists.index(refused) + 1]
        for list_id, users in ((refused, ("a", "b")), (untouched, ("c",))):
            replies = await asyncio.gather(
                *(
                    call(session, "POST", f"/v1/lists/{list_id}/claims", {"user_id": user})
                    for user in users
                )
            )
            assert [status for status, _, _ in replies] == [201] * len(users), replies

        status, page, _ = await call(session, "GET", "/v1/events?since=0&limit=1000")
        assert status == 200, page
    rewarded = [event["data"] for event in page["events"] if event["type"] == "voucher.rewarded"]
    by_list = Counter((data["voucherListId"], data["partner"]) for data in rewarded)
    assert by_list[(refused, f"P{lists.index(refused)}")] == 2, by_list
    assert by_list[(untouched, f"P{lists.index(untouched)}")] == 1, by_list
    for data in rewarded:
        assert data["voucherCode"].startswith(f"L{lists.index(data['voucherListId'])}-"), data


# -- an upload fills the disk ------------------------------------------------------------------


async def test_an_upload_that_fills_the_disk_fails_adds_no_code_and_can_be_sent_again(
    disk: Disk, server: ServerProcess
) -> None:
    server.start()
    await server.wait_ready()
    big = make_codes(60_000, prefix="BIG")
    async with session_to(server) as session:
        list_id = await new_list(session, make_codes(100))
        before = await counts(session, list_id)
        # Room for the upload's first chunks, not for all of them.
        disk.fill(leave=640 * 1024)
        status, reply, retry_after = await upload(session, list_id, big)
        if status == 201:
            assert reply["status"] == "failed", reply
            assert reply["accepted"] == 0, reply
        else:
            assert_storage_unavailable(status, reply, retry_after)
        assert await counts(session, list_id) == before
        # Nothing of it can be claimed: the list still holds only its first 100 codes.
        for n in range(100):
            status, reply, _ = await call(
                session, "POST", f"/v1/lists/{list_id}/claims", {"user_id": f"u-{n}"}
            )
            if status != 201:
                break
            assert reply["claim"]["code"].startswith("C"), reply

        # Space comes back, here by growing the filesystem under the running server, and the
        # client sends the same file again at once: none of its codes is held by the failed
        # upload (test_overload.py has one whose failure could not be recorded yet).
        disk.grow(4 * DISK_SIZE)
        status, reply, _ = await upload(session, list_id, big)
        assert status == 201, reply
        assert (reply["status"], reply["accepted"], reply["rejected"]) == (
            "completed", len(big), 0,
        ), reply  # fmt: skip
        after = await counts(session, list_id)
        assert after["uploaded"] == 100 + len(big)
        states = await upload_states(session, list_id)
        for _ in range(100):
            if "in_progress" not in {state for state, _ in states.values()}:
                break
            await asyncio.sleep(0.1)
            states = await upload_states(session, list_id)
        # The history says what happened to the first: failed, with no code added.
        assert sorted(states.values()) == [("completed", 100), ("completed", len(big)),
                                           ("failed", 0)], states  # fmt: skip
    assert server.terminate() == 0
    found = read_disk(disk.path / DATABASE, list_id)
    assert found.codes == after
    assert sorted(found.upload_status.values()) == ["completed", "completed", "failed"]


async def test_an_upload_chunk_the_full_disk_undid_is_not_counted_in_its_history(
    tmp_path: Path, disk: Disk, server: ServerProcess
) -> None:
    # The code index lives on another disk here, so the chunk passes its check and only the
    # journal's commit of its block and error rows fails: SQLite undoes that transaction,
    # and the failed upload's history must not count the rows it took with it.
    elsewhere = tmp_path / "index"
    elsewhere.mkdir()
    (elsewhere / "codes.sqlite3").touch()
    (disk.path / "codes.sqlite3").symlink_to(elsewhere / "codes.sqlite3")
    server.start()
    await server.wait_ready()
    async with session_to(server) as session:
        list_id = await new_list(session, make_codes(10))
        empty_log(disk.path / DATABASE)
        disk.fill(leave=48 * 1024)
        status, reply, retry_after = await upload(
            session, list_id, make_codes(30_000, "BIG") + [f"bad code {n}" for n in range(40)]
        )
        if status == 201:
            assert reply["status"] == "failed", reply
        else:
            assert_storage_unavailable(status, reply, retry_after)
        disk.empty()
        for _ in range(100):
            listed = (await call(session, "GET", f"/v1/lists/{list_id}/uploads"))[1]["uploads"]
            failed = [item for item in listed if item["status"] == "failed"]
            if failed:
                break
            await asyncio.sleep(0.1)
        (item,) = failed
        async with session.get(f"/v1/lists/{list_id}/uploads/{item['id']}/errors") as response:
            assert response.status == 200
            error_rows = len((await response.text()).splitlines()) - 1
        # Nothing of its one chunk was committed: no row counted, no error row kept.
        assert (item["rows"], item["rejected"], nonzero(item["errors"]), error_rows) == (
            0,
            0,
            {},
            0,
        ), item


# -- a restart on a full disk ------------------------------------------------------------------


async def test_a_server_started_on_a_full_disk_stops_with_an_error_and_loses_nothing(
    disk: Disk, server: ServerProcess
) -> None:
    server.start()
    await server.wait_ready()
    async with session_to(server) as session:
        list_id = await new_list(session, make_codes(500))
        made = {}
        for n in range(50):
            status, reply, _ = await call(
                session, "POST", f"/v1/lists/{list_id}/claims", {"user_id": f"u-{n}"}
            )
            assert status == 201, reply
            made[f"u-{n}"] = reply["claim"]["code"]
        before = await counts(session, list_id)
    assert server.terminate() == 0

    disk.fill()
    server.start()
    assert server.process is not None
    # It cannot even open its journal for writing; it says so and exits rather than serve.
    assert server.process.wait(30) != 0
    assert "disk is full" in server.log()

    disk.empty()
    server.start()
    await server.wait_ready()
    async with session_to(server) as session:
        assert await counts(session, list_id) == before
        for user, code in made.items():
            status, reply, _ = await call(
                session, "POST", f"/v1/lists/{list_id}/claims", {"user_id": user}
            )
            assert (status, reply["claim"]["code"]) == (200, code)


# -- another process holds the write lock ------------------------------------------------------


async def lock_out(database: Path) -> asyncio.subprocess.Process:
    """A process of its own holding the journal's write lock, so SQLite really has to wait;
    it lets go when its stdin closes."""
    locker = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
        " c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); sys.stdin.read()",
        str(database),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert locker.stdout is not None
    assert await locker.stdout.readline() == b"locked\n"
    return locker


async def test_a_journal_locked_out_by_another_process_refuses_with_503_and_recovers(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    """SQLITE_BUSY past the busy timeout (5 s): the other write failure a disk can show."""
    settings = Settings(data_dir=tmp_path / "data")
    client = await start_client(settings)
    response = await client.post("/v1/lists", json=list_body())
    created = await response.json()
    list_id = created["id"]
    response = await client.post(
        f"/v1/lists/{list_id}/uploads",
        data=codes_csv(make_codes(10)),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status == 201
    locker = await lock_out(settings.database)
    assert locker.stdin is not None
    try:
        response = await client.post(f"/v1/lists/{list_id}/claims", json={"user_id": "u-1"})
        assert_storage_unavailable(
            response.status, await response.json(), response.headers.get("Retry-After")
        )
        listing = await (await client.get(f"/v1/lists/{list_id}")).json()
        assert listing["codes"]["distributed"] == 0
    finally:
        locker.stdin.close()
        await asyncio.wait_for(locker.wait(), 10)
    codes = set()
    for user in ("u-1", "u-2"):
        response = await client.post(f"/v1/lists/{list_id}/claims", json={"user_id": user})
        assert response.status == 201, await response.text()
        codes.add((await response.json())["claim"]["code"])
    assert len(codes) == 2
    listing = await (await client.get(f"/v1/lists/{list_id}")).json()
    assert listing["codes"] == {"uploaded": 10, "available": 8, "distributed": 2, "withdrawn": 0}


async def test_a_stock_alert_lost_with_a_failed_write_is_written_once_claims_pass_the_mark(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    """The claim that takes a list to its low-stock mark carries the alert; when its write
    fails, its code comes back, but a claim behind it may already have been written past the
    mark without one. The alert is then written on its own, once."""
    settings = Settings(data_dir=tmp_path / "data")
    client = await start_client(settings)
    response = await client.post("/v1/lists", json=list_body(low_stock_threshold=10))
    list_id = (await response.json())["id"]
    response = await client.post(
        f"/v1/lists/{list_id}/uploads",
        data=codes_csv(make_codes(12)),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status == 201
    path = f"/v1/lists/{list_id}/claims"
    assert (await client.post(path, json={"user_id": "u-1"})).status == 201  # 11 left

    locker = await lock_out(settings.database)
    assert locker.stdin is not None
    try:
        # u-2 takes the list to 10, its alert in its write; u-3 to 9, in the write behind.
        crossing = asyncio.create_task(client.post(path, json={"user_id": "u-2"}))
        await asyncio.sleep(0.5)
        behind = asyncio.create_task(client.post(path, json={"user_id": "u-3"}))
        response = await crossing
        assert_storage_unavailable(
            response.status, await response.json(), response.headers.get("Retry-After")
        )
    finally:
        locker.stdin.close()
        await asyncio.wait_for(locker.wait(), 10)
    assert (await behind).status == 201
    for user in ("u-4", "u-5"):
        assert (await client.post(path, json={"user_id": user})).status == 201

    response = await client.get("/v1/events", params={"since": "0", "limit": "1000"})
    alerts = [
        event["data"]
        for event in (await response.json())["events"]
        if event["type"] == "list.low_stock" and event["data"]["list_id"] == list_id
    ]
    assert len(alerts) == 1, alerts
    assert alerts[0]["available"] <= 10
    listing = await (await client.get(f"/v1/lists/{list_id}")).json()
    assert listing["codes"]["available"] == 8
