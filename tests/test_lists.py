"""Voucher lists over HTTP: create, read, filter, edit, the status transitions, and restarts."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from support import (
    Client,
    assert_balanced,
    call,
    codes_csv,
    create_list,
    error_code,
    get_list,
    list_body,
    list_with_codes,
    make_codes,
    pages,
    upload,
)

from voucherd.server import pieces as server_pieces

PAST = "2020-01-01T00:00:00Z"
LATER = "2031-06-30T12:00:00Z"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
LIST_FIELDS = {
    "id",
    "partner",
    "tag",
    "name",
    "description",
    "expires_at",
    "status",
    "duplicate_scope",
    "low_stock_threshold",
    "created_at",
    "updated_at",
    "codes",
    "campaigns",
    "expiry_warning",
    "utilization",
    "claim_rate",
    "estimated_exhaustion_at",
}
Restart = Callable[[], Awaitable[Client]]


async def list_in(client: Client, status: str, **overrides: Any) -> dict[str, Any]:
    """A fresh list in `status`: active, paused, expired (its date has passed) or archived."""
    if status == "expired":
        overrides.setdefault("expires_at", PAST)
    created = await create_list(client, **overrides)
    if status in ("paused", "archived"):
        action = "pause" if status == "paused" else "archive"
        code, reply = await call(client, "POST", f"/v1/lists/{created['id']}/{action}")
        assert code == 200, reply
    listing = await get_list(client, created["id"])
    assert listing["status"] == status
    return listing


async def claim(client: Client, list_id: int, user_id: str) -> tuple[int, Any]:
    return await call(client, "POST", f"/v1/lists/{list_id}/claims", {"user_id": user_id})


async def lists(client: Client, **params: str) -> list[dict[str, Any]]:
    status, reply = await call(client, "GET", "/v1/lists", **params)
    assert status == 200, reply
    found: list[dict[str, Any]] = reply["lists"]
    return found


def ids(found: list[dict[str, Any]]) -> set[int]:
    return {listing["id"] for listing in found}


# -- create ------------------------------------------------------------------------------------


async def test_a_created_list_has_every_field_of_the_contract(client: Client) -> None:
    created = await create_list(client, duplicate_scope="list", low_stock_threshold=5)
    assert set(created) == LIST_FIELDS
    assert isinstance(created["id"], int)
    assert created["partner"] == "Puma"
    assert created["tag"] == "holi2025"
    assert created["name"] == "Holi 2025 Sale"
    assert created["description"] == "Orders above $100"
    assert created["expires_at"] == "2030-01-01T00:00:00Z"
    assert created["status"] == "active"
    assert created["duplicate_scope"] == "list"
    assert created["low_stock_threshold"] == 5
    assert TIME.match(created["created_at"])
    assert created["updated_at"] == created["created_at"]
    assert created["codes"] == {"uploaded": 0, "available": 0, "distributed": 0, "withdrawn": 0}
    assert created["campaigns"] == []
    assert created["expiry_warning"] == "P3D"
    assert created["utilization"] == 0.0
    assert created["claim_rate"] == 0.0
    assert created["estimated_exhaustion_at"] is None
    assert await get_list(client, created["id"]) == created


async def test_create_fills_in_the_optional_fields(client: Client) -> None:
    body = list_body()
    del body["description"]
    status, created = await call(client, "POST", "/v1/lists", body)
    assert status == 201, created
    assert created["duplicate_scope"] == "partner"
    assert created["low_stock_threshold"] == 1000
    assert created["description"] == ""


async def test_each_list_gets_its_own_id(client: Client) -> None:
    first = await create_list(client, tag="one")
    second = await create_list(client, tag="two")
    assert first["id"] != second["id"]


async def test_the_tag_is_lowercased(client: Client) -> None:
    created = await create_list(client, tag="HoLi2025")
    assert created["tag"] == "holi2025"


async def test_a_tag_may_hold_special_characters(client: Client) -> None:
    created = await create_list(client, tag="Holi-2025_50%!@#/é")
    assert created["tag"] == "holi-2025_50%!@#/é"


async def test_a_tag_longer_than_allowed_once_lowercased_is_refused(client: Client) -> None:
    # "İ" lowercases to two characters: 100 of them make a tag of 200.
    status, reply = await call(client, "POST", "/v1/lists", list_body(tag="İ" * 100))
    assert (status, error_code(reply)) == (400, "invalid_request"), reply
    assert await lists(client) == []
    assert (await create_list(client, tag="İ" * 50))["tag"] == "i̇" * 50


@pytest.mark.parametrize("tag", ["holi 2025", " holi", "holi ", "holi\t2025", "holi\u00a02025"])
async def test_a_tag_with_whitespace_is_refused(client: Client, tag: str) -> None:
    status, reply = await call(client, "POST", "/v1/lists", list_body(tag=tag))
    assert status == 400
    assert error_code(reply) == "invalid_request"
    assert await lists(client) == []


async def test_the_expiry_is_shown_in_utc(client: Client) -> None:
    created = await create_list(client, expires_at="2030-01-01T02:30:00+02:30")
    assert created["expires_at"] == "2030-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("2030-01-01t02:30:00z", "2030-01-01T02:30:00Z"),
        ("2030-01-01T02:30:00.999999999999-00:00", "2030-01-01T02:30:00Z"),
        ("2030-01-01T14:00:00+14:00", "2030-01-01T00:00:00Z"),
        ("2030-06-30T23:59:60Z", "2030-06-30T23:59:59Z"),  # a leap second
    ],
)
async def test_each_form_of_rfc_3339_is_read(client: Client, sent: str, shown: str) -> None:
    assert (await create_list(client, expires_at=sent))["expires_at"] == shown


async def test_a_list_created_with_a_past_expiry_reads_expired(client: Client) -> None:
    created = await create_list(client, expires_at=PAST)
    assert created["status"] == "expired"
    assert created["expires_at"] == PAST


# -- tags are unique per partner among lists not archived --------------------------------------


async def test_a_partner_cannot_use_a_tag_twice(client: Client) -> None:
    first = await create_list(client)
    status, reply = await call(client, "POST", "/v1/lists", list_body(name="Other"))
    assert status == 409
    assert error_code(reply) == "tag_taken"
    assert ids(await lists(client)) == {first["id"]}


async def test_tags_compare_without_case(client: Client) -> None:
    await create_list(client, tag="holi2025")
    status, reply = await call(client, "POST", "/v1/lists", list_body(tag="HOLI2025"))
    assert status == 409
    assert error_code(reply) == "tag_taken"


@pytest.mark.parametrize("status", ["paused", "expired"])
async def test_a_paused_or_expired_list_still_holds_its_tag(client: Client, status: str) -> None:
    await list_in(client, status)
    code, reply = await call(client, "POST", "/v1/lists", list_body())
    assert code == 409
    assert error_code(reply) == "tag_taken"


async def test_another_partner_may_use_the_same_tag(client: Client) -> None:
    puma = await create_list(client, partner="Puma")
    nike = await create_list(client, partner="Nike")
    # Partner names are case-sensitive: "puma" is another partner.
    lower = await create_list(client, partner="puma")
    assert puma["tag"] == nike["tag"] == lower["tag"] == "holi2025"


async def test_archiving_a_list_frees_its_tag(client: Client) -> None:
    old = await list_in(client, "archived")
    new = await create_list(client, tag="HOLI2025")
    assert new["id"] != old["id"]
    assert new["tag"] == old["tag"]
    assert (await get_list(client, old["id"]))["status"] == "archived"


# -- read and filter ---------------------------------------------------------------------------


async def test_an_unknown_list_is_not_found(client: Client) -> None:
    status, reply = await call(client, "GET", "/v1/lists/424242")
    assert status == 404
    assert error_code(reply) == "not_found"


async def test_with_no_lists_the_listing_is_empty(client: Client) -> None:
    assert await lists(client) == []


async def test_lists_filter_by_partner_status_and_tag(client: Client) -> None:
    active = await list_in(client, "active", partner="Puma", tag="a")
    paused = await list_in(client, "paused", partner="Puma", tag="b")
    expired = await list_in(client, "expired", partner="Nike", tag="a")
    archived = await list_in(client, "archived", partner="Nike", tag="b")
    everything = {active["id"], paused["id"], expired["id"], archived["id"]}

    assert ids(await lists(client)) == everything
    assert ids(await lists(client, partner="Puma")) == {active["id"], paused["id"]}
    assert ids(await lists(client, partner="Nike")) == {expired["id"], archived["id"]}
    assert ids(await lists(client, partner="puma")) == set()
    assert ids(await lists(client, status="active")) == {active["id"]}
    assert ids(await lists(client, status="paused")) == {paused["id"]}
    assert ids(await lists(client, status="expired")) == {expired["id"]}
    assert ids(await lists(client, status="archived")) == {archived["id"]}
    assert ids(await lists(client, tag="a")) == {active["id"], expired["id"]}
    assert ids(await lists(client, tag="B")) == {paused["id"], archived["id"]}
    assert ids(await lists(client, partner="Nike", tag="a", status="expired")) == {expired["id"]}
    assert ids(await lists(client, partner="Nike", status="active")) == set()


async def test_lists_come_in_pages_in_id_order(client: Client) -> None:
    made = [(await create_list(client, tag=f"t{n}", partner=("Puma", "Nike")[n % 2]))["id"]
            for n in range(7)]  # fmt: skip

    by_three = await pages(client, "/v1/lists", "lists", "id", 3)
    assert [[found["id"] for found in page] for page in by_three] == [
        made[:3],
        made[3:6],
        [made[6]],
    ]
    # A page that ends the collection exactly says so: no empty page follows.
    assert len(await pages(client, "/v1/lists", "lists", "id", 7)) == 1
    # Filters narrow the lists before the page is cut.
    nike = await pages(client, "/v1/lists", "lists", "id", 2, partner="Nike")
    assert [[found["id"] for found in page] for page in nike] == [made[1:4:2], [made[5]]]
    status, reply = await call(client, "GET", "/v1/lists", after=str(made[-1]))
    assert (status, reply) == (200, {"lists": [], "has_more": False})
    # Without a limit, every list after `after`.
    status, reply = await call(client, "GET", "/v1/lists", after=str(made[4]))
    assert [found["id"] for found in reply["lists"]] == made[5:]
    assert reply["has_more"] is False


async def test_pages_of_lists_cut_across_pieces_hold_each_list_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing goes through the lists two at a time (other requests run between): every
    limit gives the same lists, in order, whichever filter narrows them."""
    monkeypatch.setattr(server_pieces, "PIECE", 2)
    made = [
        await create_list(client, tag=f"t{n}", partner=("A", "B", "C")[n % 3]) for n in range(8)
    ]
    for partner in (None, "A", "B", "C"):
        wanted = [found["id"] for found in made if partner in (None, found["partner"])]
        params = {} if partner is None else {"partner": partner}
        for limit in range(1, len(wanted) + 2):
            found = await pages(client, "/v1/lists", "lists", "id", limit, **params)
            assert [[listing["id"] for listing in page] for page in found] == [
                wanted[at : at + limit] for at in range(0, max(len(wanted), 1), limit)
            ], (partner, limit)


