"""Campaigns over HTTP: create, read, edit and their statuses; rewards within their limits, also
under concurrency, across a restart and across `kill -9`; batches, Liquid messages and the
reward event."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from unittest.mock import ANY

import aiohttp
import pytest
from support import (
    FUTURE,
    Caller,
    Client,
    ServerProcess,
    assert_balanced,
    call,
    codes_csv,
    error_code,
    get_list,
    list_body,
    list_with_codes,
    make_codes,
    upload,
)

PAST = "2020-01-01T00:00:00Z"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
CAMPAIGN_FIELDS = {
    "id",
    "name",
    "lists",
    "max_codes_per_user",
    "max_codes_per_campaign",
    "starts_at",
    "ends_at",
    "qualification",
    "message_template",
    "status",
    "rewards",
    "created_at",
    "updated_at",
}
REWARD_FIELDS = {
    "id",
    "code",
    "list_id",
    "campaign_id",
    "user_id",
    "message",
    "rewarded_at",
    "expires_at",
}
EVENT_PROPERTIES = {
    "CT Source",
    "campaignId",
    "eventTimestamp",
    "listDescription",
    "listExpiry",
    "listTag",
    "partner",
    "source",
    "voucherCode",
    "voucherListId",
    "userId",
    "message",
}
CHARGED = {"event": "Charged", "where": [{"property": "amount", "op": "gte", "value": 100}]}

Restart = Callable[[], Awaitable[Client]]


# -- helpers -----------------------------------------------------------------------------------


def rfc3339(epoch: float) -> str:
    """A timestamp with milliseconds, for windows that open or close within a test."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


async def create_campaign(client: Caller, lists: list[int], **fields: Any) -> dict[str, Any]:
    status, created = await call(
        client, "POST", "/v1/campaigns", {"name": "Holi cashback", "lists": lists, **fields}
    )
    assert status == 201, created
    assert isinstance(created, dict)
    return created


async def get_campaign(client: Caller, campaign_id: int) -> dict[str, Any]:
    status, found = await call(client, "GET", f"/v1/campaigns/{campaign_id}")
    assert status == 200, found
    assert isinstance(found, dict)
    return found


async def campaigns(client: Client, **params: str) -> list[dict[str, Any]]:
    status, reply = await call(client, "GET", "/v1/campaigns", **params)
    assert status == 200, reply
    found: list[dict[str, Any]] = reply["campaigns"]
    return found


async def reward(
    client: Caller, campaign_id: int, user_id: str, **fields: Any
) -> tuple[int, dict[str, Any]]:
    status, reply = await call(
        client, "POST", f"/v1/campaigns/{campaign_id}/rewards", {"user_id": user_id, **fields}
    )
    assert isinstance(reply, dict)
    return status, reply


async def rewarded_code(client: Caller, campaign_id: int, user_id: str, **fields: Any) -> str:
    status, reply = await reward(client, campaign_id, user_id, **fields)
    assert status == 201, reply
    code: str = reply["reward"]["code"]
    return code


def refused(reason: str) -> tuple[int, dict[str, Any]]:
    return 200, {"rewarded": False, "reason": reason}


async def reward_batch(client: Client, campaign_id: int, user_ids: list[str]) -> list[Any]:
    status, reply = await call(
        client, "POST", f"/v1/campaigns/{campaign_id}/rewards/batch", {"user_ids": user_ids}
    )
    assert status == 200, reply
    results: list[Any] = reply["results"]
    return results


async def transition(client: Client, campaign_id: int, action: str) -> tuple[int, Any]:
    return await call(client, "POST", f"/v1/campaigns/{campaign_id}/{action}")


async def claim(client: Client, list_id: int, user_id: str) -> tuple[int, Any]:
    return await call(client, "POST", f"/v1/lists/{list_id}/claims", {"user_id": user_id})


async def vouchers(client: Caller, user_id: str) -> list[dict[str, Any]]:
    status, reply = await call(client, "GET", f"/v1/users/{user_id}/vouchers")
    assert status == 200, reply
    found: list[dict[str, Any]] = reply["vouchers"]
    return found


async def events(client: Client, type_: str) -> list[dict[str, Any]]:
    """Every event of one type, read page by page over plain HTTP."""
    found: list[dict[str, Any]] = []
    since = 0
    while True:
        status, page = await call(client, "GET", "/v1/events", since=str(since), limit="100")
        assert status == 200, page
        found.extend(event for event in page["events"] if event["type"] == type_)
        if not page["events"]:
            return found
        since = page["last_seq"]


async def poll_status(client: Client, campaign_id: int, status: str, within: float = 10) -> None:
    """Wait until the clock has moved the campaign into `status`."""
    deadline = time.monotonic() + within
    while (await get_campaign(client, campaign_id))["status"] != status:
        assert time.monotonic() < deadline, f"campaign {campaign_id} never became {status}"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def wide_session(client: Client) -> AsyncIterator[aiohttp.ClientSession]:
    """A session with no cap on connections, so every request of a gather is on the wire at
    once (the test client's session allows 100)."""
    async with aiohttp.ClientSession(
        base_url=f"http://{client.host}:{client.port}",
        connector=aiohttp.TCPConnector(limit=0),
    ) as session:
        yield session


# -- create, read, list ------------------------------------------------------------------------


async def test_a_created_campaign_has_every_field_and_the_defaults(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(3))

    created = await create_campaign(client, [list_id])

    assert set(created) == CAMPAIGN_FIELDS
    assert isinstance(created["id"], int)
    assert created["name"] == "Holi cashback"
    assert created["lists"] == [list_id]
    assert created["max_codes_per_user"] == 1
    assert created["max_codes_per_campaign"] is None
    assert created["starts_at"] is None
    assert created["ends_at"] is None
    assert created["qualification"] is None
    assert created["message_template"] is None
    assert created["status"] == "running"
    assert created["rewards"] == {"issued": 0}
    assert TIME.match(created["created_at"])
    assert created["updated_at"] == created["created_at"]
    assert await get_campaign(client, created["id"]) == created


async def test_a_campaign_keeps_every_field_it_is_given(client: Client) -> None:
    first = await list_with_codes(client, make_codes(3, "A"), tag="first")
    second = await list_with_codes(client, make_codes(3, "B"), tag="second")
    template = "Hi {{ Profile.user_id }}, your code is {{ Event.voucherCode }}"
    qualification = {
        "event": "Charged",
        "where": [
            {"property": "amount", "op": "gte", "value": 100},
            {"property": "coupon", "op": "exists"},
            {"property": "city", "op": "in", "value": ["Pune", "Goa"]},
        ],
    }

    created = await create_campaign(
        client,
        [second, first],
        max_codes_per_user=3,
        max_codes_per_campaign=5000,
        starts_at="2029-01-01T00:00:00Z",
        ends_at="2029-06-30T12:00:00+02:00",
        qualification=qualification,
        message_template=template,
    )

    assert created["lists"] == [second, first]
    assert created["max_codes_per_user"] == 3
    assert created["max_codes_per_campaign"] == 5000
    assert created["starts_at"] == "2029-01-01T00:00:00Z"
    assert created["ends_at"] == "2029-06-30T10:00:00Z"
    assert created["qualification"] == qualification
    assert created["message_template"] == template
    assert created["status"] == "scheduled"
    assert await get_campaign(client, created["id"]) == created


