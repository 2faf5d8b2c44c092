"""Invariant 6: bad input gets a clear 4xx JSON error and changes nothing.

Each check takes a snapshot of every list and of the seeded list's uploads, sends something bad,
checks the status and the error code of the reply, and compares the snapshot afterwards. Cases of
one kind run against one server and report every case that failed, to keep the suite fast.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from support import Client, create_list, get_list, list_body, list_with_codes, make_codes, upload

from voucherd.settings import Settings

ClientFactory = Callable[[Settings], Awaitable[Client]]
Snapshot = tuple[Any, Any]

LISTS = "/v1/lists"
LIST = "/v1/lists/{list_id}"
CLAIMS = "/v1/lists/{list_id}/claims"
BATCH = "/v1/lists/{list_id}/claims/batch"
UPLOADS = "/v1/lists/{list_id}/uploads"


@dataclass(frozen=True)
class Bad:
    """One bad request; `{list_id}` in the path stands for the seeded list."""

    method: str
    path: str
    data: bytes
    content_type: str = "application/json"

    def __str__(self) -> str:
        data = self.data if len(self.data) <= 80 else self.data[:80] + b"..."
        return f"{self.method} {self.path} {self.content_type} {data!r}"


@pytest.fixture
async def seeded(client: Client) -> int:
    """A list with five codes, one of them claimed by u-1."""
    list_id = await list_with_codes(client, make_codes(5))
    response = await client.post(f"/v1/lists/{list_id}/claims", json={"user_id": "u-1"})
    assert response.status == 201
    return list_id


# Read from the clock, not stored: they move while nothing changes.
CLOCK_FIELDS = ("claim_rate", "estimated_exhaustion_at")


async def snapshot(client: Client, list_id: int) -> Snapshot:
    lists = await client.get(LISTS)
    uploads = await client.get(UPLOADS.format(list_id=list_id))
    assert lists.status == uploads.status == 200
    found = await lists.json()
    for listing in found["lists"]:
        for name in CLOCK_FIELDS:
            del listing[name]
    return found, await uploads.json()


async def assert_error(response: ClientResponse, status: int, code: str) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, f"{response.status}: {text[:300]}"
    assert response.content_type == "application/json", response.content_type
    body = json.loads(text)
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    assert set(error) <= {"code", "message", "details"}, body
    return error


async def send(client: Client, bad: Bad, list_id: int) -> ClientResponse:
    return await client.request(
        bad.method,
        bad.path.format(list_id=list_id),
        data=bad.data,
        headers={"Content-Type": bad.content_type},
    )


async def refusals(
    client: Client, list_id: int, cases: Iterable[Bad], status: int, code: str
) -> list[str]:
    """Send each case; return a line for each one not refused cleanly or that changed state."""
    problems: list[str] = []
    for bad in cases:
        before = await snapshot(client, list_id)
        response = await send(client, bad, list_id)
        try:
            await assert_error(response, status, code)
        except AssertionError as exc:
            problems.append(f"{bad}: {str(exc).splitlines()[0][:300]}")
        if await snapshot(client, list_id) != before:
            problems.append(f"{bad}: the state changed")
    return problems


async def assert_refused(
    client: Client, list_id: int, cases: Iterable[Bad], status: int, code: str
) -> None:
    problems = await refusals(client, list_id, cases, status, code)
    assert not problems, "\n".join(["requests not refused cleanly:", *problems])


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def fresh(number: int, **overrides: Any) -> dict[str, Any]:
    """A create body with a tag of its own, so one wrongly accepted case cannot hide the next."""
    return list_body(tag=f"other-{number}", **overrides)


# Each JSON endpoint with a body that is right in every way the cases below do not touch.
ENDPOINTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", LISTS, list_body(tag="other")),
    ("PATCH", LIST, {"name": "New name"}),
    ("POST", CLAIMS, {"user_id": "u-2"}),
    ("POST", BATCH, {"user_ids": ["u-2", "u-3"]}),
]
ENDPOINT_IDS = ["create", "edit", "claim", "batch"]
each_endpoint = pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)


# -- bodies that are not a JSON object ---------------------------------------------------------

NOT_JSON = [
    b"",
    b"{",
    b'{"user_id": "u-2"',
    b"not json",
    b"{'user_id': 'u-2'}",
    b'{"user_id": "u-2",}',
    b"\xff\xfe{}",
    b'{"user_id": "u-\xff"}',
]
NOT_OBJECT = [b"[]", b'[{"user_id": "u-2"}]', b'"u-2"', b"null", b"42", b"true"]


@each_endpoint
async def test_malformed_json_is_refused(
    client: Client, seeded: int, method: str, path: str, body: dict[str, Any]
) -> None:
    cases = [Bad(method, path, data) for data in NOT_JSON]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


@each_endpoint
async def test_json_that_is_not_an_object_is_refused(
    client: Client, seeded: int, method: str, path: str, body: dict[str, Any]
) -> None:
    cases = [Bad(method, path, data) for data in [*NOT_OBJECT, b"[" + raw(body) + b"]"]]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


@each_endpoint
async def test_json_constants_outside_the_standard_are_refused(
    client: Client, seeded: int, method: str, path: str, body: dict[str, Any]
) -> None:
    # RFC 8259 has no NaN or Infinity; taken in, they would go out again as invalid JSON.
    extras = [
        f'"{field}": {value}'
        for constant in ("NaN", "Infinity", "-Infinity")
        for field, value in (
            ("low_stock_threshold", constant),
            ("metadata", constant),
            ("metadata", f'{{"x": {constant}}}'),
        )
    ]
    cases = [
        # A create body gets a tag of its own, so one wrongly accepted case cannot hide the next.
        Bad(method, path, raw(body | ({"tag": f"c{i}"} if "tag" in body else {}))[:-1]
            + f", {extra}}}".encode())
        for i, extra in enumerate(extras)
    ]  # fmt: skip
    await assert_refused(client, seeded, cases, 400, "invalid_request")


@each_endpoint
async def test_deeply_nested_json_is_refused(
    client: Client, seeded: int, method: str, path: str, body: dict[str, Any]
) -> None:
    depth = 100_000
    nested = b"[" * depth + b"]" * depth
    cases = [
        Bad(method, path, nested),
        Bad(method, path, b"{" + b'"a": {' * depth + b"}" * depth + b"}"),
        Bad(method, path, raw(body)[:-1] + b', "metadata": {"a": ' + nested + b"}}"),
    ]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


@each_endpoint
async def test_a_json_endpoint_refuses_other_media_types(
    client: Client, seeded: int, method: str, path: str, body: dict[str, Any]
) -> None:
    types = ["text/csv", "multipart/form-data; boundary=x", "image/png"]
    cases = [Bad(method, path, raw(body), content_type) for content_type in types]
    await assert_refused(client, seeded, cases, 415, "unsupported_media_type")


# -- create: wrong types, missing fields, over-long strings, bad timestamps --------------------

CREATE_WRONG: list[dict[str, Any]] = [
    {"partner": 5},
    {"partner": ["Puma"]},
    {"partner": ""},
    {"tag": 2025},
    {"tag": {"x": 1}},
    {"tag": ""},
    {"name": True},
    {"name": ""},
    {"description": 7},
    {"expires_at": 1893456000},
    {"expires_at": ["2030-01-01T00:00:00Z"]},
    {"low_stock_threshold": "10"},
    {"low_stock_threshold": True},
    {"low_stock_threshold": 1.5},
    {"low_stock_threshold": -1},
    {"low_stock_threshold": -1000},
    {"low_stock_threshold": 2**64},
    {"duplicate_scope": "global"},
    {"duplicate_scope": "Partner"},
    {"duplicate_scope": 1},
    {"duplicate_scope": None},
    {"partner": "P" * 101},
    {"tag": "t" * 101},
    {"name": "n" * 201},
    {"description": "d" * 2001},
]
# Control characters: C0, DEL and C1 (U+0080 to U+009F are control characters too).
CONTROLS = ["\x00", "\n", "\t", "\x1b", "\x1f", "\x7f", "\x85", "\x9b"]
BAD_TIMES = [
    # ISO 8601 that is not RFC 3339: a week date, offsets without their colon or minutes.
    "2027-W52-5T23:59:59Z",
    "2027-12-31T23:59:59+01",
    "2027-12-31T23:59:59+0100",
    "2027-12-31T23:59:59 Z",
    "2030-01-01T00:00:00",
    "2030-01-01",
    "2030-01-01 00:00:00Z",
    "garbage",
    "",
    "next tuesday",
    "2030-13-01T00:00:00Z",
    "2030-02-30T00:00:00Z",
    "2030-01-01T25:00:00Z",
    "2030-01-01T00:00:00+24:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00-01:00",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59-23:59",
    "1969-12-31T23:59:59Z",
    "2030-01-01T00:00:00Z" + " " * 30,
]


async def test_create_refuses_a_field_of_the_wrong_type_or_size(
    client: Client, seeded: int
) -> None:
    cases = [Bad("POST", LISTS, raw(fresh(i) | wrong)) for i, wrong in enumerate(CREATE_WRONG)]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


@pytest.mark.parametrize("field", ["partner", "tag", "name", "description"])
async def test_create_refuses_control_characters(client: Client, seeded: int, field: str) -> None:
    cases = [
        Bad("POST", LISTS, raw(fresh(i) | {field: f"Pu{control}ma"}))
        for i, control in enumerate(CONTROLS)
    ]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


async def test_create_refuses_a_body_missing_a_required_field(client: Client, seeded: int) -> None:
    cases = []
    for i, missing in enumerate(("partner", "tag", "name", "expires_at")):
        body = fresh(i)
        del body[missing]
        cases.append(Bad("POST", LISTS, raw(body)))
        cases.append(Bad("POST", LISTS, raw(body | {missing: None})))
    cases.append(Bad("POST", LISTS, b"{}"))
    await assert_refused(client, seeded, cases, 400, "invalid_request")


async def test_create_names_the_missing_field(client: Client) -> None:
    body = list_body()
    del body["expires_at"]
    response = await client.post(LISTS, json=body)
    error = await assert_error(response, 400, "invalid_request")
    assert "expires_at" in error["message"]


async def test_create_refuses_a_bad_timestamp(client: Client, seeded: int) -> None:
    cases = [Bad("POST", LISTS, raw(fresh(i, expires_at=at))) for i, at in enumerate(BAD_TIMES)]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


async def test_the_longest_allowed_strings_are_accepted(client: Client) -> None:
    created = await create_list(
        client, partner="P" * 100, tag="t" * 100, name="n" * 200, description="d" * 2000
    )
    assert created["partner"] == "P" * 100


# -- edit --------------------------------------------------------------------------------------

EDIT_WRONG: list[dict[str, Any]] = [
    {"name": 5},
    {"name": ""},
    {"name": "n" * 201},
    {"name": "N\x00"},
    {"name": "N\x9b"},
    {"description": ["d"]},
    {"description": "d" * 2001},
    {"description": "d\x1b[31m"},
    {"low_stock_threshold": -1},
    {"low_stock_threshold": "5"},
    {"low_stock_threshold": False},
    {"low_stock_threshold": 0.5},
    {"expires_at": 1893456000},
    {"name": "Fine", "low_stock_threshold": -5},
    {"name": "Fine", "expires_at": "2030-01-01T00:00:00"},
]


async def test_edit_refuses_a_field_of_the_wrong_type_or_size(client: Client, seeded: int) -> None:
    cases = [Bad("PATCH", LIST, raw(body)) for body in EDIT_WRONG]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


async def test_edit_refuses_a_bad_timestamp(client: Client, seeded: int) -> None:
    cases = [Bad("PATCH", LIST, raw({"expires_at": at})) for at in BAD_TIMES]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


# -- claims ------------------------------------------------------------------------------------

BAD_USER_IDS: list[Any] = [
    42,
    None,
    True,
    ["u-2"],
    {"id": "u-2"},
    "",
    "u" * 257,
    *(f"u{control}2" for control in CONTROLS),
]
# Written into the JSON text as escapes: a lone surrogate is not a Unicode character.
SURROGATES = ["\\ud800", "u-\\udfff", "\\udc00\\ud800", "a\\ud83d"]


async def test_a_claim_refuses_a_bad_user_id(client: Client, seeded: int) -> None:
    cases = [Bad("POST", CLAIMS, raw({"user_id": user_id})) for user_id in BAD_USER_IDS]
    cases.append(Bad("POST", CLAIMS, raw({"idempotency_key": "k"})))
    await assert_refused(client, seeded, cases, 400, "invalid_request")


async def test_a_claim_refuses_a_lone_surrogate(client: Client, seeded: int) -> None:
    cases = [Bad("POST", CLAIMS, f'{{"user_id": "{s}"}}'.encode()) for s in SURROGATES]
    cases += [
        Bad("POST", CLAIMS, f'{{"user_id": "u-2", "idempotency_key": "{s}"}}'.encode())
        for s in SURROGATES
    ]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


async def test_create_refuses_a_lone_surrogate_in_the_partner(client: Client, seeded: int) -> None:
    cases = [
        Bad("POST", LISTS, raw(fresh(i)).replace(b'"Puma"', f'"Pu{s}ma"'.encode()))
        for i, s in enumerate(SURROGATES)
    ]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


async def test_a_claim_refuses_a_bad_idempotency_key(client: Client, seeded: int) -> None:
    keys: list[Any] = [5, ["k"], "k" * 257, *(f"k{control}" for control in CONTROLS)]
    cases = [Bad("POST", CLAIMS, raw({"user_id": "u-2", "idempotency_key": k})) for k in keys]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


async def test_a_claim_refuses_metadata_that_is_not_a_small_object(
    client: Client, seeded: int
) -> None:
    metadata: list[Any] = [
        [],
        ["a"],
        "text",
        5,
        True,
        {"a": "x" * 5000},
        {"a": "é" * 3000},  # 3,000 characters, 6,000 bytes
        {f"k{i}": i for i in range(2000)},
    ]
    cases = [Bad("POST", CLAIMS, raw({"user_id": "u-2", "metadata": m})) for m in metadata]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


async def test_metadata_well_under_four_kib_is_accepted(client: Client, seeded: int) -> None:
    metadata = {"a": "x" * 3000, "b": [1, 2.5, None, True], "c": {"d": "é"}}
    response = await client.post(
        f"/v1/lists/{seeded}/claims", json={"user_id": "u-2", "metadata": metadata}
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["claim"]["metadata"] == metadata


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_cannot_be_decompressed_is_a_400_and_changes_nothing(
    client: Client, seeded: int, encoding: str
) -> None:
    before = await snapshot(client, seeded)
    for path, content_type in (
        (f"/v1/lists/{seeded}/claims", "application/json"),
        (f"/v1/lists/{seeded}/claims/batch", "application/json"),
        (f"/v1/lists/{seeded}/uploads", "text/csv"),
    ):
        response = await client.post(
            path,
            data=b"not compressed at all",
            headers={"Content-Type": content_type, "Content-Encoding": encoding},
        )
        assert response.status == 400, await response.text()
        assert (await response.json())["error"]["code"] == "invalid_request"
    # The lists and their counts as before; the upload is in the history, failed.
    lists, uploads = await snapshot(client, seeded)
    assert lists == before[0]
    assert [u["status"] for u in uploads["uploads"]][len(before[1]["uploads"]) :] == ["failed"]


# -- batches -----------------------------------------------------------------------------------


async def test_a_batch_with_bad_user_ids_claims_nothing(client: Client, seeded: int) -> None:
    bodies: list[Any] = [
        {},
        {"user_ids": None},
        {"user_ids": "u-2"},
        {"user_ids": {"u-2": 1}},
        {"user_ids": []},
        {"user_ids": [""]},
        {"user_ids": [5]},
        {"user_ids": ["u-2", None]},
        {"user_ids": ["u-2", "u" * 257]},
        {"user_ids": [["u-2"]]},
        *({"user_ids": ["u-2", f"u{control}3"]} for control in CONTROLS),
    ]
    cases = [Bad("POST", BATCH, raw(body)) for body in bodies]
    cases += [Bad("POST", BATCH, f'{{"user_ids": ["u-2", "{s}"]}}'.encode()) for s in SURROGATES]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


async def test_a_batch_over_the_limit_claims_nothing(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    client = await start_client(Settings(data_dir=tmp_path / "small", max_batch_users=3))
    list_id = await list_with_codes(client, make_codes(10))
    too_many = Bad("POST", BATCH, raw({"user_ids": ["u-1", "u-2", "u-3", "u-4"]}))
    await assert_refused(client, list_id, [too_many], 400, "invalid_request")
    # At the limit it is fine, duplicates included.
    response = await client.post(
        f"/v1/lists/{list_id}/claims/batch", json={"user_ids": ["u-1", "u-2", "u-2"]}
    )
    assert response.status == 200
    assert len((await response.json())["claims"]) == 2


# -- bodies over max_json_bytes ----------------------------------------------------------------


@pytest.fixture
async def small_json(start_client: ClientFactory, tmp_path: Path) -> Client:
    return await start_client(Settings(data_dir=tmp_path / "small", max_json_bytes=1024))


async def test_a_json_body_over_the_limit_is_too_large(small_json: Client) -> None:
    list_id = await list_with_codes(small_json, make_codes(5))
    cases = [
        Bad("POST", LISTS, raw(list_body(tag="other", description="d" * 1500))),
        Bad("PATCH", LIST, raw({"description": "d" * 1500})),
        Bad("POST", CLAIMS, raw({"user_id": "u-2", "metadata": {"a": "x" * 1500}})),
        Bad("POST", BATCH, raw({"user_ids": [f"user-{i}" for i in range(200)]})),
        Bad("POST", CLAIMS, b"[" * 100_000),
    ]
    assert all(len(bad.data) > 1024 for bad in cases)
    await assert_refused(small_json, list_id, cases, 413, "payload_too_large")


async def test_a_streamed_json_body_over_the_limit_is_too_large(small_json: Client) -> None:
    list_id = await list_with_codes(small_json, make_codes(5))
    before = await snapshot(small_json, list_id)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"user_id": "u-2", "metadata": {"a": "'
        for _ in range(10):
            yield b"x" * 200
        yield b'"}}'

    response = await small_json.post(
        f"/v1/lists/{list_id}/claims", data=chunks(), headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 413, "payload_too_large")
    assert await snapshot(small_json, list_id) == before


async def test_a_json_body_at_the_limit_is_read(small_json: Client) -> None:
    data = raw(list_body(description=""))
    data = raw(list_body(description="d" * (1024 - len(data))))
    assert len(data) == 1024
    response = await small_json.post(LISTS, data=data, headers={"Content-Type": "application/json"})
    assert response.status == 201, await response.text()


# -- ids and routes ----------------------------------------------------------------------------

LIST_ROUTES = [
    ("GET", "/v1/lists/{id}"),
    ("PATCH", "/v1/lists/{id}"),
    ("POST", "/v1/lists/{id}/pause"),
    ("POST", "/v1/lists/{id}/activate"),
    ("POST", "/v1/lists/{id}/archive"),
    ("POST", "/v1/lists/{id}/uploads"),
    ("GET", "/v1/lists/{id}/uploads"),
    ("GET", "/v1/lists/{id}/uploads/1"),
    ("DELETE", "/v1/lists/{id}/uploads/1"),
    ("GET", "/v1/lists/{id}/uploads/1/errors"),
    ("POST", "/v1/lists/{id}/claims"),
    ("POST", "/v1/lists/{id}/claims/batch"),
]
BAD_IDS = ["0", "999", "99999999999999999999999", "abc", "-1", "1.0", "0x1", "1e3", "%D9%A3", "+1"]


# Pages: `after` and `limit` are whole numbers, `limit` 1 to 10,000.
BAD_PAGES = [
    *("limit=0", "limit=10001", "limit=-1", "limit=1.5", "limit=", "limit=two"),
    *("after=-1", "after=1e3", "after=", "after=%D9%A3", "after=1234567890123456789"),
]
PAGED = [LISTS, UPLOADS, "/v1/users/u-1/vouchers"]


async def test_a_bad_page_is_refused(client: Client, seeded: int) -> None:
    cases = [Bad("GET", f"{path}?{query}", b"") for path in PAGED for query in BAD_PAGES]
    await assert_refused(client, seeded, cases, 400, "invalid_request")


def to(method: str, path: str) -> Bad:
    """A request that would be fine if the path named something that exists."""
    if path.endswith("/uploads") and method == "POST":
        return Bad(method, path, b"NEW1\n", "text/csv")
    return Bad(method, path, raw({"user_id": "u-2", "user_ids": ["u-2"], "name": "N"}))


async def test_an_unknown_or_malformed_list_id_is_not_found(client: Client, seeded: int) -> None:
    cases = [
        to(method, route.replace("{id}", bad_id))
        for method, route in LIST_ROUTES
        for bad_id in BAD_IDS
    ]
    await assert_refused(client, seeded, cases, 404, "not_found")


async def test_an_unknown_or_malformed_upload_id_is_not_found(client: Client, seeded: int) -> None:
    other = await create_list(client, tag="other")
    routes = [(m, r) for m, r in LIST_ROUTES if "/uploads/1" in r]
    cases = [
        to(method, route.replace("{id}", "{list_id}").replace("/uploads/1", f"/uploads/{bad}"))
        for method, route in routes
        for bad in ("999", "abc", "-1", "1.5", "0")
    ]
    # Upload 1 exists, but belongs to the seeded list, not to the other one.
    cases += [to(method, route.replace("{id}", str(other["id"]))) for method, route in routes]
    await assert_refused(client, seeded, cases, 404, "not_found")


async def test_an_unknown_route_is_a_json_404(client: Client, seeded: int) -> None:
    paths = [
        ("GET", "/"),
        ("GET", "/nothing"),
        ("GET", "/v1"),
        ("GET", "/v1/nothing"),
        ("POST", "/v1/lists/{list_id}/frobnicate"),
        ("GET", "/v2/lists"),
        ("GET", "/v1/lists/{list_id}/uploads/1/errors/more"),
        ("DELETE", "/v1/users"),
    ]
    cases = [to(method, path) for method, path in paths]
    await assert_refused(client, seeded, cases, 404, "not_found")


async def test_a_wrong_method_is_a_json_405(client: Client, seeded: int) -> None:
    paths = [
        ("DELETE", LISTS),
        ("PUT", LISTS),
        ("PUT", LIST),
        ("DELETE", LIST),
        ("GET", CLAIMS),
        ("GET", "/v1/lists/{list_id}/pause"),
        ("PATCH", "/v1/lists/{list_id}/uploads/1"),
        ("POST", "/healthz"),
        ("DELETE", "/v1/openapi.json"),
    ]
    cases = [to(method, path) for method, path in paths]
    await assert_refused(client, seeded, cases, 405, "method_not_allowed")
    response = await client.delete(LISTS)
    assert set(response.headers["Allow"].split(",")) >= {"GET", "POST"}


# -- uploads -----------------------------------------------------------------------------------


async def assert_no_codes_added(client: Client, list_id: int, before: Snapshot) -> None:
    """The lists are as they were; an upload may have been recorded, but only as failed."""
    lists_before, uploads_before = before
    lists_after, uploads_after = await snapshot(client, list_id)
    assert lists_after == lists_before
    old = uploads_before["uploads"]
    assert uploads_after["uploads"][: len(old)] == old
    for added in uploads_after["uploads"][len(old) :]:
        assert added["status"] == "failed", added
        assert added["accepted"] == 0, added


async def test_an_upload_of_another_media_type_is_refused(client: Client, seeded: int) -> None:
    types = [
        "application/json",
        "application/octet-stream",
        "image/png",
        "application/x-www-form-urlencoded",
    ]
    cases = [Bad("POST", UPLOADS, b"NEW1\nNEW2\n", content_type) for content_type in types]
    await assert_refused(client, seeded, cases, 415, "unsupported_media_type")


async def assert_upload_refused(client: Client, list_id: int, data: bytes, why: str) -> None:
    """A 400 that records a failed upload with the reason, and adds no code."""
    before = await snapshot(client, list_id)
    status, reply = await upload(client, list_id, data)
    assert status == 400, reply
    assert reply["error"]["code"] == "invalid_request"
    failed = reply["error"]["details"]["upload"]
    assert failed["status"] == "failed"
    assert failed["accepted"] == 0
    assert failed["error"]["code"] == why
    await assert_no_codes_added(client, list_id, before)


@pytest.mark.parametrize(
    "data",
    [
        b"NEW1\nNE\x00W2\nNEW3\n",
        b"\x00",
        b"NEW1\n" * 10 + b"\x00" * 100,
        b"\x89PNG\r\n\x1a\n\x00\x00",
    ],
    ids=["nul-in-code", "nul-only", "nul-after-codes", "png"],
)
async def test_a_binary_upload_is_refused_and_adds_no_code(
    client: Client, seeded: int, data: bytes
) -> None:
    await assert_upload_refused(client, seeded, data, "binary_content")


@pytest.mark.parametrize(
    "data",
    [b"NEW1\n" + b"X" * 5000 + b"\nNEW2\n", b"NEW1\n" + b"X" * 200_000, b" " * 5000 + b"\n"],
    ids=["long-line", "long-last-line", "long-blank-line"],
)
async def test_an_upload_with_a_huge_line_is_refused_and_adds_no_code(
    client: Client, seeded: int, data: bytes
) -> None:
    await assert_upload_refused(client, seeded, data, "line_too_long")


@pytest.fixture
async def small_uploads(start_client: ClientFactory, tmp_path: Path) -> Client:
    return await start_client(Settings(data_dir=tmp_path / "small", max_upload_bytes=1024))


async def test_an_upload_declared_over_the_limit_is_refused_up_front(
    small_uploads: Client,
) -> None:
    list_id = await list_with_codes(small_uploads, make_codes(5))
    data = "".join(f"NEW{i:05d}\n" for i in range(200)).encode()
    assert len(data) > 1024
    too_large = Bad("POST", UPLOADS, data, "text/csv")
    await assert_refused(small_uploads, list_id, [too_large], 413, "payload_too_large")


async def test_a_streamed_upload_over_the_limit_is_refused_and_adds_no_code(
    small_uploads: Client,
) -> None:
    list_id = await list_with_codes(small_uploads, make_codes(5))
    before = await snapshot(small_uploads, list_id)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, 400, 20):
            yield "".join(f"NEW{i:05d}\n" for i in range(start, start + 20)).encode()

    response = await small_uploads.post(
        f"/v1/lists/{list_id}/uploads", data=chunks(), headers={"Content-Type": "text/csv"}
    )
    await assert_error(response, 413, "payload_too_large")
    await assert_no_codes_added(small_uploads, list_id, before)
    assert (await get_list(small_uploads, list_id))["codes"]["uploaded"] == 5


async def test_an_upload_at_the_limit_is_accepted(small_uploads: Client) -> None:
    list_id = await list_with_codes(small_uploads, make_codes(5))
    data = b"".join(f"NEW{i:04d}\n".encode() for i in range(128))
    assert len(data) == 1024
    status, reply = await upload(small_uploads, list_id, data)
    assert status == 201, reply
    assert reply["accepted"] == 128