async def test_the_listing_shows_the_same_objects_as_get(client: Client) -> None:
    created = await list_in(client, "paused")
    assert await lists(client) == [await get_list(client, created["id"])]


async def test_an_unknown_status_filter_is_refused(client: Client) -> None:
    status, reply = await call(client, "GET", "/v1/lists", status="gone")
    assert status == 400
    assert error_code(reply) == "invalid_request"


# -- edit --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("name", "Holi Sale, extended", "Holi Sale, extended"),
        ("description", "Orders above $50", "Orders above $50"),
        ("description", "", ""),
        ("expires_at", "2031-06-30T14:00:00+02:00", "2031-06-30T12:00:00Z"),
        ("low_stock_threshold", 0, 0),
        ("low_stock_threshold", 250, 250),
    ],
)
async def test_each_editable_field_can_be_patched(
    client: Client, field: str, value: Any, shown: Any
) -> None:
    created = await create_list(client)
    status, patched = await call(client, "PATCH", f"/v1/lists/{created['id']}", {field: value})
    assert status == 200, patched
    assert patched[field] == shown
    untouched = {k: v for k, v in created.items() if k not in (field, "updated_at")}
    assert {k: v for k, v in patched.items() if k not in (field, "updated_at")} == untouched
    assert patched["updated_at"] >= created["updated_at"]
    assert await get_list(client, created["id"]) == patched