async def test_each_campaign_gets_its_own_id_and_all_are_listed(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    first = await create_campaign(client, [list_id], name="one")
    second = await create_campaign(client, [list_id], name="two")

    assert first["id"] != second["id"]
    assert await campaigns(client) == [first, second]


async def test_campaigns_can_be_filtered_by_status(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    running = await create_campaign(client, [list_id])
    paused = await create_campaign(client, [list_id])
    ended = await create_campaign(client, [list_id])
    scheduled = await create_campaign(client, [list_id], starts_at=FUTURE)
    assert (await transition(client, paused["id"], "pause"))[0] == 200
    assert (await transition(client, ended["id"], "end"))[0] == 200

    for name, expected in (
        ("running", running),
        ("paused", paused),
        ("ended", ended),
        ("scheduled", scheduled),
    ):
        found = await campaigns(client, status=name)
        assert [campaign["id"] for campaign in found] == [expected["id"]], name
        assert found[0]["status"] == name
    assert len(await campaigns(client)) == 4
    code, reply = await call(client, "GET", "/v1/campaigns", status="archived")
    assert (code, error_code(reply)) == (400, "invalid_request")


async def test_an_unknown_campaign_is_404(client: Client) -> None:
    for path in ("/v1/campaigns/999", "/v1/campaigns/abc"):
        status, reply = await call(client, "GET", path)
        assert (status, error_code(reply)) == (404, "not_found")
    for method, path, body in (
        ("PATCH", "/v1/campaigns/999", {"name": "x"}),
        ("POST", "/v1/campaigns/999/pause", None),
        ("POST", "/v1/campaigns/999/rewards", {"user_id": "u-1"}),
        ("POST", "/v1/campaigns/999/rewards/batch", {"user_ids": ["u-1"]}),
    ):
        status, reply = await call(client, method, path, body)
        assert (status, error_code(reply)) == (404, "not_found"), path


# -- bad input ---------------------------------------------------------------------------------

# Stand-ins the test replaces: a field left out, and the test's own list named twice.
ABSENT = "<absent>"
THE_LIST_TWICE = "<the list twice>"
BAD_CAMPAIGNS: list[tuple[str, dict[str, Any]]] = [
    ("no name", {"name": ABSENT}),
    ("null name", {"name": None}),
    ("empty name", {"name": ""}),
    ("name not a string", {"name": 7}),
    ("no lists", {"lists": ABSENT}),
    ("null lists", {"lists": None}),
    ("empty lists", {"lists": []}),
    ("lists not a list", {"lists": 1}),
    ("duplicate list ids", {"lists": THE_LIST_TWICE}),
    ("string list id", {"lists": ["1"]}),
    ("fractional list id", {"lists": [1.5]}),
    ("boolean list id", {"lists": [True]}),
    ("zero per user", {"max_codes_per_user": 0}),
    ("negative per user", {"max_codes_per_user": -1}),
    ("fractional per user", {"max_codes_per_user": 1.5}),
    ("string per user", {"max_codes_per_user": "3"}),
    ("boolean per user", {"max_codes_per_user": True}),
    ("zero per campaign", {"max_codes_per_campaign": 0}),
    ("string per campaign", {"max_codes_per_campaign": "many"}),
    ("bad starts_at", {"starts_at": "tomorrow"}),
    ("ends_at without zone", {"ends_at": "2030-01-01T00:00:00"}),
    ("ends_at before starts_at", {"starts_at": FUTURE, "ends_at": "2029-12-31T00:00:00Z"}),
    ("ends_at equal to starts_at", {"starts_at": FUTURE, "ends_at": FUTURE}),
    ("qualification not an object", {"qualification": "Charged"}),
    ("qualification without event", {"qualification": {"where": []}}),
    ("qualification empty event", {"qualification": {"event": ""}}),
    ("where not a list", {"qualification": {"event": "Charged", "where": {}}}),
    (
        "unknown op",
        {"qualification": {"event": "E", "where": [{"property": "a", "op": "like", "value": 1}]}},
    ),
    ("condition without op", {"qualification": {"event": "E", "where": [{"property": "a"}]}}),
    (
        "condition without property",
        {"qualification": {"event": "E", "where": [{"op": "eq", "value": 1}]}},
    ),
    (
        "eq without value",
        {"qualification": {"event": "E", "where": [{"property": "a", "op": "eq"}]}},
    ),
    (
        "in without a list",
        {"qualification": {"event": "E", "where": [{"property": "a", "op": "in", "value": 1}]}},
    ),
    (
        "gt with a boolean",
        {"qualification": {"event": "E", "where": [{"property": "a", "op": "gt", "value": True}]}},
    ),
    (
        "gte with a list",
        {"qualification": {"event": "E", "where": [{"property": "a", "op": "gte", "value": [1]}]}},
    ),
    (
        "exists with a string",
        {
            "qualification": {
                "event": "E",
                "where": [{"property": "a", "op": "exists", "value": "yes"}],
            }
        },
    ),
    ("condition not an object", {"qualification": {"event": "E", "where": ["a > 1"]}}),
    ("template not a string", {"message_template": 42}),
    ("unknown field", {"partner": "Puma"}),
    ("misspelt field", {"max_codes_per_users": 2}),
]


@pytest.mark.parametrize(("case", "change"), BAD_CAMPAIGNS, ids=[case for case, _ in BAD_CAMPAIGNS])
async def test_a_bad_campaign_is_400_and_creates_nothing(
    client: Client, case: str, change: dict[str, Any]
) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    body: dict[str, Any] = {"name": "Holi cashback", "lists": [list_id], **change}
    if body["lists"] == THE_LIST_TWICE:
        body["lists"] = [list_id, list_id]
    body = {name: value for name, value in body.items() if value != ABSENT}

    status, reply = await call(client, "POST", "/v1/campaigns", body)

    assert (status, error_code(reply)) == (400, "invalid_request"), case
    assert await campaigns(client) == []
    assert (await get_list(client, list_id))["campaigns"] == []


@pytest.mark.parametrize("body", [[], "campaign", None], ids=["array", "string", "no body"])
async def test_a_body_that_is_not_an_object_is_400(client: Client, body: Any) -> None:
    status, reply = await call(client, "POST", "/v1/campaigns", body)
    assert (status, error_code(reply)) == (400, "invalid_request")
    assert await campaigns(client) == []


async def test_a_campaign_on_an_unknown_list_is_404_and_creates_nothing(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(3))

    status, reply = await call(
        client, "POST", "/v1/campaigns", {"name": "c", "lists": [list_id, 999]}
    )

    assert (status, error_code(reply)) == (404, "not_found")
    assert await campaigns(client) == []
    assert (await get_list(client, list_id))["campaigns"] == []


@pytest.mark.parametrize("list_status", ["paused", "expired", "archived"])
async def test_only_active_lists_can_be_mapped(client: Client, list_status: str) -> None:
    active = await list_with_codes(client, make_codes(3, "A"), tag="active")
    other = await list_with_codes(client, make_codes(3, "B"), tag="other")
    if list_status == "expired":
        status, reply = await call(client, "PATCH", f"/v1/lists/{other}", {"expires_at": PAST})
    else:
        action = "pause" if list_status == "paused" else "archive"
        status, reply = await call(client, "POST", f"/v1/lists/{other}/{action}")
    assert status == 200, reply
    assert (await get_list(client, other))["status"] == list_status

    status, reply = await call(
        client, "POST", "/v1/campaigns", {"name": "c", "lists": [active, other]}
    )

    assert (status, error_code(reply)) == (409, "list_not_active")
    assert str(other) in reply["error"]["message"]
    assert await campaigns(client) == []
    assert (await get_list(client, active))["campaigns"] == []


@pytest.mark.parametrize(
    "template",
    [
        "Hi {{ Profile.user_id ",
        "{% if Event.voucherCode %}no end",
        "{% nosuchtag %}",
        "{{ Event.voucherCode | nosuchfilter }}",
        '{% if Trigger.name == "Charged" %}{{ Event.voucherCode | nosuchfilter }}{% endif %}',
        '{{ "/w==" | base64_decode }}',
        '{{ "1e400" | floor }}',
        '{% assign s = "xxxxxxxxxxxxxxxx" %}{% for i in (1..27) %}'
        "{% assign s = s | append: s %}{% endfor %}{{ s | size }}",
    ],
    ids=[
        "unclosed output",
        "unclosed block",
        "unknown tag",
        "unknown filter",
        "unknown filter in a branch",
        "a filter raising a Python error",
        "a number too large",
        "a string doubled in a loop",
    ],
)
async def test_a_template_that_is_not_valid_liquid_is_refused(
    client: Client, template: str
) -> None:
    list_id = await list_with_codes(client, make_codes(3))

    status, reply = await call(
        client,
        "POST",
        "/v1/campaigns",
        {"name": "c", "lists": [list_id], "message_template": template},
    )

    assert (status, error_code(reply)) == (400, "invalid_template")
    assert await campaigns(client) == []


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_values_nested_past_what_can_be_stored_are_refused_and_change_nothing(
    client: Client,
) -> None:
    # Deeper than orjson writes (254 levels), shallower than it reads (1024).
    deep = nested(300)
    list_id = await list_with_codes(client, make_codes(3))
    condition = {"event": "Charged", "where": [{"property": "a", "op": "eq", "value": deep}]}
    status, reply = await call(
        client,
        "POST",
        "/v1/campaigns",
        {"name": "c", "lists": [list_id], "qualification": condition},
    )
    assert (status, error_code(reply)) == (400, "invalid_request"), reply
    assert await campaigns(client) == []

    campaign_id = (await create_campaign(client, [list_id]))["id"]
    status, reply = await call(
        client, "PATCH", f"/v1/campaigns/{campaign_id}", {"qualification": condition}
    )
    assert (status, error_code(reply)) == (400, "invalid_request"), reply
    assert (await get_campaign(client, campaign_id))["qualification"] is None

    event = {"name": "Charged", "properties": deep}
    status, reply = await call(
        client, "POST", f"/v1/campaigns/{campaign_id}/rewards", {"user_id": "u-1", "event": event}
    )
    assert (status, error_code(reply)) == (400, "invalid_request"), reply
    assert (await get_list(client, list_id))["codes"]["distributed"] == 0


# -- lists know their campaigns ----------------------------------------------------------------


async def test_a_list_shows_the_campaigns_mapping_it_also_after_edits_and_a_restart(
    restartable: Restart,
) -> None:
    client = await restartable()
    first = await list_with_codes(client, make_codes(3, "A"), tag="first")
    second = await list_with_codes(client, make_codes(3, "B"), tag="second")
    third = await list_with_codes(client, make_codes(3, "C"), tag="third")
    one = (await create_campaign(client, [first, second]))["id"]
    two = (await create_campaign(client, [second]))["id"]

    assert (await get_list(client, first))["campaigns"] == [one]
    assert (await get_list(client, second))["campaigns"] == [one, two]
    assert (await get_list(client, third))["campaigns"] == []

    status, patched = await call(client, "PATCH", f"/v1/campaigns/{one}", {"lists": [third, first]})
    assert status == 200, patched
    assert patched["lists"] == [third, first]

    expected = {first: [one], second: [two], third: [one]}
    for list_id, ids in expected.items():
        assert (await get_list(client, list_id))["campaigns"] == ids
    # Status changes of a list keep its campaigns.
    assert (await call(client, "POST", f"/v1/lists/{third}/pause"))[0] == 200
    assert (await get_list(client, third))["campaigns"] == [one]

    client = await restartable()

    for list_id, ids in expected.items():
        assert sorted((await get_list(client, list_id))["campaigns"]) == ids
    status, found = await call(client, "GET", "/v1/lists")
    assert {listing["id"]: listing["campaigns"] for listing in found["lists"]} == expected


async def test_campaigns_come_back_the_same_after_a_restart(restartable: Restart) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(5))
    qualification = {
        "event": "Charged",
        "where": [
            {"property": "coupon", "op": "exists"},
            {"property": "gift", "op": "exists", "value": False},
            {"property": "note", "op": "eq", "value": None},
            {"property": "amount", "op": "gt", "value": 99.5},
        ],
    }
    paused = await create_campaign(
        client,
        [list_id],
        max_codes_per_user=2,
        max_codes_per_campaign=3,
        qualification=qualification,
        message_template="{{ Event.voucherCode | downcase }}",
    )
    await create_campaign(client, [list_id], starts_at=FUTURE, ends_at="2031-01-01T00:00:00Z")
    ended = await create_campaign(client, [list_id])
    assert (await transition(client, paused["id"], "pause"))[0] == 200
    assert (await transition(client, ended["id"], "end"))[0] == 200
    before = await campaigns(client)
    assert [c["status"] for c in before] == ["paused", "scheduled", "ended"]

    client = await restartable()

    assert await campaigns(client) == before
    assert (await transition(client, paused["id"], "resume"))[0] == 200
    event = {"name": "Charged", "properties": {"coupon": "X", "note": None, "amount": 100}}
    status, reply = await reward(client, paused["id"], "u-1", event=event)
    assert status == 201, reply
    assert reply["reward"]["message"] == reply["reward"]["code"].lower()
    # New campaigns do not reuse an id.
    assert (await create_campaign(client, [list_id]))["id"] > ended["id"]


# -- edit --------------------------------------------------------------------------------------


async def test_patch_changes_only_the_fields_it_names(client: Client) -> None:
    first = await list_with_codes(client, make_codes(3, "A"), tag="first")
    second = await list_with_codes(client, make_codes(3, "B"), tag="second")
    created = await create_campaign(client, [first], max_codes_per_campaign=10)

    edit = {
        "name": "Renamed",
        "lists": [second, first],
        "max_codes_per_user": 4,
        "max_codes_per_campaign": None,
        "qualification": CHARGED,
        "message_template": "{{ Event.voucherCode }}",
        "ends_at": "2031-01-01T00:00:00Z",
    }
    status, patched = await call(client, "PATCH", f"/v1/campaigns/{created['id']}", edit)

    assert status == 200, patched
    assert {name: patched[name] for name in edit} == edit
    assert patched["created_at"] == created["created_at"]
    assert TIME.match(patched["updated_at"])
    assert patched["updated_at"] >= created["updated_at"]
    assert patched["starts_at"] is None
    assert patched["status"] == "running"
    assert await get_campaign(client, created["id"]) == patched

    status, again = await call(client, "PATCH", f"/v1/campaigns/{created['id']}", {"name": "N"})
    assert status == 200
    assert {**patched, "name": "N", "updated_at": again["updated_at"]} == again


async def test_patch_refuses_bad_input_and_changes_nothing(client: Client) -> None:
    active = await list_with_codes(client, make_codes(3, "A"), tag="active")
    paused = await list_with_codes(client, make_codes(3, "B"), tag="paused")
    assert (await call(client, "POST", f"/v1/lists/{paused}/pause"))[0] == 200
    created = await create_campaign(client, [active], starts_at="2029-01-01T00:00:00Z")
    path = f"/v1/campaigns/{created['id']}"

    for body, expected in (
        ({}, (400, "invalid_request")),
        ({"name": None}, (400, "invalid_request")),
        ({"lists": []}, (400, "invalid_request")),
        ({"lists": [active, active]}, (400, "invalid_request")),
        ({"max_codes_per_user": 0}, (400, "invalid_request")),
        ({"max_codes_per_user": None}, (400, "invalid_request")),
        ({"ends_at": "2028-01-01T00:00:00Z"}, (400, "invalid_request")),
        (
            {"qualification": {"event": "E", "where": [{"property": "a", "op": "?"}]}},
            (400, "invalid_request"),
        ),
        ({"status": "paused"}, (400, "invalid_request")),
        ({"id": 5}, (400, "invalid_request")),
        ({"message_template": "{{ oops"}, (400, "invalid_template")),
        ({"message_template": "{{ 'x' | nosuchfilter }}"}, (400, "invalid_template")),
        ({"lists": [active, 999]}, (404, "not_found")),
        ({"lists": [active, paused]}, (409, "list_not_active")),
    ):
        status, reply = await call(client, "PATCH", path, body)
        assert (status, error_code(reply)) == expected, body
    assert await get_campaign(client, created["id"]) == created
    assert (await get_list(client, paused))["campaigns"] == []


async def test_a_mapped_list_that_is_paused_later_may_stay_mapped(client: Client) -> None:
    first = await list_with_codes(client, make_codes(3, "A"), tag="first")
    second = await list_with_codes(client, make_codes(3, "B"), tag="second")
    created = await create_campaign(client, [first])
    assert (await call(client, "POST", f"/v1/lists/{first}/pause"))[0] == 200

    status, patched = await call(
        client, "PATCH", f"/v1/campaigns/{created['id']}", {"lists": [first, second]}
    )

    assert status == 200, patched
    assert patched["lists"] == [first, second]


async def test_moving_starts_at_into_the_future_schedules_a_running_campaign(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    created = await create_campaign(client, [list_id])

    status, patched = await call(
        client, "PATCH", f"/v1/campaigns/{created['id']}", {"starts_at": FUTURE}
    )

    assert status == 200, patched
    assert patched["status"] == "scheduled"
    assert await reward(client, created["id"], "u-1") == refused("campaign_not_running")


async def test_an_ended_campaign_cannot_be_edited(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    created = await create_campaign(client, [list_id])
    status, ended = await transition(client, created["id"], "end")
    assert status == 200

    status, reply = await call(client, "PATCH", f"/v1/campaigns/{created['id']}", {"name": "N"})

    assert (status, error_code(reply)) == (409, "conflict")
    assert await get_campaign(client, created["id"]) == ended


# -- statuses ----------------------------------------------------------------------------------


async def test_pause_resume_and_end_move_the_campaign_and_each_makes_an_event(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    campaign_id = (await create_campaign(client, [list_id]))["id"]

    status, paused = await transition(client, campaign_id, "pause")
    assert (status, paused["status"]) == (200, "paused")
    assert await reward(client, campaign_id, "u-1") == refused("campaign_not_running")

    status, resumed = await transition(client, campaign_id, "resume")
    assert (status, resumed["status"]) == (200, "running")
    assert (await reward(client, campaign_id, "u-1"))[0] == 201

    status, ended = await transition(client, campaign_id, "end")
    assert (status, ended["status"]) == (200, "ended")
    assert ended["rewards"] == {"issued": 1}
    assert await reward(client, campaign_id, "u-2") == refused("campaign_not_running")
    assert await get_campaign(client, campaign_id) == ended

    changes = await events(client, "campaign.status_changed")
    assert [event["data"] for event in changes] == [
        {"campaign_id": campaign_id, "previous_status": "running", "status": "paused"},
        {"campaign_id": campaign_id, "previous_status": "paused", "status": "running"},
        {"campaign_id": campaign_id, "previous_status": "running", "status": "ended"},
    ]
    assert all(event["name"] == "campaign.status_changed" for event in changes)


@pytest.mark.parametrize(
    ("setup", "action", "current"),
    [
        ([], "resume", "running"),
        (["pause"], "pause", "paused"),
        (["end"], "end", "ended"),
        (["end"], "pause", "ended"),
        (["end"], "resume", "ended"),
        (["pause", "end"], "resume", "ended"),
    ],
)
async def test_a_transition_the_status_does_not_allow_is_409(
    client: Client, setup: list[str], action: str, current: str
) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    campaign_id = (await create_campaign(client, [list_id]))["id"]
    for step in setup:
        assert (await transition(client, campaign_id, step))[0] == 200
    before = await get_campaign(client, campaign_id)

    status, reply = await transition(client, campaign_id, action)

    assert (status, error_code(reply)) == (409, "conflict")
    assert current in reply["error"]["message"]
    assert await get_campaign(client, campaign_id) == before


async def test_a_scheduled_campaign_can_be_paused_and_resumed_back_to_scheduled(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    campaign_id = (await create_campaign(client, [list_id], starts_at=FUTURE))["id"]

    status, paused = await transition(client, campaign_id, "pause")
    assert (status, paused["status"]) == (200, "paused")
    status, resumed = await transition(client, campaign_id, "resume")
    assert (status, resumed["status"]) == (200, "scheduled")
    status, ended = await transition(client, campaign_id, "end")
    assert (status, ended["status"]) == (200, "ended")

    changes = await events(client, "campaign.status_changed")
    assert [(e["data"]["previous_status"], e["data"]["status"]) for e in changes] == [
        ("scheduled", "paused"),
        ("paused", "scheduled"),
        ("scheduled", "ended"),
    ]


async def test_a_campaign_is_scheduled_before_starts_at_and_ended_after_ends_at(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    now = time.time()
    created = await create_campaign(
        client, [list_id], starts_at=rfc3339(now + 1), ends_at=rfc3339(now + 2)
    )
    campaign_id = created["id"]
    assert created["status"] == "scheduled"
    assert await reward(client, campaign_id, "early") == refused("campaign_not_running")

    await poll_status(client, campaign_id, "running")
    assert (await reward(client, campaign_id, "in-time"))[0] == 201

    await poll_status(client, campaign_id, "ended")
    assert await reward(client, campaign_id, "late") == refused("campaign_not_running")
    # A reward given in time is still returned to its repeat.
    assert (await reward(client, campaign_id, "in-time"))[0] == 200
    status, reply = await call(client, "PATCH", f"/v1/campaigns/{campaign_id}", {"name": "N"})
    assert (status, error_code(reply)) == (409, "conflict")
    status, reply = await transition(client, campaign_id, "resume")
    assert (status, error_code(reply)) == (409, "conflict")


async def test_a_campaign_whose_ends_at_is_moved_into_the_past_has_ended(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    campaign_id = (await create_campaign(client, [list_id]))["id"]

    status, patched = await call(client, "PATCH", f"/v1/campaigns/{campaign_id}", {"ends_at": PAST})

    assert (status, patched["status"]) == (200, "ended")
    assert await reward(client, campaign_id, "u-1") == refused("campaign_not_running")
    assert [c["id"] for c in await campaigns(client, status="ended")] == [campaign_id]


# -- rewards -----------------------------------------------------------------------------------


async def test_a_reward_gets_201_with_a_code_from_the_campaigns_list(client: Client) -> None:
    codes = make_codes(3)
    list_id = await list_with_codes(client, codes)
    campaign_id = (await create_campaign(client, [list_id]))["id"]

    status, reply = await reward(client, campaign_id, "u-42")

    assert status == 201, reply
    assert set(reply) == {"rewarded", "reward"}
    assert reply["rewarded"] is True
    given = reply["reward"]
    assert set(given) == REWARD_FIELDS
    assert isinstance(given["id"], int)
    assert given["code"] in codes
    assert given["list_id"] == list_id
    assert given["campaign_id"] == campaign_id
    assert given["user_id"] == "u-42"
    assert given["message"] is None
    assert TIME.match(given["rewarded_at"])
    assert given["expires_at"] == FUTURE
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 1}
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == 1
    assert_balanced(listing)


async def test_a_repeated_reward_returns_the_same_reward_with_200_also_after_a_restart(
    restartable: Restart,
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(10))
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_user=3))["id"]
    status, plain = await reward(client, campaign_id, "u-42")
    assert status == 201
    status, keyed = await reward(client, campaign_id, "u-42", idempotency_key="order-1")
    assert status == 201

    assert await reward(client, campaign_id, "u-42") == (200, plain)
    assert await reward(client, campaign_id, "u-42", idempotency_key="order-1") == (200, keyed)
    assert await reward(client, campaign_id, "u-42", idempotency_key="") == (200, plain)

    client = await restartable()

    assert await reward(client, campaign_id, "u-42") == (200, plain)
    assert await reward(client, campaign_id, "u-42", idempotency_key="order-1") == (200, keyed)
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 2}
    assert (await get_list(client, list_id))["codes"]["distributed"] == 2


async def test_distinct_keys_earn_rewards_up_to_the_users_limit(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_user=3))["id"]

    codes = [
        await rewarded_code(client, campaign_id, "u-42", idempotency_key=f"order-{n}")
        for n in range(3)
    ]
    over = await reward(client, campaign_id, "u-42", idempotency_key="order-3")
    keyless = await reward(client, campaign_id, "u-42")

    assert len(set(codes)) == 3
    assert over == refused("user_limit_reached")
    assert keyless == refused("user_limit_reached")
    # Other users have limits of their own.
    assert (await reward(client, campaign_id, "u-43"))[0] == 201
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 4}


async def test_without_keys_a_user_is_rewarded_once_per_campaign(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_user=5))["id"]
    other_id = (await create_campaign(client, [list_id], name="other"))["id"]

    answers = [await reward(client, campaign_id, "u-42") for _ in range(3)]
    other = await reward(client, other_id, "u-42")

    assert [status for status, _ in answers] == [201, 200, 200]
    assert len({reply["reward"]["code"] for _, reply in answers}) == 1
    assert other[0] == 201
    assert other[1]["reward"]["code"] != answers[0][1]["reward"]["code"]
    assert other[1]["reward"]["campaign_id"] == other_id


