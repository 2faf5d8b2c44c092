"""Uploads over HTTP against a real server: rows, duplicates, error files, limits, withdraw."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import (
    Client,
    assert_balanced,
    call,
    codes_csv,
    create_list,
    get_list,
    list_with_codes,
    make_codes,
    nonzero,
    pages,
    upload,
)

from voucherd import clock
from voucherd.server import pieces as server_pieces
from voucherd.server.keys import METRICS
from voucherd.settings import Settings

ClientFactory = Callable[[Settings], Awaitable[Client]]
PAST = "2020-01-01T00:00:00Z"
# The server reads a body 64 KiB at a time and stores a chunk of codes per read (at least
# `upload_chunk_codes` rows), so a file several times that size is stored in several chunks.
BIG = 12_000


# -- helpers -----------------------------------------------------------------------------------


async def error_rows(client: Client, list_id: int, upload_id: int) -> list[list[str]]:
    response = await client.get(f"/v1/lists/{list_id}/uploads/{upload_id}/errors")
    assert response.status == 200
    assert response.content_type == "text/csv"
    rows = list(csv.reader(io.StringIO(await response.text(), newline="")))
    assert rows[0] == ["line", "code", "reason"]
    return rows[1:]


async def uploaded(client: Client, list_id: int, body: bytes | str) -> dict[str, Any]:
    status, reply = await upload(client, list_id, body)
    assert status == 201, reply
    return reply


async def claim(client: Client, list_id: int, user_id: str) -> tuple[int, dict[str, Any]]:
    response = await client.post(f"/v1/lists/{list_id}/claims", json={"user_id": user_id})
    reply: dict[str, Any] = await response.json()
    return response.status, reply


async def claim_all(client: Client, list_id: int, prefix: str = "u") -> list[str]:
    """Every code still available in the list, in the order claims take them."""
    available = (await get_list(client, list_id))["codes"]["available"]
    users = [f"{prefix}-{list_id}-{index}" for index in range(available)]
    if not users:
        return []
    response = await client.post(f"/v1/lists/{list_id}/claims/batch", json={"user_ids": users})
    assert response.status == 200
    reply = await response.json()
    assert reply["failed"] == []
    by_user = {item["user_id"]: item["code"] for item in reply["claims"]}
    return [by_user[user] for user in users]


async def counts(client: Client, list_id: int) -> dict[str, int]:
    listing = await get_list(client, list_id)
    assert_balanced(listing)
    found: dict[str, int] = listing["codes"]
    return found


def assert_counts_add_up(reply: dict[str, Any]) -> None:
    assert reply["rows"] == reply["accepted"] + reply["rejected"]
    assert reply["rejected"] == sum(reply["errors"].values())


@pytest.fixture
async def chunked(start_client: ClientFactory, tmp_path: Path) -> Client:
    """A server that stores an upload in chunks of (at least) ten codes."""
    return await start_client(Settings(data_dir=tmp_path / "chunked", upload_chunk_codes=10))


# -- rows --------------------------------------------------------------------------------------


async def test_a_header_line_is_skipped(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, "CODE\nA1\nA2\n")
    assert (reply["rows"], reply["accepted"], reply["rejected"]) == (2, 2, 0)
    assert reply["status"] == "completed"
    # The contract's four reasons are there even when none happened.
    assert reply["errors"] == {
        "duplicate_in_file": 0, "duplicate_in_list": 0, "duplicate_in_partner": 0,
        "invalid_code": 0,
    }  # fmt: skip


async def test_code_is_a_header_only_on_the_first_line(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, "A1\ncode\n")
    assert reply["accepted"] == 2
    assert await claim_all(client, list_id) == ["A1", "code"]


async def test_a_byte_order_mark_before_the_header_or_the_first_code_is_ignored(
    client: Client,
) -> None:
    # Excel's "CSV UTF-8" export starts the file with one.
    for tag, body, codes in (
        ("bom1", "\ufeffcode\nA1\nA2\n", ["A1", "A2"]),
        ("bom2", "\ufeffB1\nB2", ["B1", "B2"]),
    ):
        list_id = (await create_list(client, tag=tag))["id"]
        reply = await uploaded(client, list_id, body)
        assert (reply["rows"], reply["accepted"], nonzero(reply["errors"])) == (2, 2, {}), reply
        assert await claim_all(client, list_id) == codes


async def test_blank_lines_are_skipped_and_whitespace_trimmed(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, "code\r\n\r\n  A1  \r\n\t\n\tA2\t\n   \nA3")
    assert (reply["rows"], reply["accepted"], reply["rejected"]) == (3, 3, 0)
    assert await claim_all(client, list_id) == ["A1", "A2", "A3"]


async def test_invalid_characters_are_rejected_with_their_line(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    body = 'code\nA1\nbad code\nA"2\ncafé\nA3\n'
    reply = await uploaded(client, list_id, body)
    assert (reply["rows"], reply["accepted"], reply["rejected"]) == (5, 2, 3)
    assert nonzero(reply["errors"]) == {"invalid_code": 3}
    rows = await error_rows(client, list_id, reply["id"])
    assert rows == [
        ["3", "bad code", "invalid_code"],
        ["4", 'A"2', "invalid_code"],
        ["5", "caf\\xc3\\xa9", "invalid_code"],
    ]
    assert await claim_all(client, list_id) == ["A1", "A3"]


async def test_64_characters_are_accepted_and_65_rejected(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, f"{'L' * 64}\n{'M' * 65}\n")
    assert (reply["accepted"], nonzero(reply["errors"])) == (1, {"invalid_code": 1})
    assert await error_rows(client, list_id, reply["id"]) == [["2", "M" * 65, "invalid_code"]]
    assert await claim_all(client, list_id) == ["L" * 64]


async def test_every_allowed_character_makes_it_through(client: Client) -> None:
    allowed = [chr(c) for c in range(ord("!"), ord("~") + 1) if chr(c) not in ',"']
    codes = ["".join(allowed[i : i + 40]) for i in range(0, len(allowed), 40)]
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, codes_csv(codes))
    assert reply["accepted"] == len(codes)
    assert await claim_all(client, list_id) == codes


async def test_non_utf8_bytes_make_the_row_invalid(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, b"A1\nAB\xff\xfe\nA2\n")
    assert (reply["rows"], reply["accepted"], nonzero(reply["errors"])) == (
        3,
        2,
        {"invalid_code": 1},
    )
    assert await error_rows(client, list_id, reply["id"]) == [["2", "AB\\xff\\xfe", "invalid_code"]]


async def test_the_error_file_of_a_clean_upload_has_only_the_header(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, "A1\n")
    assert await error_rows(client, list_id, reply["id"]) == []


async def test_the_error_file_is_csv_escaped(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, 'A1\n"quoted"\nA""B\n')
    response = await client.get(f"/v1/lists/{list_id}/uploads/{reply['id']}/errors")
    text = await response.text()
    assert '2,"""quoted""",invalid_code' in text.splitlines()
    assert '3,"A""""B",invalid_code' in text.splitlines()
    assert await error_rows(client, list_id, reply["id"]) == [
        ["2", '"quoted"', "invalid_code"],
        ["3", 'A""B', "invalid_code"],
    ]