async def test_several_fields_can_be_patched_at_once(client: Client) -> None:
    created = await create_list(client)
    edit = {"name": "N", "description": "D", "expires_at": LATER, "low_stock_threshold": 7}
    status, patched = await call(client, "PATCH", f"/v1/lists/{created['id']}", edit)
    assert status == 200, patched
    assert {k: patched[k] for k in edit} == edit


@pytest.mark.parametrize(
    "body", [{}, {"name": None}, {"status": "paused"}, {"partner": "Nike", "tag": "x"}]
)
async def test_a_patch_with_nothing_to_change_is_refused(
    client: Client, body: dict[str, Any]
) -> None:
    created = await create_list(client)
    status, reply = await call(client, "PATCH", f"/v1/lists/{created['id']}", body)
    assert status == 400
    assert error_code(reply) == "invalid_request"
    assert await get_list(client, created["id"]) == created


async def test_a_paused_list_can_be_edited_and_stays_paused(client: Client) -> None:
    paused = await list_in(client, "paused")
    status, patched = await call(client, "PATCH", f"/v1/lists/{paused['id']}", {"name": "N"})
    assert status == 200, patched
    assert patched["name"] == "N"
    assert patched["status"] == "paused"


async def test_an_archived_list_cannot_be_edited(client: Client) -> None:
    archived = await list_in(client, "archived")
    status, reply = await call(client, "PATCH", f"/v1/lists/{archived['id']}", {"name": "N"})
    assert status == 409
    assert error_code(reply) == "list_archived"
    assert await get_list(client, archived["id"]) == archived