async def test_the_campaign_limit_stops_rewards(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_campaign=2))["id"]

    answers = [await reward(client, campaign_id, f"u-{n}") for n in range(4)]

    assert [status for status, _ in answers[:2]] == [201, 201]
    assert answers[2:] == [refused("campaign_limit_reached")] * 2
    # A repeat of a reward given is not a new reward.
    assert (await reward(client, campaign_id, "u-0"))[0] == 200
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 2}
    assert (await get_list(client, list_id))["codes"]["distributed"] == 2


async def test_raising_the_campaign_limit_lets_rewards_through_again(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_campaign=1))["id"]
    assert (await reward(client, campaign_id, "u-1"))[0] == 201
    assert await reward(client, campaign_id, "u-2") == refused("campaign_limit_reached")

    status, _ = await call(
        client, "PATCH", f"/v1/campaigns/{campaign_id}", {"max_codes_per_campaign": 2}
    )
    assert status == 200

    assert (await reward(client, campaign_id, "u-2"))[0] == 201
    assert await reward(client, campaign_id, "u-3") == refused("campaign_limit_reached")


async def test_a_user_who_did_not_qualify_may_qualify_later_with_the_same_key(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    campaign_id = (await create_campaign(client, [list_id], qualification=CHARGED))["id"]
    small = {"name": "Charged", "properties": {"amount": 50}}
    big = {"name": "Charged", "properties": {"amount": 150}}

    assert await reward(client, campaign_id, "u-1", event=small, idempotency_key="e-1") == refused(
        "not_qualified"
    )
    status, reply = await reward(client, campaign_id, "u-1", event=big, idempotency_key="e-1")

    assert status == 201, reply
    # Once rewarded, the answer is remembered whatever the event says now.
    again = await reward(client, campaign_id, "u-1", event=small, idempotency_key="e-1")
    assert again == (200, reply)


async def test_the_wrong_event_or_none_does_not_qualify(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    campaign_id = (await create_campaign(client, [list_id], qualification=CHARGED))["id"]

    for fields in (
        {},
        {"event": {"name": "Viewed", "properties": {"amount": 500}}},
        {"event": {"name": "charged", "properties": {"amount": 500}}},
        {"event": {"name": "Charged", "properties": {}}},
        {"event": {"name": "Charged"}},
        {"event": {"name": "Charged", "properties": {"amount": 99.99}}},
    ):
        assert await reward(client, campaign_id, "u-1", **fields) == refused("not_qualified")
    status, _ = await reward(
        client, campaign_id, "u-1", event={"name": "Charged", "properties": {"amount": 100}}
    )
    assert status == 201
    assert (await get_list(client, list_id))["codes"]["distributed"] == 1


async def test_any_event_name_a_reward_may_carry_can_qualify(client: Client) -> None:
    # Not control characters, though not printable either: a zero-width space, private use.
    name = "Char\u200bged\ue000"
    qualification = {"event": name, "where": [{"property": "k\u200b", "op": "exists"}]}
    list_id = await list_with_codes(client, make_codes(5))
    campaign_id = (await create_campaign(client, [list_id], qualification=qualification))["id"]
    event = {"name": name, "properties": {"k\u200b": 1}}
    assert (await reward(client, campaign_id, "u-1", event=event))[0] == 201
    status, reply = await call(
        client, "POST", "/v1/campaigns",
        {"name": "c", "lists": [list_id], "qualification": {"event": "Char\x07ged"}},
    )  # fmt: skip
    assert (status, error_code(reply)) == (400, "invalid_request"), reply


async def test_a_campaign_without_qualification_rewards_any_event_or_none(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    campaign_id = (await create_campaign(client, [list_id]))["id"]

    assert (await reward(client, campaign_id, "u-1"))[0] == 201
    assert (await reward(client, campaign_id, "u-2", event={"name": "Anything"}))[0] == 201


async def test_every_condition_must_hold(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    qualification = {
        "event": "Charged",
        "where": [
            {"property": "amount", "op": "gte", "value": 100},
            {"property": "city", "op": "eq", "value": "Pune"},
        ],
    }
    campaign_id = (await create_campaign(client, [list_id], qualification=qualification))["id"]

    def charged(**properties: Any) -> dict[str, Any]:
        return {"event": {"name": "Charged", "properties": properties}}

    assert await reward(client, campaign_id, "u", **charged(amount=100)) == refused("not_qualified")
    assert await reward(client, campaign_id, "u", **charged(city="Pune")) == refused(
        "not_qualified"
    )
    assert await reward(client, campaign_id, "u", **charged(amount=99, city="Pune")) == refused(
        "not_qualified"
    )
    assert (await reward(client, campaign_id, "u", **charged(amount=100, city="Pune")))[0] == 201


# Each operator with the values that pass and the values that fail it; "missing" is an event
# without the property.
MISSING = object()
OPERATOR_CASES: list[tuple[str, Any, list[Any], list[Any]]] = [
    ("eq", 100, [100, 100.0], [99, "100", True, None, MISSING]),
    ("eq", "gold", ["gold"], ["Gold", "gold ", 1, MISSING]),
    ("eq", True, [True], [1, "true", False, MISSING]),
    ("ne", "gold", ["silver", 7, None], ["gold"]),
    ("gt", 100, [100.5, 101], [100, 99, "101", True, None, MISSING]),
    ("gte", 100, [100, 250], [99.99, "100", MISSING]),
    ("lt", 10, [9, -1, 9.99], [10, 11, "9", False, MISSING]),
    ("lte", 10, [10, 0], [10.01, "10", MISSING]),
    ("gt", "m", ["n", "zebra"], ["m", "a", 5, MISSING]),
    ("in", ["Pune", "Goa", 7], ["Pune", "Goa", 7], ["pune", "Delhi", "7", MISSING]),
    ("contains", "vip", ["a vip user", "vip"], ["VIP", "v", 1, MISSING]),
    ("contains", "vip", [["app", "vip"]], [["app"], ["VIP"], MISSING]),
    ("exists", None, [0, "", None, False], [MISSING]),
    ("exists", True, [1, None], [MISSING]),
    ("exists", False, [MISSING], [1, None]),
]


@pytest.mark.parametrize(
    ("op", "value", "passing", "failing"),
    OPERATOR_CASES,
    ids=[f"{op}-{value!r}" for op, value, _, _ in OPERATOR_CASES],
)
async def test_each_operator_decides_who_qualifies(
    client: Client, op: str, value: Any, passing: list[Any], failing: list[Any]
) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    condition: dict[str, Any] = {"property": "p", "op": op}
    if value is not None:
        condition["value"] = value
    qualification = {"event": "Charged", "where": [condition]}
    campaign_id = (await create_campaign(client, [list_id], qualification=qualification))["id"]

    def charged(actual: Any) -> dict[str, Any]:
        return {"name": "Charged", "properties": {} if actual is MISSING else {"p": actual}}

    for n, actual in enumerate(failing):
        answer = await reward(client, campaign_id, f"fail-{n}", event=charged(actual))
        assert answer == refused("not_qualified"), actual
    for n, actual in enumerate(passing):
        status, reply = await reward(client, campaign_id, f"pass-{n}", event=charged(actual))
        assert status == 201, (actual, reply)
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": len(passing)}


async def test_every_list_empty_is_out_of_codes(client: Client) -> None:
    first = await list_with_codes(client, make_codes(1, "A"), tag="first")
    second = await list_with_codes(client, make_codes(1, "B"), tag="second")
    campaign_id = (await create_campaign(client, [first, second]))["id"]
    assert (await reward(client, campaign_id, "u-1"))[0] == 201
    assert (await reward(client, campaign_id, "u-2"))[0] == 201

    assert await reward(client, campaign_id, "u-3") == refused("out_of_codes")
    # A refusal is not remembered and takes nothing from the limits.
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 2}
    status, _ = await upload(client, second, "TOPUP-1\n")
    assert status == 201
    status, reply = await reward(client, campaign_id, "u-3")
    assert (status, reply["reward"]["code"]) == (201, "TOPUP-1")


async def test_an_exhausted_first_list_falls_back_to_the_next(client: Client) -> None:
    first_codes, second_codes = make_codes(2, "A"), make_codes(3, "B")
    first = await list_with_codes(client, first_codes, tag="first")
    second = await list_with_codes(client, second_codes, tag="second")
    campaign_id = (await create_campaign(client, [first, second]))["id"]

    given = [await reward(client, campaign_id, f"u-{n}") for n in range(6)]

    rewards = [reply["reward"] for status, reply in given if status == 201]
    assert [r["list_id"] for r in rewards] == [first, first, second, second, second]
    assert sorted(r["code"] for r in rewards[:2]) == first_codes
    assert sorted(r["code"] for r in rewards[2:]) == second_codes
    assert all(r["expires_at"] == FUTURE for r in rewards)
    assert given[5] == refused("out_of_codes")
    for list_id in (first, second):
        listing = await get_list(client, list_id)
        assert listing["codes"]["available"] == 0
        assert_balanced(listing)


@pytest.mark.parametrize("first_status", ["paused", "expired", "archived"])
async def test_a_list_that_is_not_active_passes_rewards_to_the_next(
    client: Client, first_status: str
) -> None:
    first = await list_with_codes(client, make_codes(3, "A"), tag="first")
    second = await list_with_codes(
        client, make_codes(3, "B"), tag="second", expires_at="2031-06-30T12:00:00Z"
    )
    campaign_id = (await create_campaign(client, [first, second]))["id"]
    if first_status == "expired":
        status, reply = await call(client, "PATCH", f"/v1/lists/{first}", {"expires_at": PAST})
    else:
        action = "pause" if first_status == "paused" else "archive"
        status, reply = await call(client, "POST", f"/v1/lists/{first}/{action}")
    assert status == 200, reply

    status, reply = await reward(client, campaign_id, "u-1")

    assert status == 201, reply
    assert reply["reward"]["list_id"] == second
    assert reply["reward"]["code"].startswith("B")
    assert reply["reward"]["expires_at"] == "2031-06-30T12:00:00Z"
    assert (await get_list(client, first))["codes"]["distributed"] == 0


async def test_a_paused_list_is_used_again_once_activated(client: Client) -> None:
    first = await list_with_codes(client, make_codes(3, "A"), tag="first")
    second = await list_with_codes(client, make_codes(3, "B"), tag="second")
    campaign_id = (await create_campaign(client, [first, second]))["id"]
    assert (await call(client, "POST", f"/v1/lists/{first}/pause"))[0] == 200
    assert (await rewarded_code(client, campaign_id, "u-1")).startswith("B")

    assert (await call(client, "POST", f"/v1/lists/{first}/activate"))[0] == 200

    assert (await rewarded_code(client, campaign_id, "u-2")).startswith("A")


async def test_rewards_show_in_the_users_voucher_tray_with_their_campaign(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_user=2))["id"]
    status, first = await reward(client, campaign_id, "u-42")
    assert status == 201
    status, second = await reward(client, campaign_id, "u-42", idempotency_key="k")
    assert status == 201
    status, direct = await claim(client, list_id, "u-42")
    assert status == 201

    tray = await vouchers(client, "u-42")

    by_code = {voucher["code"]: voucher for voucher in tray}
    assert len(tray) == 3
    for made in (first, second):
        voucher = by_code[made["reward"]["code"]]
        assert voucher["campaign_id"] == campaign_id
        assert voucher["list_id"] == list_id
        assert voucher["partner"] == "Puma"
        assert voucher["tag"] == "holi2025"
        assert voucher["claimed_at"] == made["reward"]["rewarded_at"]
        assert voucher["expires_at"] == FUTURE
    assert by_code[direct["claim"]["code"]]["campaign_id"] is None


async def test_direct_claims_and_rewards_on_the_same_list_are_independent(
    client: Client,
) -> None:
    codes = make_codes(5)
    list_id = await list_with_codes(client, codes)
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_campaign=1))["id"]

    rewarded = await rewarded_code(client, campaign_id, "u-42")
    status, direct = await claim(client, list_id, "u-42")
    status_again, again = await claim(client, list_id, "u-42")

    assert status == 201
    assert direct["claim"]["code"] != rewarded
    assert direct["claim"]["source"] == "API"
    assert direct["claim"]["campaign_id"] is None
    assert (status_again, again) == (200, direct)
    # The direct claim neither counts against the campaign nor is returned as its reward.
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 1}
    status, repeat = await reward(client, campaign_id, "u-42")
    assert (status, repeat["reward"]["code"]) == (200, rewarded)
    assert (await get_list(client, list_id))["codes"]["distributed"] == 2