async def test_the_error_file_shows_control_characters_escaped(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, b"A1\nB\x01B\nC\rC\nD\x7fD\n")
    assert nonzero(reply["errors"]) == {"invalid_code": 3}
    rows = await error_rows(client, list_id, reply["id"])
    assert [row[0] for row in rows] == ["2", "3", "4"]
    for _, code, _ in rows:
        assert code.isprintable(), code


# -- duplicates --------------------------------------------------------------------------------


async def test_a_code_repeated_in_the_file_is_a_duplicate_in_file(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, "A1\nA2\nA1\nA1\n")
    assert (reply["rows"], reply["accepted"]) == (4, 2)
    assert nonzero(reply["errors"]) == {"duplicate_in_file": 2}
    assert await error_rows(client, list_id, reply["id"]) == [
        ["3", "A1", "duplicate_in_file"],
        ["4", "A1", "duplicate_in_file"],
    ]
    assert await claim_all(client, list_id) == ["A1", "A2"]


async def test_a_duplicate_in_file_is_found_across_chunks(chunked: Client) -> None:
    codes = make_codes(BIG)
    body = codes_csv([*codes, codes[0], codes[5000], codes[-1]])
    list_id = (await create_list(chunked))["id"]
    reply = await uploaded(chunked, list_id, body)
    assert (reply["rows"], reply["accepted"]) == (BIG + 3, BIG)
    assert nonzero(reply["errors"]) == {"duplicate_in_file": 3}
    assert await error_rows(chunked, list_id, reply["id"]) == [
        [str(BIG + 1), codes[0], "duplicate_in_file"],
        [str(BIG + 2), codes[5000], "duplicate_in_file"],
        [str(BIG + 3), codes[-1], "duplicate_in_file"],
    ]
    assert await counts(chunked, list_id) == {
        "uploaded": BIG, "available": BIG, "distributed": 0, "withdrawn": 0
    }  # fmt: skip


async def test_a_small_file_in_small_chunks_keeps_its_order_and_line_numbers(
    chunked: Client,
) -> None:
    codes = make_codes(100)
    lines = ["code", *codes[:50], "", codes[3], *codes[50:], "bad code", codes[99]]
    list_id = (await create_list(chunked))["id"]
    reply = await uploaded(chunked, list_id, "\n".join(lines))
    assert (reply["rows"], reply["accepted"]) == (103, 100)
    assert nonzero(reply["errors"]) == {"duplicate_in_file": 2, "invalid_code": 1}
    assert await error_rows(chunked, list_id, reply["id"]) == [
        ["53", codes[3], "duplicate_in_file"],
        ["104", "bad code", "invalid_code"],
        ["105", codes[99], "duplicate_in_file"],
    ]
    assert await claim_all(chunked, list_id) == codes


@pytest.mark.parametrize("restart", [False, True])
async def test_codes_of_one_length_and_of_mixed_lengths_go_out_as_uploaded(
    restartable: Callable[[], Awaitable[Client]], restart: bool
) -> None:
    # Stored and held packed end to end where a chunk's codes share one length, a newline
    # after each where they do not: several reads of one length, then reads that mix.
    client = await restartable()
    same = make_codes(12_000)
    mixed = [f"M{n}-{'X' * (n % 7)}" for n in range(12_000)]
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, codes_csv([*same, *mixed]))
    assert reply["accepted"] == 24_000
    first = await claim(client, list_id, "first")
    assert first[1]["claim"]["code"] == same[0]
    if restart:
        client = await restartable()
    assert await claim_all(client, list_id) == [*same[1:], *mixed]


async def test_a_code_of_an_earlier_upload_is_a_duplicate_in_list(client: Client) -> None:
    list_id = await list_with_codes(client, ["A1", "A2"])
    reply = await uploaded(client, list_id, "A2\nA3\n")
    assert (reply["accepted"], nonzero(reply["errors"])) == (1, {"duplicate_in_list": 1})
    assert await error_rows(client, list_id, reply["id"]) == [["1", "A2", "duplicate_in_list"]]
    assert await counts(client, list_id) == {
        "uploaded": 3, "available": 3, "distributed": 0, "withdrawn": 0
    }  # fmt: skip


async def test_a_distributed_code_is_still_a_duplicate_in_list(client: Client) -> None:
    list_id = await list_with_codes(client, ["A1", "A2"])
    assert await claim_all(client, list_id) == ["A1", "A2"]
    reply = await uploaded(client, list_id, "A1\n")
    assert nonzero(reply["errors"]) == {"duplicate_in_list": 1}