async def test_editing_an_expired_list_without_extending_it_keeps_it_expired(
    client: Client,
) -> None:
    expired = await list_in(client, "expired")
    status, patched = await call(client, "PATCH", f"/v1/lists/{expired['id']}", {"name": "N"})
    assert status == 200, patched
    assert patched["status"] == "expired"
    status, patched = await call(
        client, "PATCH", f"/v1/lists/{expired['id']}", {"expires_at": "2021-01-01T00:00:00Z"}
    )
    assert status == 200, patched
    assert patched["status"] == "expired"


async def test_extending_an_expired_list_makes_it_active(client: Client) -> None:
    expired = await list_in(client, "expired")
    status, patched = await call(
        client, "PATCH", f"/v1/lists/{expired['id']}", {"expires_at": LATER}
    )
    assert status == 200, patched
    assert patched["status"] == "active"
    assert patched["expires_at"] == LATER
    assert (await get_list(client, expired["id"]))["status"] == "active"


async def test_moving_the_expiry_into_the_past_expires_the_list(client: Client) -> None:
    created = await create_list(client)
    status, patched = await call(
        client, "PATCH", f"/v1/lists/{created['id']}", {"expires_at": PAST}
    )
    assert status == 200, patched
    assert patched["status"] == "expired"


# -- status transitions ------------------------------------------------------------------------

TRANSITIONS = [
    ("active", "pause", "paused"),
    ("active", "activate", "conflict"),
    ("active", "archive", "archived"),
    ("paused", "pause", "list_paused"),
    ("paused", "activate", "active"),
    ("paused", "archive", "archived"),
    ("expired", "pause", "list_expired"),
    ("expired", "activate", "list_expired"),
    ("expired", "archive", "archived"),
    ("archived", "pause", "list_archived"),
    ("archived", "activate", "list_archived"),
    ("archived", "archive", "list_archived"),
]


@pytest.mark.parametrize(("start", "action", "outcome"), TRANSITIONS)
async def test_each_transition_follows_the_status_table(
    client: Client, start: str, action: str, outcome: str
) -> None:
    before = await list_in(client, start)
    status, reply = await call(client, "POST", f"/v1/lists/{before['id']}/{action}")
    after = await get_list(client, before["id"])
    if outcome.startswith(("list_", "conflict")):
        assert status == 409, reply
        assert error_code(reply) == outcome
        assert start in reply["error"]["message"]
        assert after == before
    else:
        assert status == 200, reply
        assert reply == after
        assert after["status"] == outcome
        assert {k: v for k, v in after.items() if k not in ("status", "updated_at")} == {
            k: v for k, v in before.items() if k not in ("status", "updated_at")
        }