async def test_a_direct_claim_first_does_not_stand_in_for_a_reward(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    campaign_id = (await create_campaign(client, [list_id]))["id"]
    status, direct = await claim(client, list_id, "u-42")
    assert status == 201

    status, given = await reward(client, campaign_id, "u-42")

    assert status == 201
    assert given["reward"]["code"] != direct["claim"]["code"]
    assert given["reward"]["id"] != direct["claim"]["id"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"user_id": ""},
        {"user_id": 42},
        {"user_id": "u-1", "idempotency_key": 7},
        {"user_id": "u-1", "event": "Charged"},
        {"user_id": "u-1", "event": {"properties": {}}},
        {"user_id": "u-1", "event": {"name": "Charged", "properties": []}},
    ],
    ids=[
        "no user",
        "empty user",
        "numeric user",
        "numeric key",
        "string event",
        "nameless event",
        "properties not an object",
    ],
)
async def test_a_bad_reward_request_is_400_and_gives_nothing(
    client: Client, body: dict[str, Any]
) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    campaign_id = (await create_campaign(client, [list_id]))["id"]

    status, reply = await call(client, "POST", f"/v1/campaigns/{campaign_id}/rewards", body)

    assert (status, error_code(reply)) == (400, "invalid_request")
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 0}
    assert (await get_list(client, list_id))["codes"]["distributed"] == 0


