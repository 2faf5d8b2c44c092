"""The code index in its own file: what it keeps, what it ignores, and the move out of the
journal's file for databases written before it had one."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from support import (
    Client,
    codes_csv,
    create_list,
    get_list,
    make_codes,
    nonzero,
    to_schema_5,
    upload,
)

from voucherd.persistence.schema import VERSION
from voucherd.settings import Settings

Restart = Callable[[], Awaitable[Client]]


def index_entries(settings: Settings) -> list[tuple[str, int, int]]:
    """Every entry, merged or recent."""
    with sqlite3.connect(settings.code_index) as db:
        return db.execute(
            "SELECT code, id, upload_id FROM codes"
            " UNION ALL SELECT code, id, upload_id FROM recent ORDER BY id"
        ).fetchall()


async def test_each_accepted_code_is_entered_with_its_id_and_upload(
    restartable: Restart, settings: Settings
) -> None:
    client = await restartable()
    list_id = (await create_list(client))["id"]
    codes = make_codes(5, prefix="IDX")
    status, reply = await upload(client, list_id, codes_csv([*codes, codes[0], "bad code"]))
    assert status == 201, reply
    await client.close()

    entries = index_entries(settings)
    assert [code for code, _, _ in entries] == codes
    assert {upload_id for _, _, upload_id in entries} == {reply["id"]}
    assert len({code_id for _, code_id, _ in entries}) == 5
    with sqlite3.connect(settings.database) as db:
        assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'codes'").fetchone()


async def test_an_entry_counts_only_while_its_upload_holds_the_code(
    restartable: Restart, settings: Settings
) -> None:
    client = await restartable()
    list_id = (await create_list(client))["id"]
    status, completed = await upload(client, list_id, codes_csv(["KEPT0001"]))
    assert status == 201
    status, failed = await upload(client, list_id, "")
    assert (status, failed["status"]) == (201, "failed")
    await client.close()
    # Entries a crash can leave: written by the index for a chunk whose block never reached
    # the journal. One names the failed upload, one the completed upload.
    with sqlite3.connect(settings.code_index) as db:
        db.executemany(
            "INSERT INTO codes (code, id, upload_id) VALUES (?, ?, ?)",
            [("LEFT0001", 10**9, failed["id"]), ("LEFT0002", 10**9 + 1, completed["id"])],
        )
        db.execute("UPDATE high_id SET id = ?", (10**9 + 1,))

    client = await restartable()
    status, reply = await upload(client, list_id, codes_csv(["LEFT0001", "LEFT0002", "KEPT0001"]))
    assert status == 201, reply
    assert reply["accepted"] == 1
    assert nonzero(reply["errors"]) == {"duplicate_in_list": 2}
    listing = await get_list(client, list_id)
    assert listing["codes"]["available"] == 2
    await client.close()
    # New codes are numbered past every id the index holds, so no id names two codes.
    [(_, new_id, _)] = [e for e in index_entries(settings) if e[2] == reply["id"]]
    assert new_id > 10**9 + 1


async def test_a_database_with_the_index_in_the_journals_file_moves_it_out(
    restartable: Restart, settings: Settings
) -> None:
    client = await restartable()
    mine = (await create_list(client, partner="P", tag="one"))["id"]
    codes = make_codes(300, prefix="OLD")
    status, reply = await upload(client, mine, codes_csv(codes))
    assert status == 201, reply
    await client.close()
    # Back to schema 4: the index as a `codes` table in the journal's file, no file of its own.
    entries = index_entries(settings)
    for suffix in ("", "-wal", "-shm"):
        settings.code_index.with_name(settings.code_index.name + suffix).unlink(missing_ok=True)
    with sqlite3.connect(settings.database) as db:
        db.execute(
            "CREATE TABLE codes (code TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (code, id))"
            " WITHOUT ROWID"
        )
        db.executemany("INSERT INTO codes VALUES (?, ?)", [(c, i) for c, i, _ in entries])
        to_schema_5(db)
        db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")

    client = await restartable()
    other = (await create_list(client, partner="P", tag="two"))["id"]
    status, reply = await upload(client, other, codes_csv([*codes[:10], "NEW00001"]))
    assert status == 201, reply
    assert reply["accepted"] == 1
    assert nonzero(reply["errors"]) == {"duplicate_in_partner": 10}
    await client.close()

    assert index_entries(settings)[: len(entries)] == entries
    with sqlite3.connect(settings.database) as db:
        assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'codes'").fetchone()
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(VERSION),)


async def claimed_code(client: Client, list_id: int, user_id: str) -> str:
    response = await client.post(f"/v1/lists/{list_id}/claims", json={"user_id": user_id})
    assert response.status in (200, 201), await response.text()
    code: str = (await response.json())["claim"]["code"]
    return code


async def test_blocks_stored_with_a_newline_per_code_still_load(
    restartable: Restart, settings: Settings
) -> None:
    # Schema 5 ended every stored code with a newline; schema 6 packs codes of one length
    # end to end. Old blocks stay as they were and must load, claim and check as before.
    client = await restartable()
    same = (await create_list(client, partner="P", tag="same"))["id"]
    mixed = (await create_list(client, partner="P", tag="mixed"))["id"]
    assert (await upload(client, same, codes_csv(make_codes(6, prefix="S"))))[0] == 201
    assert (await upload(client, mixed, codes_csv(["M1", "M22", "M333", "M4444"])))[0] == 201
    first = {}
    for list_id in (same, mixed):
        first[list_id] = await claimed_code(client, list_id, "early")
    await client.close()
    with sqlite3.connect(settings.database) as db:
        assert db.execute("SELECT width FROM code_blocks ORDER BY first_id").fetchall() == [
            (12,),
            (0,),
        ]
        to_schema_5(db)

    client = await restartable()
    for list_id in (same, mixed):
        assert await claimed_code(client, list_id, "early") == first[list_id]
    rest = {
        list_id: [await claimed_code(client, list_id, f"u{n}") for n in range(3)]
        for list_id in (same, mixed)
    }
    assert rest[same] == make_codes(6, prefix="S")[1:4]
    assert rest[mixed] == ["M22", "M333", "M4444"]
    status, reply = await upload(client, same, codes_csv(["S00000000005", "M1"]))
    assert status == 201, reply
    assert nonzero(reply["errors"]) == {"duplicate_in_list": 1, "duplicate_in_partner": 1}
    with sqlite3.connect(settings.database) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(VERSION),)


async def test_a_lost_index_file_is_rebuilt_from_the_journals_blocks(
    restartable: Restart, settings: Settings
) -> None:
    client = await restartable()
    kept = (await create_list(client, partner="P", tag="kept"))["id"]
    assert (await upload(client, kept, codes_csv(make_codes(1000, prefix="K"))))[0] == 201
    gone = (await create_list(client, partner="P", tag="gone"))["id"]
    assert (await upload(client, gone, codes_csv(make_codes(10, prefix="G"))))[0] == 201
    assert (await client.post(f"/v1/lists/{gone}/archive")).status == 200
    await client.close()
    entries = index_entries(settings)
    for suffix in ("", "-wal", "-shm"):
        settings.code_index.with_name(settings.code_index.name + suffix).unlink(missing_ok=True)

    client = await restartable()
    assert index_entries(settings) == entries
    fresh = (await create_list(client, partner="P", tag="fresh"))["id"]
    again = [*make_codes(1000, prefix="K")[:3], *make_codes(10, prefix="G")[:2]]
    status, reply = await upload(client, fresh, codes_csv(again))
    assert status == 201, reply
    # The archived list's codes may come back; the kept list's may not.
    assert (reply["accepted"], nonzero(reply["errors"])) == (2, {"duplicate_in_partner": 3})


async def test_codes_with_backslashes_and_repeats_are_checked_like_any_other(
    client: Client, settings: Settings
) -> None:
    list_id = (await create_list(client))["id"]
    codes = ["A\\1", "B\\\\2", "PLAIN1", "A\\1", "C'3", "PLAIN1", "D{4}"]
    status, reply = await upload(client, list_id, codes_csv(codes))
    assert status == 201, reply
    assert (reply["accepted"], nonzero(reply["errors"])) == (5, {"duplicate_in_file": 2})
    status, reply = await upload(client, list_id, codes_csv(["B\\\\2", "PLAIN1", "E\\5"]))
    assert (reply["accepted"], nonzero(reply["errors"])) == (1, {"duplicate_in_list": 2})
    errors = await client.get(f"/v1/lists/{list_id}/uploads/{reply['id']}/errors")
    assert (await errors.text()).splitlines()[1:] == [
        "1,B\\\\2,duplicate_in_list",
        "2,PLAIN1,duplicate_in_list",
    ]
    claimed = set()
    for n in range(6):
        response = await client.post(f"/v1/lists/{list_id}/claims", json={"user_id": f"u{n}"})
        if response.status == 201:
            claimed.add((await response.json())["claim"]["code"])
    assert claimed == {"A\\1", "B\\\\2", "PLAIN1", "C'3", "D{4}", "E\\5"}


def backwards(codes: list[str]) -> list[str]:
    """Codes out of key order, as random partner codes come: each pair descends."""
    return codes[::-1]


def table_counts(settings: Settings) -> dict[str, int]:
    """Entries in each table, read in one snapshot (a merge may be moving them meanwhile)."""
    with sqlite3.connect(settings.code_index) as db:
        codes, recent = db.execute(
            "SELECT (SELECT COUNT(*) FROM codes), (SELECT COUNT(*) FROM recent)"
        ).fetchone()
    return {"codes": codes, "recent": recent}


async def settled_counts(settings: Settings, expected: dict[str, int]) -> dict[str, int]:
    """The tables' counts once they read `expected`, or after 5 s: a merge due at an upload's
    end runs after its reply."""
    for _ in range(50):
        counts = table_counts(settings)
        if counts == expected:
            break
        await asyncio.sleep(0.1)
    return counts


async def test_codes_merged_or_recent_are_duplicates_alike_and_a_failed_upload_leaves_neither(
    start_client: Callable[[Settings], Awaitable[Client]], tmp_path: Path
) -> None:
    """The index gathers new codes out of key order in `recent` and merges them into `codes`
    once there are `index_merge_codes`: a check must find a code in either, and a failed
    upload's entries must go from both, even when a merge ran in the middle of it. Codes in
    key order go straight into `codes`."""
    settings = Settings(data_dir=tmp_path / "data", index_merge_codes=10, upload_chunk_codes=4)
    client = await start_client(settings)
    first = (await create_list(client, partner="P", tag="one"))["id"]
    merged = backwards(make_codes(12, prefix="M"))
    status, reply = await upload(client, first, codes_csv(merged))
    assert status == 201, reply
    # Chunks of 4: the third made 12 recent codes and a merge due, which ran after the reply.
    expected = {"codes": 12, "recent": 0}
    assert await settled_counts(settings, expected) == expected
    recent = backwards(make_codes(8, prefix="R"))
    status, reply = await upload(client, first, codes_csv(recent))
    assert status == 201, reply
    assert table_counts(settings) == {"codes": 12, "recent": 8}

    second = (await create_list(client, partner="P", tag="two"))["id"]
    status, reply = await upload(client, second, codes_csv([*merged[:2], *recent[:2], "NEW1"]))
    assert status == 201, reply
    assert (reply["accepted"], nonzero(reply["errors"])) == (1, {"duplicate_in_partner": 4})

    # 20 new codes, then, once they were checked, a row with two columns: the upload fails
    # whole, after its five chunks were entered, two merges ran in its middle (before its
    # second and fifth chunks) and its last chunk stayed recent.
    doomed = backwards(make_codes(20, prefix="D"))

    async def body() -> AsyncIterator[bytes]:
        yield codes_csv(doomed).encode()
        await asyncio.sleep(0.5)
        yield b"D1,D2\n"

    response = await client.post(
        f"/v1/lists/{second}/uploads", data=body(), headers={"Content-Type": "text/csv"}
    )
    reply = await response.json()
    assert response.status == 201, reply
    assert reply["status"] == "failed"
    entries = index_entries(settings)
    assert not [code for code, _, _ in entries if code.startswith("D")]
    assert len(entries) == 12 + 8 + 1
    assert table_counts(settings) == {"codes": 21, "recent": 0}
    # Nothing of it is left to clash with: the same codes upload anew.
    status, reply = await upload(client, second, codes_csv(doomed))
    assert status == 201, reply
    assert reply["accepted"] == 20
    # Codes in key order skip `recent`, and are found all the same.
    status, reply = await upload(client, second, codes_csv(make_codes(6, prefix="S")))
    assert (status, reply["accepted"]) == (201, 6), reply
    with sqlite3.connect(settings.code_index) as db:
        where = db.execute(
            "SELECT (SELECT COUNT(*) FROM codes WHERE code LIKE 'S%'),"
            " (SELECT COUNT(*) FROM recent WHERE code LIKE 'S%')"
        ).fetchone()
    assert where == (6, 0)
    status, reply = await upload(client, first, codes_csv([*backwards(make_codes(6, "S")), "T"]))
    assert (reply["accepted"], nonzero(reply["errors"])) == (1, {"duplicate_in_partner": 6})