async def test_a_paused_list_past_its_expiry_reads_expired_and_cannot_be_activated(
    client: Client,
) -> None:
    paused = await list_in(client, "paused")
    status, patched = await call(client, "PATCH", f"/v1/lists/{paused['id']}", {"expires_at": PAST})
    assert status == 200, patched
    assert patched["status"] == "expired"
    status, reply = await call(client, "POST", f"/v1/lists/{paused['id']}/activate")
    assert status == 409
    assert error_code(reply) == "list_expired"


@pytest.mark.parametrize("action", ["pause", "activate", "archive"])
async def test_a_transition_of_an_unknown_list_is_not_found(client: Client, action: str) -> None:
    status, reply = await call(client, "POST", f"/v1/lists/999/{action}")
    assert status == 404
    assert error_code(reply) == "not_found"


# -- what each status allows: uploads and claims -----------------------------------------------


@pytest.mark.parametrize(
    ("start", "outcome"),
    [("active", 201), ("paused", 201), ("expired", "list_expired"), ("archived", "list_archived")],
)
async def test_uploads_are_allowed_on_active_and_paused_lists_only(
    client: Client, start: str, outcome: int | str
) -> None:
    listing = await list_in(client, start)
    status, reply = await upload(client, listing["id"], codes_csv(make_codes(3)))
    after = await get_list(client, listing["id"])
    if isinstance(outcome, int):
        assert status == outcome, reply
        assert reply["accepted"] == 3
        assert after["codes"]["uploaded"] == 3
    else:
        assert status == 409, reply
        assert error_code(reply) == outcome
        assert after == listing


async def test_an_expired_list_refuses_claims_until_it_is_extended(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    assert (await claim(client, list_id, "u-1"))[0] == 201
    status, patched = await call(client, "PATCH", f"/v1/lists/{list_id}", {"expires_at": PAST})
    assert status == 200, patched
    before = await get_list(client, list_id)

    status, reply = await claim(client, list_id, "u-2")
    assert status == 409
    assert error_code(reply) == "list_expired"
    assert await get_list(client, list_id) == before

    # A repeat of a claim made earlier returns it whatever the status.
    status, repeat = await claim(client, list_id, "u-1")
    assert status == 200, repeat

    status, patched = await call(client, "PATCH", f"/v1/lists/{list_id}", {"expires_at": LATER})
    assert status == 200, patched
    assert patched["status"] == "active"
    status, reply = await claim(client, list_id, "u-2")
    assert status == 201, reply
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == 2
    assert_balanced(listing)


async def test_a_list_turns_expired_when_its_date_passes(client: Client) -> None:
    # Whole seconds, at least one second ahead: the list is active when created.
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(time.time()) + 2))
    list_id = await list_with_codes(client, make_codes(3), expires_at=soon)
    assert (await claim(client, list_id, "u-1"))[0] == 201
    deadline = time.monotonic() + 10
    while (await get_list(client, list_id))["status"] != "expired":
        assert time.monotonic() < deadline, "the list never read expired"
        await asyncio.sleep(0.05)
    status, reply = await claim(client, list_id, "u-2")
    assert status == 409
    assert error_code(reply) == "list_expired"
    assert ids(await lists(client, status="expired")) == {list_id}