# -- limits under concurrency ------------------------------------------------------------------


async def test_far_more_concurrent_rewards_than_the_campaign_limit_give_exactly_the_limit(
    restartable: Restart,
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(400))
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_campaign=50))["id"]

    async with wide_session(client) as session:
        answers = await asyncio.gather(
            *(reward(session, campaign_id, f"u-{n}") for n in range(300))
        )

    won = {reply["reward"]["user_id"]: reply["reward"]["code"] for s, reply in answers if s == 201}
    assert len(won) == 50
    assert len(set(won.values())) == 50
    assert [answer for answer in answers if answer[0] != 201] == [
        refused("campaign_limit_reached")
    ] * 250
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 50}
    assert (await get_list(client, list_id))["codes"]["distributed"] == 50

    client = await restartable()

    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 50}
    assert await reward(client, campaign_id, "newcomer") == refused("campaign_limit_reached")
    loser = next(f"u-{n}" for n in range(300) if f"u-{n}" not in won)
    assert await reward(client, campaign_id, loser) == refused("campaign_limit_reached")
    for user_id, code in list(won.items())[:10]:
        status, reply = await reward(client, campaign_id, user_id)
        assert (status, reply["reward"]["code"]) == (200, code)
    listing = await get_list(client, list_id)
    assert listing["codes"]["distributed"] == 50
    assert_balanced(listing)


