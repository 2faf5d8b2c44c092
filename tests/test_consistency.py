"""Memory and database stay in step where it is easy to let them drift: a request cancelled
as its upload completes, a slow download of an error file, a stale tally after a restart."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ClientFactory
from support import (
    Client,
    assert_balanced,
    codes_csv,
    create_list,
    get_list,
    list_with_codes,
    make_codes,
    nonzero,
    upload,
)

from voucherd.actors.voucher_list import CompleteUpload
from voucherd.server.keys import CODE_INDEX, DIRECTORY
from voucherd.settings import Settings
from voucherd.uploads import Uploader

Restart = Callable[[], Awaitable[Client]]


async def test_an_upload_cancelled_as_it_completes_keeps_its_codes_whole(
    restartable: Restart, settings: Settings
) -> None:
    client = await restartable()
    created = await create_list(client)
    actor = client.app[DIRECTORY].actor(created["id"])
    codes = make_codes(300, prefix="K")

    async def body() -> AsyncIterator[bytes]:
        yield codes_csv(codes).encode()

    task: asyncio.Task[Any] | None = None
    queue_completion = actor.ask_waiting

    async def queue_then_cancel(message: Any) -> asyncio.Future[Any]:
        # The request is cancelled the moment its completion reaches the list's actor.
        future: asyncio.Future[Any] = await queue_completion(message)
        if isinstance(message, CompleteUpload) and task is not None:
            task.cancel()
        return future

    actor.ask_waiting = queue_then_cancel
    task = asyncio.create_task(
        Uploader(settings, actor, client.app[CODE_INDEX]).run(body(), "k.csv", None)
    )
    with pytest.raises(asyncio.CancelledError):
        await task

    listing = await get_list(client, created["id"])
    assert listing["codes"]["uploaded"] == listing["codes"]["available"] == 300
    history = await (await client.get(f"/v1/lists/{created['id']}/uploads")).json()
    assert [u["status"] for u in history["uploads"]] == ["completed"]
    # Its codes are still known to the duplicate check...
    sibling = await create_list(client, tag="sibling")
    status, reply = await upload(client, sibling["id"], codes_csv(codes))
    assert status == 201
    assert nonzero(reply["errors"]) == {"duplicate_in_partner": 300}
    # ...and to recovery.
    client = await restartable()
    listing = await get_list(client, created["id"])
    assert listing["codes"]["available"] == 300
    assert_balanced(listing)


async def test_a_stalled_error_file_download_does_not_hide_new_claims(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    # Enough rejected rows that the error file outgrows the socket buffers.
    rows = io.BytesIO("".join(f"bad code {n}\n" for n in range(150_000)).encode())
    response = await client.post(
        f"/v1/lists/{list_id}/uploads", data=rows, headers={"Content-Type": "text/csv"}
    )
    status, reply = response.status, await response.json()
    assert status == 201
    assert reply["rejected"] == 150_000

    download = await client.get(f"/v1/lists/{list_id}/uploads/{reply['id']}/errors")
    assert download.status == 200
    await download.content.read(1024)  # ...and then the reader stops reading.

    first = await client.post(f"/v1/lists/{list_id}/claims", json={"user_id": "u-1"})
    assert first.status == 201
    repeat = await client.post(f"/v1/lists/{list_id}/claims", json={"user_id": "u-1"})
    assert repeat.status == 200
    assert (await repeat.json())["claim"]["code"] == (await first.json())["claim"]["code"]
    tray = await (await client.get("/v1/users/u-1/vouchers")).json()
    assert [v["list_id"] for v in tray["vouchers"]] == [list_id]
    download.close()


async def test_recovery_counts_withdrawn_codes_from_the_claims_not_a_stored_tally(
    restartable: Restart, settings: Settings
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(10))
    for user in ("u-1", "u-2", "u-3"):
        response = await client.post(f"/v1/lists/{list_id}/claims", json={"user_id": user})
        assert response.status == 201
    uploads = await (await client.get(f"/v1/lists/{list_id}/uploads")).json()
    upload_id = uploads["uploads"][0]["id"]
    withdrawn = await client.delete(f"/v1/lists/{list_id}/uploads/{upload_id}")
    assert await withdrawn.json() == {"withdrawn": 7}
    await client.close()

    # A tally that missed a write (say, a failed late withdrawal) must not unbalance the list.
    with sqlite3.connect(settings.database) as db:
        db.execute("UPDATE uploads SET withdrawn = 2 WHERE id = ?", (upload_id,))

    client = await restartable()
    listing = await get_list(client, list_id)
    assert listing["codes"] == {"uploaded": 10, "available": 0, "distributed": 3, "withdrawn": 7}


async def test_claims_on_other_lists_go_on_while_an_upload_is_half_sent(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    """Invariant 7: an upload holds no lock and no transaction while its body arrives."""
    # Chunks smaller than each half, so the first half is stored while the second waits.
    client = await start_client(Settings(data_dir=tmp_path / "d", upload_chunk_codes=5000))
    busy = await create_list(client, tag="busy")
    other = await list_with_codes(client, make_codes(50, prefix="O"), tag="other")
    first_half = codes_csv(make_codes(20_000, prefix="H")).encode()
    second_half = codes_csv(make_codes(20_000, prefix="S")).encode()
    rest = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield first_half
        await rest.wait()
        yield second_half

    uploading = asyncio.create_task(
        client.post(
            f"/v1/lists/{busy['id']}/uploads", data=body(), headers={"Content-Type": "text/csv"}
        )
    )
    # The upload is under way once its first rows are stored.
    for _ in range(500):
        history = await (await client.get(f"/v1/lists/{busy['id']}/uploads")).json()
        if history["uploads"] and history["uploads"][0]["rows"] > 0:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the upload never started")

    claims = await asyncio.gather(
        *(client.post(f"/v1/lists/{other}/claims", json={"user_id": f"u-{n}"}) for n in range(50))
    )
    assert [response.status for response in claims] == [201] * 50
    assert not uploading.done()

    rest.set()
    response = await uploading
    assert response.status == 201
    assert (await response.json())["accepted"] == 40_000