async def test_a_paused_list_refuses_new_claims_but_returns_earlier_ones(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    status, first = await claim(client, list_id, "u-1")
    assert status == 201, first
    status, _ = await call(client, "POST", f"/v1/lists/{list_id}/pause")
    assert status == 200

    status, reply = await claim(client, list_id, "u-2")
    assert status == 409
    assert error_code(reply) == "list_paused"
    status, repeat = await claim(client, list_id, "u-1")
    assert status == 200, repeat
    assert repeat["claim"]["code"] == first["claim"]["code"]
    assert repeat["claim"]["id"] == first["claim"]["id"]

    listing = await get_list(client, list_id)
    assert listing["codes"] == {"uploaded": 5, "available": 4, "distributed": 1, "withdrawn": 0}

    status, _ = await call(client, "POST", f"/v1/lists/{list_id}/activate")
    assert status == 200
    status, reply = await claim(client, list_id, "u-2")
    assert status == 201, reply


async def test_an_archived_list_refuses_new_claims_but_returns_earlier_ones(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    status, first = await claim(client, list_id, "u-1")
    assert status == 201, first
    status, _ = await call(client, "POST", f"/v1/lists/{list_id}/archive")
    assert status == 200

    status, reply = await claim(client, list_id, "u-2")
    assert status == 409
    assert error_code(reply) == "list_archived"
    status, repeat = await claim(client, list_id, "u-1")
    assert status == 200, repeat
    assert repeat["claim"]["code"] == first["claim"]["code"]


# -- restarts ----------------------------------------------------------------------------------


async def test_statuses_edits_and_counts_survive_a_restart(restartable: Restart) -> None:
    client = await restartable()
    active = await list_with_codes(client, make_codes(10, "A"), tag="active")
    status, second = await upload(client, active, codes_csv(make_codes(4, "W")))
    assert status == 201, second
    for user in ("u-1", "u-2", "u-3"):
        assert (await claim(client, active, user))[0] == 201
    status, reply = await call(client, "DELETE", f"/v1/lists/{active}/uploads/{second['id']}")
    assert status == 200, reply
    edit = {"name": "Edited", "description": "", "expires_at": LATER, "low_stock_threshold": 3}
    status, reply = await call(client, "PATCH", f"/v1/lists/{active}", edit)
    assert status == 200, reply

    paused = await list_with_codes(client, make_codes(3, "P"), tag="paused")
    assert (await claim(client, paused, "u-1"))[0] == 201
    assert (await call(client, "POST", f"/v1/lists/{paused}/pause"))[0] == 200
    expired = (await list_in(client, "expired", tag="expired"))["id"]
    archived = (await list_in(client, "archived", tag="archived"))["id"]
    revived = (await list_in(client, "expired", tag="revived"))["id"]
    assert (await call(client, "PATCH", f"/v1/lists/{revived}", {"expires_at": LATER}))[0] == 200

    before = await lists(client)
    client = await restartable()
    after = await lists(client)
    # The time to exhaustion is read from the clock; the claim rate is rebuilt from the claims.
    for listing in (*before, *after):
        del listing["estimated_exhaustion_at"]
    assert after == before

    shown = {listing["id"]: listing for listing in after}
    assert shown[active]["codes"] == {
        "uploaded": 14,
        "available": 7,
        "distributed": 3,
        "withdrawn": 4,
    }
    assert {k: shown[active][k] for k in edit} == edit
    assert shown[paused]["status"] == "paused"
    assert shown[expired]["status"] == "expired"
    assert shown[archived]["status"] == "archived"
    assert shown[revived]["status"] == "active"
    for listing in after:
        assert_balanced(listing)

    # And they still behave as their status says.
    status, reply = await claim(client, paused, "u-2")
    assert status == 409
    assert error_code(reply) == "list_paused"
    assert (await claim(client, paused, "u-1"))[0] == 200
    status, reply = await call(client, "POST", f"/v1/lists/{archived}/activate")
    assert status == 409
    assert error_code(reply) == "list_archived"
    assert (await claim(client, active, "u-1"))[0] == 200
    assert (await claim(client, active, "u-4"))[0] == 201


async def test_tags_stay_taken_and_freed_across_a_restart(restartable: Restart) -> None:
    client = await restartable()
    held = await create_list(client, tag="held")
    await list_in(client, "archived", tag="freed")
    client = await restartable()

    status, reply = await call(client, "POST", "/v1/lists", list_body(tag="HELD"))
    assert status == 409
    assert error_code(reply) == "tag_taken"
    freed = await create_list(client, tag="freed")
    assert freed["id"] > held["id"]
    # A new list after a restart takes a fresh id, never one already used.
    assert freed["id"] not in ids([held])
    assert len(ids(await lists(client))) == 3


async def test_a_transition_after_a_restart_is_stored_too(restartable: Restart) -> None:
    client = await restartable()
    list_id = (await create_list(client))["id"]
    client = await restartable()
    assert (await call(client, "POST", f"/v1/lists/{list_id}/pause"))[0] == 200
    client = await restartable()
    assert (await get_list(client, list_id))["status"] == "paused"
    assert (await call(client, "POST", f"/v1/lists/{list_id}/activate"))[0] == 200
    client = await restartable()
    assert (await get_list(client, list_id))["status"] == "active"