async def test_one_user_with_many_keys_at_once_gets_exactly_the_users_limit(
    restartable: Restart,
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(200))
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_user=3))["id"]

    answers = await asyncio.gather(
        *(reward(client, campaign_id, "u-42", idempotency_key=f"e-{n}") for n in range(100))
    )

    won = [reply["reward"]["code"] for status, reply in answers if status == 201]
    assert len(won) == 3
    assert len(set(won)) == 3
    assert [answer for answer in answers if answer[0] != 201] == [
        refused("user_limit_reached")
    ] * 97
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 3}

    client = await restartable()

    assert await reward(client, campaign_id, "u-42", idempotency_key="e-new") == refused(
        "user_limit_reached"
    )
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 3}
    held = [v["code"] for v in await vouchers(client, "u-42")]
    assert sorted(held) == sorted(won)
    assert (await get_list(client, list_id))["codes"]["distributed"] == 3


async def test_one_request_repeated_at_once_gets_one_reward(restartable: Restart) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(50))
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_user=5))["id"]

    answers = await asyncio.gather(
        *(reward(client, campaign_id, "u-42", idempotency_key="order-1") for _ in range(100))
    )

    assert sorted(status for status, _ in answers) == [200] * 99 + [201]
    assert len({reply["reward"]["code"] for _, reply in answers}) == 1
    assert len({reply["reward"]["id"] for _, reply in answers}) == 1
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 1}

    client = await restartable()

    status, reply = await reward(client, campaign_id, "u-42", idempotency_key="order-1")
    assert (status, reply) == (200, answers[0][1])
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 1}
    assert (await get_list(client, list_id))["codes"]["distributed"] == 1


async def test_concurrent_rewards_across_two_lists_never_share_a_code(client: Client) -> None:
    first_codes, second_codes = make_codes(30, "A"), make_codes(30, "B")
    first = await list_with_codes(client, first_codes, tag="first")
    second = await list_with_codes(client, second_codes, tag="second")
    campaign_id = (await create_campaign(client, [first, second]))["id"]

    async with wide_session(client) as session:
        answers = await asyncio.gather(
            *(reward(session, campaign_id, f"u-{n}") for n in range(100))
        )

    won = [reply["reward"]["code"] for status, reply in answers if status == 201]
    assert sorted(won) == first_codes + second_codes
    assert [answer for answer in answers if answer[0] != 201] == [refused("out_of_codes")] * 40
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 60}


async def test_a_batch_and_single_rewards_for_the_same_users_count_each_reward_once(
    restartable: Restart,
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(5000))
    # Room for two rewards a user, so a keyless single is not refused while the batch holds the
    # user's place: it must then be the batch's own reward, counted once.
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_user=2))["id"]
    users = [f"u-{n}" for n in range(3000)]

    async with wide_session(client) as session:
        batch, *singles = await asyncio.gather(
            call(
                session, "POST", f"/v1/campaigns/{campaign_id}/rewards/batch", {"user_ids": users}
            ),
            *(reward(session, campaign_id, user_id) for user_id in users[:200]),
        )

    assert batch[0] == 200, batch
    by_user = {r["user_id"]: r for r in batch[1]["results"]}
    for user_id, (status, reply) in zip(users, singles, strict=False):
        if status in (200, 201) and reply["rewarded"] and by_user[user_id]["rewarded"]:
            assert reply["reward"]["code"] == by_user[user_id]["reward"]["code"], user_id
    distributed = (await get_list(client, list_id))["codes"]["distributed"]
    assert distributed == len(users)
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": distributed}
    # Each user holds one code of two, so a keyed reward is still due to every one of them.
    async with wide_session(client) as session:
        seconds = await asyncio.gather(
            *(reward(session, campaign_id, user_id, idempotency_key="k") for user_id in users[:200])
        )
    assert [status for status, _ in seconds] == [201] * 200

    client = await restartable()
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": len(users) + 200}


async def test_a_keyless_reward_while_a_batch_rewards_the_same_user_gets_the_batchs_reward(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(5000))
    campaign_id = (await create_campaign(client, [list_id]))["id"]
    users = [f"u-{n}" for n in range(3000)]

    async with wide_session(client) as session:
        _, *singles = await asyncio.gather(
            reward_batch(client, campaign_id, users),
            *(reward(session, campaign_id, user_id) for user_id in users[:200]),
        )

    # Whichever came first, the user was rewarded once, and a keyless request is that reward.
    for user_id, (status, reply) in zip(users, singles, strict=False):
        assert status in (200, 201), reply
        assert reply["rewarded"] is True, (user_id, reply)
        (voucher,) = await vouchers(client, user_id)
        assert reply["reward"]["code"] == voucher["code"]
    assert (await get_list(client, list_id))["codes"]["distributed"] == len(users)


# -- limits across kill -9 ---------------------------------------------------------------------