async def test_a_code_in_another_list_of_the_partner_is_a_duplicate_in_partner(
    client: Client,
) -> None:
    await list_with_codes(client, ["A1", "A2"], tag="first")
    second = (await create_list(client, tag="second"))["id"]
    reply = await uploaded(client, second, "A1\nB1\n")
    assert (reply["accepted"], nonzero(reply["errors"])) == (1, {"duplicate_in_partner": 1})
    assert await error_rows(client, second, reply["id"]) == [["1", "A1", "duplicate_in_partner"]]
    assert await claim_all(client, second) == ["B1"]


async def test_a_paused_list_still_holds_its_codes_for_the_partner(client: Client) -> None:
    first = await list_with_codes(client, ["A1"], tag="first")
    assert (await client.post(f"/v1/lists/{first}/pause")).status == 200
    second = (await create_list(client, tag="second"))["id"]
    reply = await uploaded(client, second, "A1\n")
    assert nonzero(reply["errors"]) == {"duplicate_in_partner": 1}


async def test_the_same_code_under_another_partner_is_allowed(client: Client) -> None:
    await list_with_codes(client, ["A1"], partner="Puma")
    other = (await create_list(client, partner="Nike"))["id"]
    reply = await uploaded(client, other, "A1\n")
    assert (reply["accepted"], nonzero(reply["errors"])) == (1, {})


async def test_partner_names_are_case_sensitive(client: Client) -> None:
    await list_with_codes(client, ["A1"], partner="Puma")
    other = (await create_list(client, partner="PUMA"))["id"]
    reply = await uploaded(client, other, "A1\n")
    assert reply["accepted"] == 1


async def test_codes_of_an_archived_list_are_not_checked(client: Client) -> None:
    first = await list_with_codes(client, ["A1", "A2"], tag="first")
    assert (await client.post(f"/v1/lists/{first}/archive")).status == 200
    second = (await create_list(client, tag="second"))["id"]
    reply = await uploaded(client, second, "A1\nA2\n")
    assert (reply["accepted"], nonzero(reply["errors"])) == (2, {})


async def test_codes_of_a_withdrawn_upload_may_be_uploaded_again(client: Client) -> None:
    first = (await create_list(client, tag="first"))["id"]
    earlier = await uploaded(client, first, "A1\nA2\n")
    response = await client.delete(f"/v1/lists/{first}/uploads/{earlier['id']}")
    assert response.status == 200
    again = await uploaded(client, first, "A1\n")
    assert (again["accepted"], nonzero(again["errors"])) == (1, {})
    second = (await create_list(client, tag="second"))["id"]
    elsewhere = await uploaded(client, second, "A2\n")
    assert (elsewhere["accepted"], nonzero(elsewhere["errors"])) == (1, {})


async def test_a_list_scoped_list_checks_only_itself(client: Client) -> None:
    await list_with_codes(client, ["A1", "A2"], tag="first")
    scoped = await create_list(client, tag="second", duplicate_scope="list")
    assert scoped["duplicate_scope"] == "list"
    reply = await uploaded(client, scoped["id"], "A1\nA2\nB1\nB1\n")
    assert (reply["accepted"], nonzero(reply["errors"])) == (3, {"duplicate_in_file": 1})
    again = await uploaded(client, scoped["id"], "A1\nB2\n")
    assert (again["accepted"], nonzero(again["errors"])) == (1, {"duplicate_in_list": 1})


async def test_each_kind_of_rejection_is_counted(client: Client) -> None:
    await list_with_codes(client, ["P1", "P2"], tag="first")
    list_id = await list_with_codes(client, ["L1"], tag="second")
    reply = await uploaded(client, list_id, "N1\nN1\nL1\nP1\nP2\nbad code\nN2\n")
    assert nonzero(reply["errors"]) == {
        "duplicate_in_file": 1, "duplicate_in_list": 1, "duplicate_in_partner": 2,
        "invalid_code": 1,
    }  # fmt: skip
    assert (reply["rows"], reply["accepted"], reply["rejected"]) == (7, 2, 5)
    assert_counts_add_up(reply)
    rows = await error_rows(client, list_id, reply["id"])
    assert [row[0] for row in rows] == ["2", "3", "4", "5", "6"]


# -- whole-file failures -----------------------------------------------------------------------


async def test_a_multi_column_file_fails_whole(client: Client) -> None:
    list_id = await list_with_codes(client, ["A1"])
    status, reply = await upload(client, list_id, "B1\nB2\nB3,10\nB4\n")
    assert status == 201
    assert reply["status"] == "failed"
    assert reply["accepted"] == 0
    assert reply["error"]["code"] == "multiple_columns"
    assert "line 3" in reply["error"]["message"]
    assert await counts(client, list_id) == {
        "uploaded": 1, "available": 1, "distributed": 0, "withdrawn": 0
    }  # fmt: skip
    assert await claim_all(client, list_id) == ["A1"]


async def test_a_multi_column_file_leaves_none_of_its_stored_chunks(chunked: Client) -> None:
    codes = make_codes(BIG)
    list_id = (await create_list(chunked))["id"]
    status, reply = await upload(chunked, list_id, codes_csv([*codes, "X,Y"]))
    assert status == 201
    assert (reply["status"], reply["accepted"]) == ("failed", 0)
    assert reply["error"]["code"] == "multiple_columns"
    assert await counts(chunked, list_id) == {
        "uploaded": 0, "available": 0, "distributed": 0, "withdrawn": 0
    }  # fmt: skip
    # Nothing of it was kept, so the same codes go in cleanly now.
    again = await uploaded(chunked, list_id, codes_csv(codes))
    assert (again["accepted"], nonzero(again["errors"])) == (BIG, {})