async def test_campaign_limits_hold_across_kill_9_in_the_middle_of_rewards(
    server_process: ServerProcess,
) -> None:
    cap, per_user = 400, 2
    all_codes = make_codes(1000)
    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        status, created = await call(session, "POST", "/v1/lists", list_body())
        assert status == 201, created
        list_id = created["id"]
        async with session.post(
            f"/v1/lists/{list_id}/uploads",
            data=codes_csv(all_codes).encode(),
            headers={"Content-Type": "text/csv"},
        ) as response:
            assert response.status == 201
        campaign = await create_campaign(
            session, [list_id], max_codes_per_campaign=cap, max_codes_per_user=per_user
        )
    campaign_id = campaign["id"]

    acknowledged: dict[tuple[str, str], str] = {}
    attempted: set[str] = set()
    refusals: list[Any] = []
    enough = asyncio.Event()

    async def load(session: aiohttp.ClientSession, worker: int) -> None:
        """Reward until the server goes away: each user tries three keys."""
        n = 0
        while True:
            user_id, key = f"w{worker}-{n // 3}", f"k{n % 3}"
            attempted.add(user_id)
            n += 1
            try:
                status, reply = await reward(session, campaign_id, user_id, idempotency_key=key)
            except aiohttp.ClientError:
                return
            if status == 201:
                acknowledged[(user_id, key)] = reply["reward"]["code"]
            elif reply != {"rewarded": False, "reason": "user_limit_reached"} or key != "k2":
                refusals.append((user_id, key, status, reply))
            if len(acknowledged) >= 150:
                enough.set()

    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        workers = [asyncio.create_task(load(session, worker)) for worker in range(24)]
        await asyncio.wait_for(enough.wait(), timeout=60)
        server_process.kill()  # the load is still running
        await asyncio.gather(*workers)
    assert refusals == []
    assert len(acknowledged) < cap

    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(
        base_url=server_process.url, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        repeats = await asyncio.gather(
            *(reward(session, campaign_id, u, idempotency_key=k) for u, k in acknowledged)
        )
        for ((user_id, key), code), (status, reply) in zip(
            acknowledged.items(), repeats, strict=True
        ):
            assert status == 200, (user_id, key, reply)
            assert reply["reward"]["code"] == code, (user_id, key)

        issued = (await get_campaign(session, campaign_id))["rewards"]["issued"]
        assert len(acknowledged) <= issued < cap
        # Far more than the room left, some of them by users who already hold codes.
        more = [(f"after-{n}", "k0") for n in range(cap)] + [(u, "k9") for u in sorted(attempted)]
        answers = await asyncio.gather(
            *(reward(session, campaign_id, u, idempotency_key=k) for u, k in more)
        )
        assert sum(status == 201 for status, _ in answers) == cap - issued
        assert {reply.get("reason") for status, reply in answers if status != 201} <= {
            "campaign_limit_reached",
            "user_limit_reached",
        }
        assert (await get_campaign(session, campaign_id))["rewards"] == {"issued": cap}

        trays = await asyncio.gather(
            *(vouchers(session, user_id) for user_id in attempted | {u for u, _ in more})
        )
        for tray in trays:
            assert len(tray) <= per_user
        held = [voucher["code"] for tray in trays for voucher in tray]
        assert len(held) == cap
        assert len(set(held)) == cap, "a code was given twice"
        assert set(held) <= set(all_codes)
        assert set(acknowledged.values()) <= set(held)
        listing = await get_campaign(session, campaign_id)
        assert listing["rewards"] == {"issued": cap}
        status, found = await call(session, "GET", f"/v1/lists/{list_id}")
        assert found["codes"]["distributed"] == cap
        assert_balanced(found)


# -- batches -----------------------------------------------------------------------------------


async def test_a_batch_rewards_each_distinct_user_once(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    campaign_id = (await create_campaign(client, [list_id]))["id"]

    results = await reward_batch(client, campaign_id, ["a", "b", "a", "c", "b"])

    assert sorted(r["user_id"] for r in results) == ["a", "b", "c"]
    assert all(r["rewarded"] is True for r in results)
    for result in results:
        assert set(result["reward"]) == REWARD_FIELDS
        assert result["reward"]["user_id"] == result["user_id"]
        assert result["reward"]["campaign_id"] == campaign_id
        assert result["reward"]["list_id"] == list_id
    assert len({r["reward"]["code"] for r in results}) == 3
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 3}
    assert (await get_list(client, list_id))["codes"]["distributed"] == 3


async def test_a_batch_repeated_gives_the_same_rewards(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    campaign_id = (await create_campaign(client, [list_id]))["id"]
    status, single = await reward(client, campaign_id, "a")
    assert status == 201

    first = await reward_batch(client, campaign_id, ["a", "b", "c"])
    second = await reward_batch(client, campaign_id, ["c", "b", "a", "d"])

    first_codes = {r["user_id"]: r["reward"]["code"] for r in first}
    second_codes = {r["user_id"]: r["reward"]["code"] for r in second}
    assert first_codes["a"] == single["reward"]["code"]
    assert {user: second_codes[user] for user in first_codes} == first_codes
    assert len(set(second_codes.values())) == 4
    # And a single keyless reward sees the batch's reward as its own.
    status, repeat = await reward(client, campaign_id, "b")
    assert (status, repeat["reward"]["code"]) == (200, first_codes["b"])
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 4}


async def test_a_batch_honours_the_limits(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    campaign_id = (
        await create_campaign(client, [list_id], max_codes_per_campaign=3, max_codes_per_user=1)
    )["id"]
    assert (await reward(client, campaign_id, "keyed", idempotency_key="k"))[0] == 201

    results = await reward_batch(client, campaign_id, ["keyed", "a", "b", "c", "d"])

    by_user = {r["user_id"]: r for r in results}
    assert by_user["keyed"] == {
        "user_id": "keyed",
        "rewarded": False,
        "reason": "user_limit_reached",
    }
    assert by_user["a"]["rewarded"]
    assert by_user["b"]["rewarded"]
    assert by_user["c"] == {"user_id": "c", "rewarded": False, "reason": "campaign_limit_reached"}
    assert by_user["d"] == {"user_id": "d", "rewarded": False, "reason": "campaign_limit_reached"}
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 3}
    assert (await get_list(client, list_id))["codes"]["distributed"] == 3


async def test_a_batch_falls_back_across_lists_and_runs_out_of_codes(client: Client) -> None:
    first = await list_with_codes(client, make_codes(2, "A"), tag="first")
    second = await list_with_codes(client, make_codes(2, "B"), tag="second")
    campaign_id = (await create_campaign(client, [first, second]))["id"]

    results = await reward_batch(client, campaign_id, [f"u-{n}" for n in range(6)])

    given = [r["reward"] for r in results if r["rewarded"]]
    assert sorted(r["code"][0] for r in given) == ["A", "A", "B", "B"]
    assert all(r["list_id"] == (first if r["code"][0] == "A" else second) for r in given)
    assert [r["reason"] for r in results if not r["rewarded"]] == ["out_of_codes"] * 2
    assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 4}


async def test_a_batch_on_a_campaign_that_is_not_running_rewards_nobody(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    campaign_id = (await create_campaign(client, [list_id]))["id"]
    assert (await transition(client, campaign_id, "pause"))[0] == 200

    results = await reward_batch(client, campaign_id, ["a", "b"])

    assert results == [
        {"user_id": "a", "rewarded": False, "reason": "campaign_not_running"},
        {"user_id": "b", "rewarded": False, "reason": "campaign_not_running"},
    ]
    assert (await get_list(client, list_id))["codes"]["distributed"] == 0


async def test_a_batch_on_a_paused_campaign_still_returns_earlier_rewards(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    campaign_id = (await create_campaign(client, [list_id]))["id"]
    [first] = await reward_batch(client, campaign_id, ["a"])
    assert first["rewarded"] is True
    assert (await transition(client, campaign_id, "pause"))[0] == 200

    results = await reward_batch(client, campaign_id, ["a", "b"])

    # A repeat is answered as the single reward route answers it: the reward given before.
    assert results == [
        first,
        {"user_id": "b", "rewarded": False, "reason": "campaign_not_running"},
    ]
    assert (await get_list(client, list_id))["codes"]["distributed"] == 1


@pytest.mark.parametrize(
    "user_ids",
    [None, [], "a,b", ["a", 7], ["a", ""], [f"u{n}" for n in range(100_001)]],
    ids=["missing", "empty", "string", "number", "empty id", "over 100000"],
)
async def test_a_bad_batch_is_400_and_rewards_nobody(client: Client, user_ids: Any) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    campaign_id = (await create_campaign(client, [list_id]))["id"]
    body = {} if user_ids is None else {"user_ids": user_ids}

    status, reply = await call(client, "POST", f"/v1/campaigns/{campaign_id}/rewards/batch", body)

    assert (status, error_code(reply)) == (400, "invalid_request")
    assert (await get_list(client, list_id))["codes"]["distributed"] == 0


# -- Liquid messages ---------------------------------------------------------------------------


async def test_the_message_renders_the_reward_profile_and_trigger(client: Client) -> None:
    list_id = await list_with_codes(client, ["pm500ff"], expires_at="2026-12-31T23:59:59Z")
    template = (
        "Hi {{ Profile.user_id }}, your code is {{ Event.voucherCode | upcase }}"
        " (valid until {{ Event.listExpiry | date: '%b %d, %Y' }})"
        " for {{ Trigger.name }} of {{ Trigger.properties.amount }}"
        " at {{ Event.partner }}{{ Event.noSuchThing }}{{ Nothing.at.all }}."
    )
    campaign_id = (await create_campaign(client, [list_id], message_template=template))["id"]

    status, reply = await reward(
        client, campaign_id, "u-42", event={"name": "Charged", "properties": {"amount": 120}}
    )

    assert status == 201, reply
    expected = (
        "Hi u-42, your code is PM500FF (valid until Dec 31, 2026) for Charged of 120 at Puma."
    )
    assert reply["reward"]["message"] == expected
    # The repeat and the event carry the same message.
    assert (await reward(client, campaign_id, "u-42"))[1]["reward"]["message"] == expected
    (event,) = await events(client, "voucher.rewarded")
    assert event["data"]["message"] == expected


async def test_a_batch_reward_renders_its_message_without_a_trigger(client: Client) -> None:
    list_id = await list_with_codes(client, ["code-1"])
    template = "{{ Profile.user_id }}:{{ Event.voucherCode }}:{{ Trigger.name }}."
    campaign_id = (await create_campaign(client, [list_id], message_template=template))["id"]

    (result,) = await reward_batch(client, campaign_id, ["u-1"])

    assert result["reward"]["message"] == "u-1:code-1:."


async def test_a_message_that_fails_to_render_is_empty_and_the_reward_stands(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    # Renders against the sample when saved; fails only for an event with `boom`.
    template = "{% if Trigger.properties.boom %}{{ 1 | divided_by: 0 }}{% endif %}ok"
    campaign_id = (await create_campaign(client, [list_id], message_template=template))["id"]

    boom_event = {"name": "E", "properties": {"boom": 1}}
    status, boom = await reward(client, campaign_id, "u-1", event=boom_event)
    status_fine, fine = await reward(client, campaign_id, "u-2", event={"name": "E"})

    assert status == 201
    assert boom["reward"]["message"] == ""
    assert (status_fine, fine["reward"]["message"]) == (201, "ok")


async def test_a_new_template_applies_to_later_rewards(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    campaign_id = (await create_campaign(client, [list_id], message_template="one"))["id"]
    assert (await reward(client, campaign_id, "u-1"))[1]["reward"]["message"] == "one"

    status, _ = await call(
        client, "PATCH", f"/v1/campaigns/{campaign_id}", {"message_template": "two"}
    )
    assert status == 200

    assert (await reward(client, campaign_id, "u-2"))[1]["reward"]["message"] == "two"
    assert (await reward(client, campaign_id, "u-1"))[1]["reward"]["message"] == "one"


async def test_the_render_endpoint_previews_a_message(client: Client) -> None:
    status, reply = await call(
        client,
        "POST",
        "/v1/templates/render",
        {
            "template": "Hi {{ Profile.user_id }}, {{ Event.voucherCode | upcase }}"
            " until {{ Event.listExpiry | date: '%d/%m/%Y' }}{{ Event.missing }}!",
            "event": {"voucherCode": "pm500ff", "listExpiry": "2026-12-31T23:59:59Z"},
            "profile": {"user_id": "u-42"},
        },
    )

    assert (status, reply) == (200, {"message": "Hi u-42, PM500FF until 31/12/2026!"})


async def test_the_render_endpoint_without_a_profile_uses_the_events_user(client: Client) -> None:
    status, reply = await call(
        client,
        "POST",
        "/v1/templates/render",
        {"template": "{{ Profile.user_id }}", "event": {"userId": "u-7"}},
    )
    assert (status, reply) == (200, {"message": "u-7"})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"template": "{{ Event.voucherCode ", "event": {}}, "invalid_template"),
        ({"template": "{% for x in y %}", "event": {}}, "invalid_template"),
        ({"template": "{{ 'x' | nosuchfilter }}", "event": {}}, "invalid_template"),
        ({"event": {}}, "invalid_request"),
        ({"template": 5, "event": {}}, "invalid_request"),
        ({"template": "x", "event": []}, "invalid_request"),
        ({"template": "{{ Event.x | base64_decode }}", "event": {"x": "/w=="}}, "invalid_template"),
        ({"template": '{{ Event.x | date: "%Y" }}', "event": {"x": -(10**15)}}, "invalid_template"),
        ({"template": "{{ Event.x | sum }}", "event": {"x": [1, "a"]}}, "invalid_template"),
    ],
    ids=[
        "syntax",
        "unclosed block",
        "unknown filter",
        "no template",
        "number",
        "event list",
        "bad base64",
        "date out of range",
        "sum of a string",
    ],
)
async def test_the_render_endpoint_refuses_a_bad_template(
    client: Client, body: dict[str, Any], expected: str
) -> None:
    status, reply = await call(client, "POST", "/v1/templates/render", body)
    assert (status, error_code(reply)) == (400, expected)


# -- the reward event --------------------------------------------------------------------------


async def test_each_reward_and_claim_makes_one_reward_event(client: Client) -> None:
    list_id = await list_with_codes(
        client,
        ["PM500FF", "PM600FF"],
        partner="Puma",
        tag="holi2025",
        description="Orders above $100",
        expires_at="2026-12-31T23:59:59Z",
    )
    campaign_id = (
        await create_campaign(
            client,
            [list_id],
            message_template="Hi {{ Profile.user_id }}, your code is {{ Event.voucherCode }}",
        )
    )["id"]
    before = int(time.time())
    status, given = await reward(client, campaign_id, "u-42")
    assert status == 201
    assert (await reward(client, campaign_id, "u-42"))[0] == 200  # a repeat makes no event
    status, direct = await claim(client, list_id, "u-43")
    assert status == 201
    after = int(time.time())

    rewarded = await events(client, "voucher.rewarded")

    assert len(rewarded) == 2
    first, second = rewarded
    assert second["seq"] > first["seq"]
    for event, user_id in ((first, "u-42"), (second, "u-43")):
        assert event["name"] == "CT Partner Voucher Rewarded"
        assert TIME.match(event["time"])
        assert set(event["data"]) == EVENT_PROPERTIES
        assert isinstance(event["data"]["eventTimestamp"], int)
        assert before <= event["data"]["eventTimestamp"] <= after
        assert event["data"]["userId"] == user_id
    code = given["reward"]["code"]
    shared = {
        "CT Source": "Promo Module",
        "listDescription": "Orders above $100",
        "listExpiry": "2026-12-31T23:59:59Z",
        "listTag": "holi2025",
        "partner": "Puma",
        "voucherListId": list_id,
    }
    assert first["data"] == {
        **shared,
        "campaignId": campaign_id,
        "eventTimestamp": first["data"]["eventTimestamp"],
        "source": "Campaign",
        "voucherCode": code,
        "userId": "u-42",
        "message": f"Hi u-42, your code is {code}",
    }
    assert second["data"] == {
        **shared,
        "campaignId": None,
        "eventTimestamp": second["data"]["eventTimestamp"],
        "source": "API",
        "voucherCode": direct["claim"]["code"],
        "userId": "u-43",
        "message": None,
    }


async def test_a_batch_of_rewards_makes_one_event_per_reward(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    campaign_id = (await create_campaign(client, [list_id]))["id"]

    results = await reward_batch(client, campaign_id, ["a", "b", "c"])
    await reward_batch(client, campaign_id, ["a", "b", "c"])

    rewarded = await events(client, "voucher.rewarded")
    assert sorted((e["data"]["userId"], e["data"]["voucherCode"]) for e in rewarded) == sorted(
        (r["user_id"], r["reward"]["code"]) for r in results
    )
    assert {e["data"]["source"] for e in rewarded} == {"Campaign"}
    assert {e["data"]["campaignId"] for e in rewarded} == {campaign_id}


async def test_transitions_sent_at_once_are_applied_one_after_another(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    campaign_id = (await create_campaign(client, [list_id]))["id"]

    ended, *paused = await asyncio.gather(
        transition(client, campaign_id, "end"),
        *(transition(client, campaign_id, "pause") for _ in range(5)),
    )

    # In any order, one pause at most can come before the end, and nothing after it.
    assert ended[0] == 200
    assert (await get_campaign(client, campaign_id))["status"] == "ended"
    assert sum(status == 200 for status, _ in paused) <= 1
    assert (await transition(client, campaign_id, "resume"))[0] == 409
    assert await reward(client, campaign_id, "u-1") == refused("campaign_not_running")
    changes = [event["data"] for event in await events(client, "campaign.status_changed")]
    assert changes[-1]["status"] == "ended"
    assert changes[0]["previous_status"] == "running"
    for earlier, later in itertools.pairwise(changes):
        assert later["previous_status"] == earlier["status"], changes


async def test_a_campaigns_rewards_and_limits_past_the_first_dict_hold_across_a_restart(
    tiny_first_dict: None, restartable: Restart
) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(200))
    campaign_id = (await create_campaign(client, [list_id], max_codes_per_user=2))["id"]
    users = [f"u-{n}" for n in range(20)]
    plain = await asyncio.gather(*(reward(client, campaign_id, user) for user in users))
    keyed = await asyncio.gather(
        *(reward(client, campaign_id, user, idempotency_key="order") for user in users)
    )
    assert {status for status, _ in [*plain, *keyed]} == {201}
    batched = await reward_batch(client, campaign_id, [f"b-{n}" for n in range(15)])
    assert [result["rewarded"] for result in batched] == [True] * 15

    for restarted in (False, True):
        if restarted:
            client = await restartable()
        again = await asyncio.gather(*(reward(client, campaign_id, user) for user in users))
        assert again == [(200, reply) for _, reply in plain]
        over = await asyncio.gather(
            *(reward(client, campaign_id, user, idempotency_key="more") for user in users)
        )
        assert over == [refused("user_limit_reached")] * 20
        assert (await get_campaign(client, campaign_id))["rewards"] == {"issued": 55}
    fresh = await reward(client, campaign_id, "late", idempotency_key="one")
    assert fresh[0] == 201
    assert await reward(client, campaign_id, "late", idempotency_key="two") == (201, ANY)
    assert await reward(client, campaign_id, "late") == refused("user_limit_reached")