async def test_a_header_with_two_columns_fails(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    status, reply = await upload(client, list_id, "code,value\nA1,1\n")
    assert (status, reply["status"], reply["error"]["code"]) == (201, "failed", "multiple_columns")


@pytest.mark.parametrize("body", ["", "code\n", "\n\n  \r\n", "CODE"])
async def test_a_file_without_codes_fails_as_empty(client: Client, body: str) -> None:
    list_id = (await create_list(client))["id"]
    status, reply = await upload(client, list_id, body)
    assert status == 201
    assert (reply["status"], reply["accepted"], reply["rows"]) == ("failed", 0, 0)
    assert reply["error"]["code"] == "empty_file"


async def test_a_nul_byte_is_refused_as_binary(client: Client) -> None:
    list_id = await list_with_codes(client, ["A1"])
    status, reply = await upload(client, list_id, b"B1\nB\x002\n")
    assert status == 400
    assert reply["error"]["code"] == "invalid_request"
    failed = reply["error"]["details"]["upload"]
    assert (failed["status"], failed["accepted"]) == ("failed", 0)
    assert failed["error"]["code"] == "binary_content"
    assert await counts(client, list_id) == {
        "uploaded": 1, "available": 1, "distributed": 0, "withdrawn": 0
    }  # fmt: skip


async def test_a_line_over_max_line_bytes_is_refused(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    client = await start_client(Settings(data_dir=tmp_path / "d", max_line_bytes=100))
    list_id = (await create_list(client))["id"]
    status, reply = await upload(client, list_id, "A1\n" + "X" * 101 + "\nA2\n")
    assert status == 400
    assert reply["error"]["code"] == "invalid_request"
    assert reply["error"]["details"]["upload"]["error"]["code"] == "line_too_long"
    assert (await counts(client, list_id))["uploaded"] == 0
    fine = await uploaded(client, list_id, "A1\n" + "X" * 100 + "\n")
    assert (fine["accepted"], nonzero(fine["errors"])) == (1, {"invalid_code": 1})


async def test_an_oversized_body_is_refused_up_front(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    client = await start_client(Settings(data_dir=tmp_path / "d", max_upload_bytes=1000))
    list_id = (await create_list(client))["id"]
    status, reply = await upload(client, list_id, codes_csv(make_codes(100)))
    assert status == 413
    assert reply["error"]["code"] == "payload_too_large"
    assert (await counts(client, list_id))["uploaded"] == 0
    fits = await uploaded(client, list_id, codes_csv(make_codes(10)))
    assert fits["accepted"] == 10


async def test_an_oversized_streamed_body_is_refused_as_read(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    client = await start_client(
        Settings(data_dir=tmp_path / "d", max_upload_bytes=100_000, upload_chunk_codes=10)
    )
    list_id = (await create_list(client))["id"]
    codes = make_codes(20_000)

    async def body() -> AsyncIterator[bytes]:
        # No Content-Length: the server can only count what it reads.
        for start in range(0, len(codes), 500):
            yield codes_csv(codes[start : start + 500]).encode()

    response = await client.post(
        f"/v1/lists/{list_id}/uploads", data=body(), headers={"Content-Type": "text/csv"}
    )
    assert response.status == 413
    reply = await response.json()
    assert reply["error"]["code"] == "payload_too_large"
    assert reply["error"]["details"]["upload"]["status"] == "failed"
    assert await counts(client, list_id) == {
        "uploaded": 0, "available": 0, "distributed": 0, "withdrawn": 0
    }  # fmt: skip
    again = await uploaded(client, list_id, codes_csv(codes[:100]))
    assert (again["accepted"], nonzero(again["errors"])) == (100, {})


async def test_a_body_of_another_type_is_refused(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    response = await client.post(
        f"/v1/lists/{list_id}/uploads", data=b"A1\n", headers={"Content-Type": "application/json"}
    )
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_media_type"
    history = await client.get(f"/v1/lists/{list_id}/uploads")
    assert (await history.json())["uploads"] == []


async def test_an_upload_history_made_a_piece_at_a_time_holds_every_upload_in_order(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_pieces, "PIECE", 2)
    list_id = (await create_list(client))["id"]
    made = [
        await uploaded(client, list_id, codes_csv(make_codes(n + 1, f"U{n}-"))) for n in range(5)
    ]
    response = await client.get(f"/v1/lists/{list_id}/uploads")
    assert response.status == 200
    history = (await response.json())["uploads"]
    assert history == made


async def test_an_upload_history_comes_in_pages(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    other = (await create_list(client, tag="other"))["id"]
    made = []
    for n in range(5):
        made.append(await uploaded(client, list_id, codes_csv(make_codes(2, f"U{n}-"))))
        await uploaded(client, other, codes_csv(make_codes(1, f"O{n}-")))

    path = f"/v1/lists/{list_id}/uploads"
    assert await pages(client, path, "uploads", "id", 2) == [made[:2], made[2:4], made[4:]]
    # A page that takes the last upload says none follow: no empty page after it.
    assert await pages(client, path, "uploads", "id", 5) == [made]
    assert await pages(client, path, "uploads", "id", 6) == [made]
    status, reply = await call(client, "GET", path, after=str(made[2]["id"]))
    assert (status, reply) == (200, {"uploads": made[3:], "has_more": False})


# -- multipart ---------------------------------------------------------------------------------


def form(
    body: bytes, filename: str | None = "partner.csv", field: str = "file"
) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("comment", "ignored")
    data.add_field(field, body, filename=filename, content_type="text/csv")
    return data


async def test_a_multipart_upload_takes_the_file_field(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    response = await client.post(f"/v1/lists/{list_id}/uploads", data=form(b"code\nA1\nA2\n"))
    assert response.status == 201
    reply = await response.json()
    assert (reply["status"], reply["accepted"]) == ("completed", 2)
    assert reply["filename"] == "partner.csv"
    assert await claim_all(client, list_id) == ["A1", "A2"]


async def test_the_query_filename_wins_over_the_parts(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    response = await client.post(
        f"/v1/lists/{list_id}/uploads", params={"filename": "given.csv"}, data=form(b"A1\n")
    )
    assert response.status == 201
    assert (await response.json())["filename"] == "given.csv"


async def test_a_multipart_body_without_a_file_field_is_refused(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    response = await client.post(f"/v1/lists/{list_id}/uploads", data=form(b"A1\n", field="other"))
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_request"
    assert (await counts(client, list_id))["uploaded"] == 0


@pytest.mark.parametrize(
    "encoding", ["Content-Transfer-Encoding: base64", "Content-Encoding: gzip"]
)
async def test_an_encoded_file_part_is_refused(client: Client, encoding: str) -> None:
    list_id = (await create_list(client))["id"]
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
        + encoding.encode()
        + b"\r\nContent-Type: text/csv\r\n\r\nQTEKQTIK\r\n--xyz--\r\n"
    )
    response = await client.post(
        f"/v1/lists/{list_id}/uploads",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_media_type"
    assert (await counts(client, list_id))["uploaded"] == 0
    history = await client.get(f"/v1/lists/{list_id}/uploads")
    assert (await history.json())["uploads"] == []


async def test_a_multipart_body_cut_before_its_closing_boundary_fails_the_upload(
    client: Client,
) -> None:
    list_id = (await create_list(client))["id"]
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\nA1\nA2\n"
    )
    response = await client.post(
        f"/v1/lists/{list_id}/uploads",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status == 400
    reply = await response.json()
    assert reply["error"]["code"] == "invalid_request"
    failed = reply["error"]["details"]["upload"]
    assert (failed["status"], failed["accepted"]) == ("failed", 0)
    assert failed["error"]["code"] == "truncated_body"
    assert (await counts(client, list_id))["uploaded"] == 0
    # The same file, whole, is not held by the failed upload.
    response = await client.post(f"/v1/lists/{list_id}/uploads", data=form(b"A1\nA2\n"))
    assert response.status == 201
    assert await claim_all(client, list_id) == ["A1", "A2"]


async def test_a_large_multipart_upload_is_streamed(chunked: Client) -> None:
    codes = make_codes(BIG)
    list_id = (await create_list(chunked))["id"]
    body = codes_csv([*codes, codes[0]]).encode()
    response = await chunked.post(f"/v1/lists/{list_id}/uploads", data=form(body))
    assert response.status == 201
    reply = await response.json()
    assert (reply["accepted"], nonzero(reply["errors"])) == (BIG, {"duplicate_in_file": 1})


# -- history -----------------------------------------------------------------------------------


async def test_the_upload_history_lists_every_upload_in_order(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    first = await uploaded(client, list_id, "A1\nA2\n")
    status, failed = await upload(client, list_id, "B1,B2\n", filename="wide.csv")
    assert status == 201
    second = await uploaded(client, list_id, "A2\nA3\n")
    response = await client.get(f"/v1/lists/{list_id}/uploads")
    assert response.status == 200
    history = (await response.json())["uploads"]
    assert [item["id"] for item in history] == [first["id"], failed["id"], second["id"]]
    assert [item["status"] for item in history] == ["completed", "failed", "completed"]
    assert history[0] == first
    assert history[2] == second
    assert history[1]["filename"] == "wide.csv"
    for item in history:
        assert item["list_id"] == list_id
        assert item["started_at"].endswith("Z")
        assert item["finished_at"].endswith("Z")
        assert item["uploaded_by"] is None


async def test_one_upload_reads_as_it_was_answered(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, "A1\nA1\nbad code\n")
    response = await client.get(f"/v1/lists/{list_id}/uploads/{reply['id']}")
    assert response.status == 200
    assert await response.json() == reply
    assert reply["filename"] == "codes.csv"


async def test_another_lists_upload_is_not_found(client: Client) -> None:
    first = (await create_list(client, tag="first"))["id"]
    second = (await create_list(client, tag="second"))["id"]
    reply = await uploaded(client, first, "A1\n")
    for path in (
        f"/v1/lists/{second}/uploads/{reply['id']}",
        f"/v1/lists/{second}/uploads/{reply['id']}/errors",
        f"/v1/lists/{first}/uploads/9999",
        f"/v1/lists/{first}/uploads/nine",
        "/v1/lists/9999/uploads",
    ):
        response = await client.get(path)
        assert response.status == 404, path
        assert (await response.json())["error"]["code"] == "not_found"
    response = await client.delete(f"/v1/lists/{second}/uploads/{reply['id']}")
    assert response.status == 404
    assert (await counts(client, first))["available"] == 1


async def test_an_upload_to_an_unknown_list_is_not_found(client: Client) -> None:
    status, reply = await upload(client, 9999, "A1\n")
    assert (status, reply["error"]["code"]) == (404, "not_found")


# -- list statuses -----------------------------------------------------------------------------


async def test_an_expired_list_refuses_uploads(client: Client) -> None:
    list_id = (await create_list(client, expires_at=PAST))["id"]
    status, reply = await upload(client, list_id, "A1\n")
    assert (status, reply["error"]["code"]) == (409, "list_expired")
    assert (await counts(client, list_id))["uploaded"] == 0


async def test_an_archived_list_refuses_uploads(client: Client) -> None:
    list_id = await list_with_codes(client, ["A1"])
    assert (await client.post(f"/v1/lists/{list_id}/archive")).status == 200
    status, reply = await upload(client, list_id, "A2\n")
    assert (status, reply["error"]["code"]) == (409, "list_archived")


@pytest.mark.parametrize("change", ["archive", "expire"])
async def test_a_list_archived_or_expired_during_an_upload_takes_none_of_its_codes(
    client: Client, change: str
) -> None:
    list_id = (await create_list(client))["id"]
    started, go_on = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"A1\nA2\n"
        started.set()
        await go_on.wait()
        yield b"A3\n"

    sending = asyncio.ensure_future(
        client.post(
            f"/v1/lists/{list_id}/uploads", data=body(), headers={"Content-Type": "text/csv"}
        )
    )
    await started.wait()
    if change == "archive":
        assert (await client.post(f"/v1/lists/{list_id}/archive")).status == 200
    else:
        soon = clock.format_time(clock.now() + 1.0)
        response = await client.patch(f"/v1/lists/{list_id}", json={"expires_at": soon})
        assert response.status == 200, await response.text()
        await asyncio.sleep(1.1)  # the expiry is shown in whole seconds, so it is past now
        assert (await get_list(client, list_id))["status"] == "expired"
    go_on.set()
    response = await sending
    reply = await response.json()
    assert (response.status, reply["error"]["code"]) == (409, f"list_{change}d"), reply
    assert (await counts(client, list_id))["uploaded"] == 0
    history = (await (await client.get(f"/v1/lists/{list_id}/uploads")).json())["uploads"]
    assert [(u["status"], u["accepted"]) for u in history] == [("failed", 0)]


async def test_a_paused_list_takes_uploads(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    assert (await client.post(f"/v1/lists/{list_id}/pause")).status == 200
    reply = await uploaded(client, list_id, "A1\n")
    assert (reply["status"], reply["accepted"]) == ("completed", 1)
    assert (await client.post(f"/v1/lists/{list_id}/activate")).status == 200
    assert await claim_all(client, list_id) == ["A1"]


# -- top-up and the cap ------------------------------------------------------------------------


async def test_a_top_up_adds_codes_available_at_once(client: Client) -> None:
    list_id = await list_with_codes(client, ["A1", "A2"])
    assert await claim_all(client, list_id, "first") == ["A1", "A2"]
    status, reply = await claim(client, list_id, "late")
    assert (status, reply["error"]["code"]) == (409, "list_exhausted")
    top_up = await uploaded(client, list_id, "B1\nB2\nB3\n")
    assert top_up["accepted"] == 3
    assert await counts(client, list_id) == {
        "uploaded": 5, "available": 3, "distributed": 2, "withdrawn": 0
    }  # fmt: skip
    status, reply = await claim(client, list_id, "late")
    assert (status, reply["claim"]["code"]) == (201, "B1")


async def test_codes_beyond_the_cap_are_rejected_as_list_full(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    client = await start_client(Settings(data_dir=tmp_path / "d", max_codes_per_list=5))
    list_id = await list_with_codes(client, ["A1", "A2", "A3"])
    reply = await uploaded(client, list_id, "A3\nB1\nB2\nB3\nB4\n")
    assert (reply["accepted"], nonzero(reply["errors"])) == (
        2,
        {"duplicate_in_list": 1, "list_full": 2},
    )
    assert await error_rows(client, list_id, reply["id"]) == [
        ["1", "A3", "duplicate_in_list"],
        ["4", "B3", "list_full"],
        ["5", "B4", "list_full"],
    ]
    assert (await counts(client, list_id))["uploaded"] == 5
    full = await uploaded(client, list_id, "C1\n")
    assert (full["accepted"], nonzero(full["errors"])) == (0, {"list_full": 1})


async def test_withdrawn_codes_free_their_room_under_the_cap(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    client = await start_client(Settings(data_dir=tmp_path / "d", max_codes_per_list=5))
    list_id = (await create_list(client))["id"]
    wrong = await uploaded(client, list_id, codes_csv(make_codes(5, "W")))
    for user in ("u-1", "u-2"):
        status, _ = await claim(client, list_id, user)
        assert status == 201
    response = await client.delete(f"/v1/lists/{list_id}/uploads/{wrong['id']}")
    assert (response.status, await response.json()) == (200, {"withdrawn": 3})
    # The two handed out still count; the three withdrawn left room for three.
    right = await uploaded(client, list_id, codes_csv(make_codes(4, "R")))
    assert (right["accepted"], nonzero(right["errors"])) == (3, {"list_full": 1})
    assert await counts(client, list_id) == {
        "uploaded": 8, "available": 3, "distributed": 2, "withdrawn": 3
    }  # fmt: skip


async def test_the_cap_holds_across_chunks(start_client: ClientFactory, tmp_path: Path) -> None:
    client = await start_client(
        Settings(data_dir=tmp_path / "d", max_codes_per_list=5000, upload_chunk_codes=10)
    )
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, codes_csv(make_codes(BIG)))
    assert (reply["accepted"], nonzero(reply["errors"])) == (5000, {"list_full": BIG - 5000})
    assert await counts(client, list_id) == {
        "uploaded": 5000, "available": 5000, "distributed": 0, "withdrawn": 0
    }  # fmt: skip


async def test_concurrent_uploads_to_one_list_share_the_cap(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    client = await start_client(
        Settings(data_dir=tmp_path / "d", max_codes_per_list=BIG, upload_chunk_codes=10)
    )
    list_id = (await create_list(client))["id"]
    first, second = await asyncio.gather(
        upload(client, list_id, codes_csv(make_codes(BIG, "A"))),
        upload(client, list_id, codes_csv(make_codes(BIG, "B"))),
    )
    assert first[0] == second[0] == 201
    assert first[1]["accepted"] + second[1]["accepted"] == BIG
    assert await counts(client, list_id) == {
        "uploaded": BIG, "available": BIG, "distributed": 0, "withdrawn": 0
    }  # fmt: skip


# -- withdraw ----------------------------------------------------------------------------------


async def test_withdrawing_an_upload_whose_codes_are_all_claimed_withdraws_none(
    client: Client,
) -> None:
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, "A1\nA2\n")
    assert await claim_all(client, list_id) == ["A1", "A2"]
    response = await client.delete(f"/v1/lists/{list_id}/uploads/{reply['id']}")
    assert (response.status, await response.json()) == (200, {"withdrawn": 0})
    assert await counts(client, list_id) == {
        "uploaded": 2, "available": 0, "distributed": 2, "withdrawn": 0
    }  # fmt: skip


async def test_withdraw_leaves_claimed_codes_distributed(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    first = await uploaded(client, list_id, "A1\nA2\nA3\nA4\nA5\n")
    for user in ("u1", "u2"):
        status, _ = await claim(client, list_id, user)
        assert status == 201
    second = await uploaded(client, list_id, "B1\nB2\n")

    response = await client.delete(f"/v1/lists/{list_id}/uploads/{first['id']}")
    assert response.status == 200
    assert await response.json() == {"withdrawn": 3}
    assert await counts(client, list_id) == {
        "uploaded": 7, "available": 2, "distributed": 2, "withdrawn": 3
    }  # fmt: skip
    # The withdrawn codes are never handed out; the other upload's are.
    assert await claim_all(client, list_id, "later") == ["B1", "B2"]
    status, reply = await claim(client, list_id, "last")
    assert (status, reply["error"]["code"]) == (409, "list_exhausted")
    # The claims made before stay as they were.
    status, reply = await claim(client, list_id, "u1")
    assert (status, reply["claim"]["code"]) == (200, "A1")

    withdrawn = await client.get(f"/v1/lists/{list_id}/uploads/{first['id']}")
    view = await withdrawn.json()
    assert view["status"] == "withdrawn"
    assert view["accepted"] == 5
    untouched = await client.get(f"/v1/lists/{list_id}/uploads/{second['id']}")
    assert (await untouched.json())["status"] == "completed"


async def test_withdrawn_codes_may_come_back_but_distributed_ones_not(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    first = await uploaded(client, list_id, "A1\nA2\nA3\n")
    status, _ = await claim(client, list_id, "u1")
    assert status == 201
    response = await client.delete(f"/v1/lists/{list_id}/uploads/{first['id']}")
    assert await response.json() == {"withdrawn": 2}
    again = await uploaded(client, list_id, "A1\nA2\nA3\n")
    assert (again["accepted"], nonzero(again["errors"])) == (2, {"duplicate_in_list": 1})
    assert await counts(client, list_id) == {
        "uploaded": 5, "available": 2, "distributed": 1, "withdrawn": 2
    }  # fmt: skip
    assert await claim_all(client, list_id) == ["A2", "A3"]


async def test_an_upload_is_withdrawn_once(client: Client) -> None:
    list_id = (await create_list(client))["id"]
    reply = await uploaded(client, list_id, "A1\n")
    path = f"/v1/lists/{list_id}/uploads/{reply['id']}"
    assert (await client.delete(path)).status == 200
    response = await client.delete(path)
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "conflict"
    assert await counts(client, list_id) == {
        "uploaded": 1, "available": 0, "distributed": 0, "withdrawn": 1
    }  # fmt: skip


async def test_a_failed_upload_cannot_be_withdrawn(client: Client) -> None:
    list_id = await list_with_codes(client, ["A1"])
    status, failed = await upload(client, list_id, "B1,B2\n")
    assert (status, failed["status"]) == (201, "failed")
    response = await client.delete(f"/v1/lists/{list_id}/uploads/{failed['id']}")
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "conflict"
    assert (await counts(client, list_id))["available"] == 1


async def test_a_withdrawn_upload_of_one_list_frees_its_codes_for_the_partner(
    client: Client,
) -> None:
    first = (await create_list(client, tag="first"))["id"]
    reply = await uploaded(client, first, "A1\nA2\n")
    second = (await create_list(client, tag="second"))["id"]
    blocked = await uploaded(client, second, "A1\n")
    assert nonzero(blocked["errors"]) == {"duplicate_in_partner": 1}
    assert (await client.delete(f"/v1/lists/{first}/uploads/{reply['id']}")).status == 200
    freed = await uploaded(client, second, "A1\n")
    assert (freed["accepted"], nonzero(freed["errors"])) == (1, {})


# -- concurrency -------------------------------------------------------------------------------


async def test_concurrent_uploads_never_put_a_code_in_two_lists_of_a_partner(
    chunked: Client,
) -> None:
    codes = make_codes(BIG)
    first = (await create_list(chunked, tag="first"))["id"]
    second = (await create_list(chunked, tag="second"))["id"]
    one, two = await asyncio.gather(
        upload(chunked, first, codes_csv(codes)),
        upload(chunked, second, codes_csv(reversed(codes))),
    )
    assert one[0] == two[0] == 201
    assert one[1]["accepted"] + two[1]["accepted"] == BIG
    assert nonzero(one[1]["errors"]).keys() <= {"duplicate_in_partner"}
    assert nonzero(two[1]["errors"]).keys() <= {"duplicate_in_partner"}
    in_first = set(await claim_all(chunked, first))
    in_second = set(await claim_all(chunked, second))
    assert in_first.isdisjoint(in_second)
    assert in_first | in_second == set(codes)


async def rested_seconds(client: Client) -> float:
    """How long uploads have rested to give way to claims, from /metrics."""
    response = await client.get("/metrics")
    assert response.status == 200
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            if sample.name == "voucherd_upload_rest_seconds_total":
                return float(sample.value)
    raise AssertionError("voucherd_upload_rest_seconds_total is not exported")


async def test_an_upload_with_nothing_beside_it_never_rests(chunked: Client) -> None:
    list_id = (await create_list(chunked))["id"]

    reply = await uploaded(chunked, list_id, codes_csv(make_codes(BIG)))

    assert reply["accepted"] == BIG
    assert await rested_seconds(chunked) == 0


async def test_an_upload_gives_way_to_claims_written_beside_it(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    client = await start_client(
        Settings(data_dir=tmp_path / "shared", upload_chunk_codes=200, upload_share=0.5)
    )
    claimed = await list_with_codes(client, make_codes(5000, prefix="C"), tag="claimed")
    loading = (await create_list(client, tag="loading"))["id"]
    done = asyncio.Event()
    answers: list[tuple[int, dict[str, Any]]] = []

    async def claim_until_done() -> None:
        while not done.is_set():
            answers.append(await claim(client, claimed, f"user-{len(answers)}"))

    claiming = asyncio.create_task(claim_until_done())
    try:
        reply = await uploaded(client, loading, codes_csv(make_codes(20_000, prefix="L")))
    finally:
        done.set()
        await claiming

    # The upload rested between its chunks while claims were written, and lost nothing by it.
    assert reply["accepted"] == 20_000
    assert await rested_seconds(client) > 0
    assert answers
    assert {status for status, _ in answers} == {201}
    codes = [answer["claim"]["code"] for _, answer in answers]
    assert len(set(codes)) == len(codes)
    assert (await counts(client, claimed))["distributed"] == len(codes)
    assert (await counts(client, loading))["available"] == 20_000


def test_upload_share_must_be_a_share() -> None:
    assert Settings.load(env={"VOUCHERD_UPLOAD_SHARE": "1"}).upload_share == 1
    assert Settings.load(env={}).upload_share == 0.25
    for raw in ("0", "-0.5", "1.5", "half"):
        with pytest.raises(ValueError, match=r"(?i)upload_share"):
            Settings.load(env={"VOUCHERD_UPLOAD_SHARE": raw})


# -- restart -----------------------------------------------------------------------------------


async def test_uploads_survive_a_restart(restartable: Callable[[], Awaitable[Client]]) -> None:
    client = await restartable()
    list_id = (await create_list(client))["id"]
    first = await uploaded(client, list_id, codes_csv(make_codes(50, "A")) + "bad code\n")
    second = await uploaded(client, list_id, codes_csv(make_codes(30, "B")))
    status, failed = await upload(client, list_id, "X1\nX,2\n")
    assert status == 201
    withdrawn = await uploaded(client, list_id, codes_csv(make_codes(20, "W")))
    assert (await client.delete(f"/v1/lists/{list_id}/uploads/{withdrawn['id']}")).status == 200
    for index in range(10):
        status, _ = await claim(client, list_id, f"early-{index}")
        assert status == 201
    before_counts = await counts(client, list_id)
    before_history = await (await client.get(f"/v1/lists/{list_id}/uploads")).json()
    before_errors = await error_rows(client, list_id, first["id"])

    client = await restartable()
    assert await counts(client, list_id) == before_counts
    assert before_counts == {"uploaded": 100, "available": 70, "distributed": 10, "withdrawn": 20}
    after_history = await (await client.get(f"/v1/lists/{list_id}/uploads")).json()
    assert after_history == before_history
    assert [item["status"] for item in after_history["uploads"]] == [
        "completed", "completed", "failed", "withdrawn"
    ]  # fmt: skip
    assert await error_rows(client, list_id, first["id"]) == before_errors
    assert second["accepted"] == 30
    assert failed["status"] == "failed"
    expected = make_codes(50, "A")[10:] + make_codes(30, "B")
    assert await claim_all(client, list_id, "late") == expected


async def test_codes_held_before_a_restart_still_block_duplicates(
    restartable: Callable[[], Awaitable[Client]],
) -> None:
    client = await restartable()
    first = await list_with_codes(client, ["A1", "A2"], tag="first")
    assert (await claim(client, first, "u1"))[0] == 201
    client = await restartable()
    again = await uploaded(client, first, "A1\nA2\nA3\n")
    assert (again["accepted"], nonzero(again["errors"])) == (1, {"duplicate_in_list": 2})
    second = (await create_list(client, tag="second"))["id"]
    other = await uploaded(client, second, "A1\nA2\nA3\nA4\n")
    assert (other["accepted"], nonzero(other["errors"])) == (1, {"duplicate_in_partner": 3})


async def test_the_error_file_keeps_the_earliest_rejected_rows_up_to_the_cap_and_counts_all(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    """A wrong file of millions of bad rows must not grow the database by as many: the error
    file keeps `max_error_rows`, the earliest lines, while `errors` counts every row. Chunks
    of 8 rows put the cap in the middle of a chunk whose invalid rows come before its repeat
    in the check's order, but not in the file's."""
    settings = Settings(data_dir=tmp_path / "data", max_error_rows=10, upload_chunk_codes=8)
    client = await start_client(settings)
    list_id = (await create_list(client))["id"]

    def row(n: int) -> str:
        if n % 3 == 0:
            return f"bad row {n}"
        return "C1" if n % 5 == 0 else f"C{n}"

    lines = range(1, 61)
    records = client.app[METRICS].journal_records_per_commit
    before = records.sum
    reply = await uploaded(client, list_id, "".join(f"{row(n)}\n" for n in lines))
    # The journal counted the upload's row, 8 chunks' blocks, the 10 error rows kept and the
    # completion: rows past the cap are not written, nor held as queued records.
    assert records.sum - before == 1 + 8 + 10 + 1
    invalid = [n for n in lines if n % 3 == 0]
    repeated = [n for n in lines if n % 5 == 0 and n % 3 != 0]
    assert nonzero(reply["errors"]) == {
        "invalid_code": len(invalid),
        "duplicate_in_file": len(repeated),
    }
    assert reply["rejected"] == len(invalid) + len(repeated) == 28
    assert reply["accepted"] == 60 - 28
    earliest = sorted(invalid + repeated)[:10]
    assert earliest == [3, 5, 6, 9, 10, 12, 15, 18, 20, 21]
    assert await error_rows(client, list_id, reply["id"]) == [
        [str(n), row(n), "invalid_code" if n % 3 == 0 else "duplicate_in_file"] for n in earliest
    ]
    with sqlite3.connect(settings.database) as db:
        assert db.execute("SELECT COUNT(*) FROM upload_errors").fetchone() == (10,)
    # The cap is per upload: the next one keeps its own earliest rows.
    again = await uploaded(client, list_id, "bad row\nC1\n")
    assert await error_rows(client, list_id, again["id"]) == [
        ["1", "bad row", "invalid_code"],
        ["2", "C1", "duplicate_in_list"],
    ]
