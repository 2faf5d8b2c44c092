"""Thresholds and alerts, and the Prometheus endpoint: a list's expiry warning and its
`list.expiring` event, utilization, claim rate and the estimated exhaustion, `GET /v1/stats`,
and the series `GET /metrics` exports."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from support import (
    Client,
    assert_balanced,
    call,
    codes_csv,
    create_list,
    error_code,
    get_list,
    list_with_codes,
    make_codes,
    upload,
)

from voucherd import clock
from voucherd.server import pieces as server_pieces
from voucherd.settings import Settings

PAST = "2020-01-01T00:00:00Z"
WAIT = 10.0
HOUR = 3600.0
DAY = 24 * HOUR
Restart = Callable[[], Awaitable[Client]]
ClientFactory = Callable[[Settings], Awaitable[Client]]
T = TypeVar("T")

_sentinels = itertools.count()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Lists are checked for expiry warnings every 50 ms, so a due warning comes quickly."""
    return Settings(data_dir=tmp_path / "data", alert_check_interval=0.05)


# -- helpers -----------------------------------------------------------------------------------


def rfc3339(epoch: float) -> str:
    """Whole seconds, as the API shows them."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def in_(seconds: float) -> str:
    """A time this far from the server's now (which some tests move)."""
    return rfc3339(clock.now() + seconds)


def freeze(monkeypatch: pytest.MonkeyPatch, at: float) -> list[float]:
    """Stop the server's clock at `at`; the test moves it by changing the list's one item."""
    instant = [at]
    monkeypatch.setattr(clock, "now", lambda: instant[0])
    return instant


async def poll(condition: Callable[[], Awaitable[T]], what: str, within: float = WAIT) -> T:
    deadline = time.monotonic() + within
    while True:
        result = await condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.02)


async def edit(client: Client, list_id: int, **fields: Any) -> dict[str, Any]:
    status, reply = await call(client, "PATCH", f"/v1/lists/{list_id}", fields)
    assert status == 200, reply
    edited: dict[str, Any] = reply
    return edited


async def act(client: Client, path: str) -> dict[str, Any]:
    status, reply = await call(client, "POST", path)
    assert status == 200, reply
    done: dict[str, Any] = reply
    return done


async def claim(client: Client, list_id: int, user_id: str) -> None:
    status, reply = await call(client, "POST", f"/v1/lists/{list_id}/claims", {"user_id": user_id})
    assert status == 201, reply


async def claim_batch(client: Client, list_id: int, user_ids: list[str]) -> None:
    status, reply = await call(
        client, "POST", f"/v1/lists/{list_id}/claims/batch", {"user_ids": user_ids}
    )
    assert status == 200, reply
    assert len(reply["claims"]) == len(user_ids), reply


async def create_campaign(client: Client, lists: list[int], **fields: Any) -> int:
    body = {"name": "Holi cashback", "lists": lists, **fields}
    status, reply = await call(client, "POST", "/v1/campaigns", body)
    assert status == 201, reply
    assert reply["status"] == "running", reply
    campaign_id: int = reply["id"]
    return campaign_id


async def reward(client: Client, campaign_id: int, user_id: str) -> tuple[int, Any]:
    return await call(client, "POST", f"/v1/campaigns/{campaign_id}/rewards", {"user_id": user_id})


async def all_lists(client: Client) -> list[dict[str, Any]]:
    status, reply = await call(client, "GET", "/v1/lists")
    assert status == 200, reply
    found: list[dict[str, Any]] = reply["lists"]
    return found


async def all_events(client: Client) -> list[dict[str, Any]]:
    """Every event, over plain HTTP."""
    found: list[dict[str, Any]] = []
    since = 0
    while True:
        status, page = await call(client, "GET", "/v1/events", since=str(since), limit="1000")
        assert status == 200, page
        if not page["events"]:
            return found
        found.extend(page["events"])
        since = page["last_seq"]


async def expiring(client: Client, list_id: int) -> list[dict[str, Any]]:
    """The `list.expiring` events written for one list."""
    return [
        event
        for event in await all_events(client)
        if event["type"] == "list.expiring" and event["data"]["list_id"] == list_id
    ]


async def one_more_check(client: Client) -> None:
    """Wait until the expiry check has gone over every list made so far at least once more.

    A list whose warning is due, made now, is warned by a check that took its lists after it
    was made, so that check also went over every earlier list."""
    sentinel = await create_list(
        client,
        partner="Sentinel",
        tag=f"sentinel-{next(_sentinels)}",
        expires_at=in_(HOUR),
        expiry_warning="P1D",
    )
    await poll(lambda: expiring(client, sentinel["id"]), "the sentinel's expiry warning")


async def scrape(client: Client) -> list[Sample]:
    response = await client.get("/metrics")
    assert response.status == 200, await response.text()
    assert response.content_type == "text/plain"
    text = await response.text()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The one sample of `name` whose labels include `labels`, or None without one."""
    found = [
        sample.value
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def count_of(samples: list[Sample], name: str, **labels: str) -> float:
    """A counter's value; 0 before it was first counted."""
    return value(samples, name, **labels) or 0.0


def of_list(listing: dict[str, Any]) -> dict[str, str]:
    return {"list_id": str(listing["id"]), "partner": listing["partner"], "tag": listing["tag"]}


PER_LIST = (
    "voucherd_list_codes",
    "voucherd_list_low_stock",
    "voucherd_list_low_stock_threshold",
    "voucherd_list_expiry_seconds",
    "voucherd_list_expiry_warning_seconds",
    "voucherd_list_running_campaigns",
    "voucherd_list_claims_per_minute",
    "voucherd_list_exhaustion_seconds",
)


def list_series(samples: list[Sample], list_id: int) -> list[Sample]:
    return [
        sample
        for sample in samples
        if sample.name in PER_LIST and sample.labels.get("list_id") == str(list_id)
    ]


def list_fields() -> dict[str, Any]:
    return {"partner": "Puma", "tag": "holi2025", "name": "Holi 2025", "expires_at": in_(DAY)}


async def _at_least(found: Awaitable[list[T]], count: int) -> list[T]:
    """The items once there are `count` of them, else nothing to poll on; never more."""
    items = await found
    assert len(items) <= count, items
    return items if len(items) == count else []


# -- expiry_warning on the list ----------------------------------------------------------------


async def test_a_new_list_warns_three_days_before_it_expires_by_default(client: Client) -> None:
    created = await create_list(client)

    assert created["expiry_warning"] == "P3D"
    assert (await get_list(client, created["id"]))["expiry_warning"] == "P3D"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("P1D", "P1D"),
        ("p2w", "P2W"),
        ("pt12h", "PT12H"),
        ("PT90M", "PT90M"),
        ("PT45S", "PT45S"),
        ("p1w2dT3h4m5s", "P1W2DT3H4M5S"),
    ],
)
async def test_an_expiry_warning_given_on_create_is_kept_upper_cased_across_a_restart(
    restartable: Restart, given: str, kept: str
) -> None:
    client = await restartable()
    created = await create_list(client, expiry_warning=given)
    assert created["expiry_warning"] == kept

    client = await restartable()

    assert await get_list(client, created["id"]) == created


async def test_a_null_expiry_warning_on_create_means_no_warning(client: Client) -> None:
    created = await create_list(client, expiry_warning=None)

    assert created["expiry_warning"] is None
    assert (await get_list(client, created["id"]))["expiry_warning"] is None


async def test_patch_changes_and_clears_the_expiry_warning_and_keeps_it_otherwise(
    restartable: Restart,
) -> None:
    client = await restartable()
    created = await create_list(client)

    changed = await edit(client, created["id"], expiry_warning="pt6h")
    assert changed["expiry_warning"] == "PT6H"
    assert {k: v for k, v in changed.items() if k not in ("expiry_warning", "updated_at")} == {
        k: v for k, v in created.items() if k not in ("expiry_warning", "updated_at")
    }
    # A PATCH that does not name it leaves it alone.
    assert (await edit(client, created["id"], name="Renamed"))["expiry_warning"] == "PT6H"

    cleared = await edit(client, created["id"], expiry_warning=None)
    assert cleared["expiry_warning"] is None
    assert cleared["name"] == "Renamed"
    assert (await edit(client, created["id"], description="still none"))["expiry_warning"] is None

    client = await restartable()
    assert (await get_list(client, created["id"]))["expiry_warning"] is None
    assert (await edit(client, created["id"], expiry_warning="P1W"))["expiry_warning"] == "P1W"


BAD_WARNINGS = [
    "3 days",
    "P",
    "PT",
    "P1DT",
    "P1M",
    "P1Y",
    "P1Y2D",
    "P1H",
    "PT1D",
    "P1.5D",
    "-P1D",
    " P1D",
    "P1D ",
    "1D",
    "D",
    "",
    "P" + "1" * 40 + "D",
    # ISO 8601 digits are ASCII: an Arabic-Indic three is no number of days.
    "P\u0663D",
    123,
    1.5,
    True,
    ["P1D"],
    {"days": 1},
]


@pytest.mark.parametrize("bad", BAD_WARNINGS)
async def test_a_bad_expiry_warning_is_400_on_create_and_creates_nothing(
    client: Client, bad: Any
) -> None:
    before = await all_lists(client)

    status, reply = await call(
        client, "POST", "/v1/lists", {**list_fields(), "expiry_warning": bad, "tag": "bad"}
    )

    assert status == 400, reply
    assert error_code(reply) == "invalid_request"
    assert await all_lists(client) == before


@pytest.mark.parametrize("bad", BAD_WARNINGS)
async def test_a_bad_expiry_warning_is_400_on_patch_and_changes_nothing(
    client: Client, bad: Any
) -> None:
    created = await create_list(client, expiry_warning="P2D")

    for body in ({"expiry_warning": bad}, {"expiry_warning": bad, "name": "Renamed"}):
        status, reply = await call(client, "PATCH", f"/v1/lists/{created['id']}", body)
        assert status == 400, reply
        assert error_code(reply) == "invalid_request"

    assert await get_list(client, created["id"]) == created


async def test_the_configured_defaults_apply_to_new_lists_and_explicit_values_win(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    client = await start_client(
        Settings(
            data_dir=tmp_path / "one",
            default_expiry_warning="pt1h",
            default_low_stock_threshold=7,
        )
    )
    defaults = await create_list(client, tag="defaults")
    explicit = await create_list(
        client, tag="explicit", expiry_warning="P1D", low_stock_threshold=0
    )
    none = await create_list(client, tag="none", expiry_warning=None)

    assert (defaults["expiry_warning"], defaults["low_stock_threshold"]) == ("PT1H", 7)
    assert (explicit["expiry_warning"], explicit["low_stock_threshold"]) == ("P1D", 0)
    assert (none["expiry_warning"], none["low_stock_threshold"]) == (None, 7)

    # An empty default means no warning unless a list asks for one.
    other = await start_client(Settings(data_dir=tmp_path / "two", default_expiry_warning=""))
    assert (await create_list(other))["expiry_warning"] is None
    assert (await create_list(other, tag="asks", expiry_warning="P1D"))["expiry_warning"] == "P1D"


def test_the_alert_settings_come_from_voucherd_variables_and_bad_ones_are_refused() -> None:
    loaded = Settings.load(
        env={
            "VOUCHERD_DEFAULT_LOW_STOCK_THRESHOLD": "25",
            "VOUCHERD_DEFAULT_EXPIRY_WARNING": "PT12H",
            "VOUCHERD_ALERT_CHECK_INTERVAL": "2.5",
        }
    )
    assert loaded.default_low_stock_threshold == 25
    assert loaded.default_expiry_warning == "PT12H"
    assert loaded.alert_check_interval == 2.5

    plain = Settings.load(env={})
    assert (plain.default_low_stock_threshold, plain.default_expiry_warning) == (1000, "P3D")
    assert plain.alert_check_interval == 10.0

    for name, raw in (
        ("VOUCHERD_DEFAULT_LOW_STOCK_THRESHOLD", "-1"),
        ("VOUCHERD_DEFAULT_LOW_STOCK_THRESHOLD", "many"),
        ("VOUCHERD_DEFAULT_EXPIRY_WARNING", "P1M"),
        ("VOUCHERD_DEFAULT_EXPIRY_WARNING", "3 days"),
        ("VOUCHERD_ALERT_CHECK_INTERVAL", "0"),
        ("VOUCHERD_ALERT_CHECK_INTERVAL", "-5"),
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each setting words its own message
            Settings.load(env={name: raw})


# -- list.expiring -----------------------------------------------------------------------------


def expiring_data(listing: dict[str, Any], available: int) -> dict[str, Any]:
    return {
        "list_id": listing["id"],
        "partner": listing["partner"],
        "tag": listing["tag"],
        "expires_at": listing["expires_at"],
        "expiry_warning": listing["expiry_warning"],
        "available": available,
    }


async def test_a_due_warning_writes_one_expiring_event_also_after_more_checks_and_a_restart(
    restartable: Restart,
) -> None:
    client = await restartable()
    # Not due yet: the list expires in an hour and warns a minute before.
    list_id = await list_with_codes(
        client, make_codes(5), expires_at=in_(HOUR), expiry_warning="PT1M"
    )
    await claim(client, list_id, "u-1")
    await one_more_check(client)
    assert await expiring(client, list_id) == []

    # A day's warning is due at once.
    listing = await edit(client, list_id, expiry_warning="P1D")
    (event,) = await poll(lambda: expiring(client, list_id), "the list's expiry warning")

    assert event["name"] == "list.expiring"
    assert event["data"] == expiring_data(listing, available=4)
    assert event["time"] <= listing["expires_at"]

    await one_more_check(client)
    await one_more_check(client)
    assert await expiring(client, list_id) == [event]

    client = await restartable()
    await one_more_check(client)
    assert await expiring(client, list_id) == [event]
    # The list itself is unchanged by the warning.
    assert (await get_list(client, list_id))["updated_at"] == listing["updated_at"]


async def test_moving_the_expiry_date_within_the_warning_writes_another_warning(
    client: Client,
) -> None:
    created = await create_list(client, expires_at=in_(HOUR), expiry_warning="P1D")
    (first,) = await poll(lambda: expiring(client, created["id"]), "the first warning")
    assert first["data"] == expiring_data(created, available=0)

    # Out of the warning: nothing new.
    await edit(client, created["id"], expires_at=in_(10 * DAY))
    await one_more_check(client)
    assert await expiring(client, created["id"]) == [first]

    # Back within it, on a new date: warned again, once.
    moved = await edit(client, created["id"], expires_at=in_(2 * HOUR))
    warnings = await poll(
        lambda: _at_least(expiring(client, created["id"]), 2), "the second warning"
    )
    assert warnings[0] == first
    assert warnings[1]["data"] == expiring_data(moved, available=0)
    await one_more_check(client)
    assert await expiring(client, created["id"]) == warnings

    # A new date still within it, straight away: a third.
    again = await edit(client, created["id"], expires_at=in_(3 * HOUR))
    warnings = await poll(
        lambda: _at_least(expiring(client, created["id"]), 3), "the third warning"
    )
    assert warnings[2]["data"] == expiring_data(again, available=0)
    await one_more_check(client)
    assert len(await expiring(client, created["id"])) == 3


async def test_a_list_whose_warning_is_not_due_gets_no_expiring_event(client: Client) -> None:
    lists = [
        await create_list(client, tag="in-two-days", expires_at=in_(2 * DAY), expiry_warning="P1D"),
        await create_list(client, tag="in-an-hour", expires_at=in_(HOUR), expiry_warning="PT30M"),
        await create_list(client, tag="default", expires_at=in_(4 * DAY)),
        await create_list(client, tag="far", expires_at="2030-01-01T00:00:00Z"),
    ]

    await one_more_check(client)
    await one_more_check(client)

    for listing in lists:
        assert await expiring(client, listing["id"]) == []


async def test_paused_lists_are_warned_and_archived_and_expired_ones_are_not(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared"
    # The first server checks once at start-up, before any list exists, and not again.
    first = await start_client(Settings(data_dir=data_dir, alert_check_interval=3600))
    due = {"expires_at": in_(HOUR), "expiry_warning": "P1D"}
    active = await create_list(first, tag="active", **due)
    paused = await create_list(first, tag="paused", **due)
    archived = await create_list(first, tag="archived", **due)
    expired = await create_list(first, tag="expired", expires_at=PAST, expiry_warning="P1D")
    await act(first, f"/v1/lists/{paused['id']}/pause")
    await act(first, f"/v1/lists/{archived['id']}/archive")
    assert [e for e in await all_events(first) if e["type"] == "list.expiring"] == []
    await first.close()

    client = await start_client(Settings(data_dir=data_dir, alert_check_interval=0.05))
    await poll(lambda: expiring(client, active["id"]), "the active list's warning")
    await poll(lambda: expiring(client, paused["id"]), "the paused list's warning")
    await one_more_check(client)

    assert len(await expiring(client, active["id"])) == 1
    assert len(await expiring(client, paused["id"])) == 1
    assert await expiring(client, archived["id"]) == []
    assert await expiring(client, expired["id"]) == []
    assert (await get_list(client, expired["id"]))["status"] == "expired"


async def test_a_warning_comes_due_as_time_passes_and_never_once_the_list_has_expired(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    instant = freeze(monkeypatch, time.time())
    listing = await create_list(client, expires_at=in_(2 * DAY), expiry_warning="P1D")
    late = await create_list(client, tag="late", expires_at=in_(2 * DAY), expiry_warning="PT1H")
    await one_more_check(client)
    assert await expiring(client, listing["id"]) == []

    instant[0] += DAY - 60  # a minute before the day's warning
    await one_more_check(client)
    assert await expiring(client, listing["id"]) == []

    instant[0] += 120  # a minute into it
    (event,) = await poll(lambda: expiring(client, listing["id"]), "the warning")
    assert event["data"] == expiring_data(listing, available=0)
    assert event["time"] == rfc3339(instant[0])

    # Past the expiry: the list whose hour's warning was never checked in time is not warned
    # late, and the warned one is not warned again.
    instant[0] += 2 * DAY
    await one_more_check(client)
    assert await expiring(client, late["id"]) == []
    assert await expiring(client, listing["id"]) == [event]
    assert (await get_list(client, late["id"]))["status"] == "expired"


async def test_removing_the_warning_stops_it(client: Client) -> None:
    never = await create_list(client, tag="never", expires_at=in_(HOUR), expiry_warning=None)
    warned = await create_list(client, tag="warned", expires_at=in_(HOUR), expiry_warning="P1D")
    (first,) = await poll(lambda: expiring(client, warned["id"]), "the warning")

    # A new date would re-arm it, but the warning is gone.
    await edit(client, warned["id"], expiry_warning=None, expires_at=in_(2 * HOUR))
    await one_more_check(client)

    assert await expiring(client, never["id"]) == []
    assert await expiring(client, warned["id"]) == [first]


# -- utilization, claim rate, estimated exhaustion ---------------------------------------------


def assert_exhaustion(listing: dict[str, Any], before: float, after: float) -> None:
    """estimated_exhaustion_at is when the available codes run out at the claim rate."""
    available, rate = listing["codes"]["available"], listing["claim_rate"]
    at = listing["estimated_exhaustion_at"]
    assert isinstance(at, str), listing
    assert at == rfc3339(epoch(at)), at
    # The rate is rounded to three places in the view; allow for that and whole seconds.
    expected = available / rate * 60
    slack = 5 + expected * 0.01
    assert before + expected - slack <= epoch(at) <= after + expected + slack, (listing, before)
    assert epoch(at) > after


async def test_utilization_claim_rate_and_estimated_exhaustion_follow_the_claims(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(20))
    fresh = await get_list(client, list_id)
    assert (fresh["utilization"], fresh["claim_rate"]) == (0.0, 0.0)
    assert fresh["estimated_exhaustion_at"] is None

    campaign_id = await create_campaign(client, [list_id])
    before = time.time()
    for n in range(3):
        await claim(client, list_id, f"u-{n}")
    await claim_batch(client, list_id, ["b-1", "b-2"])
    assert (await reward(client, campaign_id, "r-1"))[0] == 201
    listing = await get_list(client, list_id)
    after = time.time()

    # Six of twenty handed out, all within the last 15 minutes.
    assert listing["codes"]["distributed"] == 6
    assert listing["utilization"] == pytest.approx(6 / 20, abs=1e-6)
    assert listing["claim_rate"] == pytest.approx(6 / 15, abs=0.001)
    assert_exhaustion(listing, before, after)
    # The same figures in the list of lists.
    (shown,) = [found for found in await all_lists(client) if found["id"] == list_id]
    assert shown == listing

    # Paused, it runs out of nothing: no estimate until it is active again.
    assert (await client.post(f"/v1/lists/{list_id}/pause")).status == 200
    assert (await get_list(client, list_id))["estimated_exhaustion_at"] is None
    assert (await client.post(f"/v1/lists/{list_id}/activate")).status == 200
    assert_exhaustion(await get_list(client, list_id), before, after)

    # The rest: exhausted, so no estimate.
    await claim_batch(client, list_id, [f"rest-{n}" for n in range(14)])
    done = await get_list(client, list_id)
    assert done["codes"]["available"] == 0
    assert done["utilization"] == 1.0
    assert done["claim_rate"] == pytest.approx(20 / 15, abs=0.001)
    assert done["estimated_exhaustion_at"] is None
    assert_balanced(done)


async def test_utilization_counts_withdrawn_codes_as_uploaded_but_not_distributed(
    client: Client,
) -> None:
    list_id = await list_with_codes(client, make_codes(6))
    status, second = await upload(client, list_id, codes_csv(make_codes(4, prefix="W")))
    assert status == 201, second
    await claim_batch(client, list_id, ["u-1", "u-2", "u-3"])
    status, reply = await call(client, "DELETE", f"/v1/lists/{list_id}/uploads/{second['id']}")
    assert status == 200, reply

    listing = await get_list(client, list_id)

    assert (listing["codes"]["uploaded"], listing["codes"]["distributed"]) == (10, 3)
    assert listing["utilization"] == pytest.approx(3 / 10, abs=1e-6)
    assert_balanced(listing)


async def test_the_claim_rate_survives_a_restart(restartable: Restart) -> None:
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(30))
    other_id = await list_with_codes(client, make_codes(5, prefix="O"), tag="other")
    campaign_id = await create_campaign(client, [list_id])
    before = time.time()
    await claim_batch(client, list_id, [f"b-{n}" for n in range(5)])
    await claim(client, list_id, "single")
    assert (await reward(client, campaign_id, "r-1"))[0] == 201
    await claim(client, other_id, "elsewhere")
    ahead = await get_list(client, list_id)

    client = await restartable()
    listing = await get_list(client, list_id)
    after = time.time()

    assert listing["claim_rate"] == pytest.approx(7 / 15, abs=0.001)
    assert listing["claim_rate"] == ahead["claim_rate"]
    assert listing["utilization"] == pytest.approx(7 / 30, abs=1e-6)
    assert_exhaustion(listing, before, after)
    assert (await get_list(client, other_id))["claim_rate"] == pytest.approx(1 / 15, abs=0.001)
    # Claims after the restart add to the rebuilt window.
    await claim(client, list_id, "after")
    assert (await get_list(client, list_id))["claim_rate"] == pytest.approx(8 / 15, abs=0.001)


def minute_start() -> float:
    return float(int(time.time()) // 60 * 60)


async def test_claims_drop_out_of_the_rate_once_older_than_the_window_also_after_a_restart(
    restartable: Restart, monkeypatch: pytest.MonkeyPatch
) -> None:
    instant = freeze(monkeypatch, minute_start() + 10)
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(20))
    await claim_batch(client, list_id, ["u-1", "u-2", "u-3"])
    await claim(client, list_id, "u-4")

    listing = await get_list(client, list_id)
    assert listing["claim_rate"] == pytest.approx(4 / 15, abs=0.001)
    # 16 codes at 4/15 a minute last an hour: exact, the clock being still.
    assert listing["estimated_exhaustion_at"] == rfc3339(instant[0] + HOUR)

    instant[0] += 10 * 60
    client = await restartable()
    listing = await get_list(client, list_id)
    assert listing["claim_rate"] == pytest.approx(4 / 15, abs=0.001)
    assert listing["estimated_exhaustion_at"] == rfc3339(instant[0] + HOUR)

    instant[0] += 7 * 60  # 17 minutes after the claims
    listing = await get_list(client, list_id)
    assert (listing["claim_rate"], listing["estimated_exhaustion_at"]) == (0.0, None)
    assert listing["utilization"] == pytest.approx(4 / 20)
    status, stats = await call(client, "GET", "/v1/stats")
    assert status == 200, stats
    assert stats["claim_rate"] == 0.0
    samples = await scrape(client)
    labels = of_list(listing)
    assert value(samples, "voucherd_list_claims_per_minute", **labels) == 0.0
    assert value(samples, "voucherd_list_exhaustion_seconds", **labels) is None

    client = await restartable()
    assert (await get_list(client, list_id))["claim_rate"] == 0.0
    await claim(client, list_id, "u-5")
    assert (await get_list(client, list_id))["claim_rate"] == pytest.approx(1 / 15, abs=0.001)


async def test_a_claim_fourteen_and_a_half_minutes_old_still_counts_toward_the_rate(
    restartable: Restart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Over the last 15 minutes": a claim made 14.5 minutes ago is inside the window, however
    the minutes fall."""
    instant = freeze(monkeypatch, minute_start() + 50)
    client = await restartable()
    list_id = await list_with_codes(client, make_codes(20))
    await claim_batch(client, list_id, ["u-1", "u-2", "u-3"])

    instant[0] += 14 * 60 + 30
    live = (await get_list(client, list_id))["claim_rate"]
    client = await restartable()
    recovered = (await get_list(client, list_id))["claim_rate"]

    assert (live, recovered) == (pytest.approx(3 / 15, abs=0.001),) * 2


# -- GET /v1/stats -----------------------------------------------------------------------------


async def test_stats_add_up_across_lists_of_two_partners_in_every_status(client: Client) -> None:
    # Puma: active (10 codes, 3 claimed), paused (5, 1 claimed), archived (4, none claimed).
    active = await list_with_codes(client, make_codes(10, "A"), tag="active")
    await claim_batch(client, active, ["u-1", "u-2", "u-3"])
    paused = await list_with_codes(client, make_codes(5, "P"), tag="paused")
    await claim(client, paused, "u-1")
    await act(client, f"/v1/lists/{paused}/pause")
    archived = await list_with_codes(client, make_codes(4, "R"), tag="archived")
    await act(client, f"/v1/lists/{archived}/archive")
    # Nike: active (6 codes, 2 claimed, 3 more withdrawn), expired (no codes).
    nike = await list_with_codes(client, make_codes(6, "N"), partner="Nike", tag="active")
    status, extra = await upload(client, nike, codes_csv(make_codes(3, "X")))
    assert status == 201, extra
    status, reply = await call(client, "DELETE", f"/v1/lists/{nike}/uploads/{extra['id']}")
    assert status == 200, reply
    await claim_batch(client, nike, ["u-1", "u-2"])
    await create_list(client, partner="Nike", tag="expired", expires_at=PAST)

    status, stats = await call(client, "GET", "/v1/stats")

    assert status == 200, stats
    assert set(stats) == {"lists", "codes", "utilization", "claim_rate", "partners"}
    assert stats["lists"] == {"total": 5, "active": 2, "paused": 1, "expired": 1, "archived": 1}
    assert stats["codes"] == {
        "uploaded": 10 + 5 + 4 + 9,
        "available": 7 + 4 + 4 + 4,
        "distributed": 3 + 1 + 2,
        "withdrawn": 3,
    }
    assert stats["utilization"] == pytest.approx(6 / 28, abs=1e-6)
    assert stats["claim_rate"] == pytest.approx(6 / 15, abs=0.001)

    # Partners in name order.
    nike_stats, puma = stats["partners"]
    assert puma == {
        "partner": "Puma",
        "lists": {"total": 3, "active": 1, "paused": 1, "expired": 0, "archived": 1},
        "codes": {"uploaded": 19, "available": 15, "distributed": 4, "withdrawn": 0},
        "utilization": pytest.approx(4 / 19, abs=1e-6),
        "claim_rate": pytest.approx(4 / 15, abs=0.001),
    }
    assert nike_stats == {
        "partner": "Nike",
        "lists": {"total": 2, "active": 1, "paused": 0, "expired": 1, "archived": 0},
        "codes": {"uploaded": 9, "available": 4, "distributed": 2, "withdrawn": 3},
        "utilization": pytest.approx(2 / 9, abs=1e-6),
        "claim_rate": pytest.approx(2 / 15, abs=0.001),
    }

    # The totals are the sums of the lists, and of the partners.
    lists = await all_lists(client)
    for state in ("uploaded", "available", "distributed", "withdrawn"):
        assert stats["codes"][state] == sum(found["codes"][state] for found in lists)
        assert stats["codes"][state] == puma["codes"][state] + nike_stats["codes"][state]
    for status_name in ("total", "active", "paused", "expired", "archived"):
        assert (
            stats["lists"][status_name]
            == puma["lists"][status_name] + nike_stats["lists"][status_name]
        )


async def test_stats_of_a_server_without_lists_are_zero(client: Client) -> None:
    status, stats = await call(client, "GET", "/v1/stats")

    assert status == 200, stats
    assert stats == {
        "lists": {"total": 0, "active": 0, "paused": 0, "expired": 0, "archived": 0},
        "codes": {"uploaded": 0, "available": 0, "distributed": 0, "withdrawn": 0},
        "utilization": 0.0,
        "claim_rate": 0.0,
        "partners": [],
    }


# -- GET /metrics ------------------------------------------------------------------------------


async def test_a_lists_code_series_match_its_counts_and_the_low_stock_flag_flips(
    client: Client,
) -> None:
    listing = await create_list(client, low_stock_threshold=3, expires_at=in_(2 * DAY))
    list_id = listing["id"]
    labels = of_list(listing)

    async def series() -> tuple[dict[str, float | None], float | None]:
        samples = await scrape(client)
        codes = {
            state: value(samples, "voucherd_list_codes", **labels, state=state)
            for state in ("uploaded", "available", "distributed", "withdrawn")
        }
        return codes, value(samples, "voucherd_list_low_stock", **labels)

    async def matches() -> float | None:
        codes, low = await series()
        shown = (await get_list(client, list_id))["codes"]
        assert codes == shown, (codes, shown)
        return low

    # Empty: nothing available, so at or below any threshold.
    assert await matches() == 1.0
    status, first = await upload(client, list_id, codes_csv(make_codes(10)))
    assert status == 201, first
    status, second = await upload(client, list_id, codes_csv(make_codes(2, prefix="W")))
    assert status == 201, second
    assert await matches() == 0.0
    await claim_batch(client, list_id, [f"u-{n}" for n in range(6)])
    assert await matches() == 0.0  # 6 available
    status, reply = await call(client, "DELETE", f"/v1/lists/{list_id}/uploads/{second['id']}")
    assert status == 200, reply
    assert await matches() == 0.0  # 4 available
    await claim(client, list_id, "u-6")
    assert await matches() == 1.0  # 3 available: at the threshold
    assert (await series())[0] == {
        "uploaded": 12,
        "available": 3,
        "distributed": 7,
        "withdrawn": 2,
    }
    status, reply = await upload(client, list_id, codes_csv(make_codes(5, prefix="T")))
    assert status == 201, reply
    assert await matches() == 0.0  # 8 available: above it again

    samples = await scrape(client)
    assert value(samples, "voucherd_list_low_stock_threshold", **labels) == 3.0
    expiry = value(samples, "voucherd_list_expiry_seconds", **labels)
    assert expiry is not None
    assert 2 * DAY - 60 <= expiry <= 2 * DAY
    assert value(samples, "voucherd_list_expiry_warning_seconds", **labels) == 3 * DAY


async def test_an_expired_lists_expiry_seconds_are_negative_and_no_warning_is_zero(
    client: Client,
) -> None:
    expired = await create_list(client, tag="expired", expires_at=PAST, expiry_warning=None)

    samples = await scrape(client)

    seconds = value(samples, "voucherd_list_expiry_seconds", **of_list(expired))
    assert seconds is not None
    assert seconds < -DAY
    assert value(samples, "voucherd_list_expiry_warning_seconds", **of_list(expired)) == 0.0


async def test_running_campaigns_mapping_a_list_are_counted_and_a_paused_one_is_not(
    client: Client,
) -> None:
    listing = await get_list(client, await list_with_codes(client, make_codes(5)))
    other = await get_list(client, await list_with_codes(client, make_codes(5, "O"), tag="o"))

    async def running() -> tuple[float | None, float | None]:
        samples = await scrape(client)
        return (
            value(samples, "voucherd_list_running_campaigns", **of_list(listing)),
            value(samples, "voucherd_list_running_campaigns", **of_list(other)),
        )

    assert await running() == (0.0, 0.0)
    first = await create_campaign(client, [listing["id"]])
    assert await running() == (1.0, 0.0)
    second = await create_campaign(client, [listing["id"], other["id"]], name="Both")
    assert await running() == (2.0, 1.0)

    await act(client, f"/v1/campaigns/{first}/pause")
    assert await running() == (1.0, 1.0)
    await act(client, f"/v1/campaigns/{second}/pause")
    assert await running() == (0.0, 0.0)
    await act(client, f"/v1/campaigns/{first}/resume")
    assert await running() == (1.0, 0.0)
    await act(client, f"/v1/campaigns/{first}/end")
    assert await running() == (0.0, 0.0)
    # A campaign that has not started yet is not running.
    status, scheduled = await call(
        client,
        "POST",
        "/v1/campaigns",
        {"name": "Later", "lists": [listing["id"]], "starts_at": in_(DAY)},
    )
    assert (status, scheduled["status"]) == (201, "scheduled"), scheduled
    assert await running() == (0.0, 0.0)


async def test_an_archived_lists_series_go_away_and_the_others_stay(client: Client) -> None:
    kept = await list_with_codes(client, make_codes(5, "K"), tag="kept")
    gone = await list_with_codes(client, make_codes(5, "G"), tag="gone")
    await claim(client, kept, "u-1")
    await claim(client, gone, "u-1")
    samples = await scrape(client)
    for list_id in (kept, gone):
        names = {sample.name for sample in list_series(samples, list_id)}
        assert names == set(PER_LIST), names

    await act(client, f"/v1/lists/{gone}/archive")

    samples = await scrape(client)
    assert list_series(samples, gone) == []
    assert {sample.name for sample in list_series(samples, kept)} == set(PER_LIST)


async def test_every_lists_series_view_and_tally_are_made_once_a_piece_at_a_time(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/metrics, /v1/lists and /v1/stats go through the lists a few at a time: whatever the
    piece, each list's series, view and tally appear once and in full, and in /metrics a
    partner or tag holding quotes and backslashes (one before an n, which must not come back
    as a line break) comes back as it was."""
    monkeypatch.setattr(server_pieces, "PIECE", 2)
    odd = await create_list(client, partner='Say "hi" \\ there', tag='a\\n"b')
    made = [await create_list(client, tag=f"many-{n}") for n in range(4)]
    archived = await create_list(client, tag="archived")
    await act(client, f"/v1/lists/{archived['id']}/archive")
    claimed = await list_with_codes(client, make_codes(5), tag="claimed")
    await claim(client, claimed, "u-1")

    samples = await scrape(client)

    # Without claims a list has no exhaustion estimate; its codes are four series, by state.
    unclaimed = sorted([*[PER_LIST[0]] * 4, *PER_LIST[1:-1]])
    for listing in [odd, *made]:
        assert sorted(s.name for s in list_series(samples, listing["id"])) == unclaimed
    assert sorted(s.name for s in list_series(samples, claimed)) == sorted(
        [*unclaimed, PER_LIST[-1]]
    )
    assert list_series(samples, archived["id"]) == []
    assert value(samples, "voucherd_list_low_stock_threshold", **of_list(odd)) is not None
    assert value(samples, "voucherd_list_codes", **of_list(odd), state="available") == 0.0

    status, found = await call(client, "GET", "/v1/lists")
    assert status == 200, found
    ids = [odd["id"], *(listing["id"] for listing in made), archived["id"], claimed]
    assert [listing["id"] for listing in found["lists"]] == ids
    status, stats = await call(client, "GET", "/v1/stats")
    assert status == 200, stats
    assert (stats["lists"]["total"], stats["lists"]["archived"]) == (7, 1)
    assert (stats["codes"]["uploaded"], stats["codes"]["distributed"]) == (5, 1)


async def test_the_exhaustion_estimate_appears_once_a_list_is_claimed_from(client: Client) -> None:
    listing = await get_list(client, await list_with_codes(client, make_codes(10)))
    labels = of_list(listing)
    samples = await scrape(client)
    assert value(samples, "voucherd_list_exhaustion_seconds", **labels) is None
    assert value(samples, "voucherd_list_claims_per_minute", **labels) == 0.0

    await claim_batch(client, listing["id"], ["u-1", "u-2"])
    samples = await scrape(client)

    rate = value(samples, "voucherd_list_claims_per_minute", **labels)
    assert rate == pytest.approx(2 / 15)
    seconds = value(samples, "voucherd_list_exhaustion_seconds", **labels)
    assert seconds is not None
    expected = 8 / (2 / 15) * 60
    assert expected - 10 <= seconds <= expected

    # Exhausted: no estimate.
    await claim_batch(client, listing["id"], [f"rest-{n}" for n in range(8)])
    samples = await scrape(client)
    assert value(samples, "voucherd_list_exhaustion_seconds", **labels) is None


async def test_rewards_are_counted_by_result_and_events_by_type(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(10))
    campaign_id = await create_campaign(client, [list_id], max_codes_per_campaign=1)
    start = await scrape(client)
    events_before = await all_events(client)

    assert (await reward(client, campaign_id, "u-1"))[0] == 201
    assert (await reward(client, campaign_id, "u-1"))[0] == 200
    status, refused = await reward(client, campaign_id, "u-2")
    assert (status, refused) == (200, {"rewarded": False, "reason": "campaign_limit_reached"})
    await claim(client, list_id, "direct-1")
    await claim(client, list_id, "direct-2")
    # Batches: a slice's events are one run, counted as its events.
    await claim_batch(client, list_id, ["b-1", "b-2", "b-3"])
    await claim_batch(client, list_id, ["b-1", "b-4"])

    end = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return count_of(end, name, **labels) - count_of(start, name, **labels)

    assert grew("voucherd_rewards_total", result="rewarded") == 1
    assert grew("voucherd_rewards_total", result="repeated") == 1
    assert grew("voucherd_rewards_total", result="campaign_limit_reached") == 1
    assert grew("voucherd_claims_total", result="created") == 6
    assert grew("voucherd_claims_total", result="repeated") == 1
    written = (await all_events(client))[len(events_before) :]
    assert [event["type"] for event in written] == ["voucher.rewarded"] * 7
    assert grew("voucherd_events_total", type="voucher.rewarded") == 7
    # Every event written since the start is counted under its type.
    every = await all_events(client)
    for type_ in {event["type"] for event in every}:
        assert count_of(end, "voucherd_events_total", type=type_) == sum(
            1 for event in every if event["type"] == type_
        ), type_
    reward_count = value(end, "voucherd_reward_duration_seconds_count")
    assert reward_count is not None
    assert reward_count >= 3


async def test_uploads_are_counted_by_status_and_codes_by_acceptance_and_reason(
    client: Client,
) -> None:
    created = await create_list(client)
    start = await scrape(client)

    status, reply = await upload(client, created["id"], "GOOD0001\nGOOD0002\nGOOD0001\nbad code\n")
    assert status == 201, reply
    assert reply["status"] == "completed"
    assert reply["rejected"] >= 2
    status, empty = await upload(client, created["id"], "")
    assert empty["status"] == "failed", (status, empty)

    end = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return count_of(end, name, **labels) - count_of(start, name, **labels)

    assert grew("voucherd_uploads_total", status="completed") == 1
    assert grew("voucherd_uploads_total", status="failed") == 1
    assert grew("voucherd_codes_uploaded_total") == reply["accepted"] == 2
    for reason, count in reply["errors"].items():
        assert grew("voucherd_codes_rejected_total", reason=reason) == count, reason


async def test_websocket_subscribers_are_counted_while_they_are_open(client: Client) -> None:
    async def subscribers() -> float | None:
        return value(await scrape(client), "voucherd_websocket_subscribers")

    async def becomes(expected: float) -> bool:
        return await subscribers() == expected

    assert await subscribers() == 0.0
    first = await client.ws_connect("/v1/events")
    await poll(lambda: becomes(1.0), "one subscriber")
    second = await client.ws_connect("/v1/events", params={"since": "0"})
    await poll(lambda: becomes(2.0), "two subscribers")

    await first.close()
    await poll(lambda: becomes(1.0), "one subscriber left")
    await second.close()
    await poll(lambda: becomes(0.0), "no subscriber left")
    assert value(await scrape(client), "voucherd_events_buffered") == 0.0


async def test_the_event_loop_lag_is_sampled_all_the_time(client: Client) -> None:
    async def lag_count() -> float:
        return value(await scrape(client), "voucherd_event_loop_lag_seconds_count") or 0.0

    seen = await lag_count()

    async def grew() -> bool:
        return await lag_count() > seen

    await poll(grew, "a loop lag sample")
    seen = await lag_count()
    await poll(grew, "another loop lag sample")


LATENCY_BOUNDS = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
]  # fmt: skip


def buckets(samples: list[Sample], name: str) -> list[tuple[float, float]]:
    return [
        (float(sample.labels["le"]), sample.value)
        for sample in samples
        if sample.name == f"{name}_bucket"
    ]


@pytest.mark.parametrize(
    "name",
    [
        "voucherd_claim_duration_seconds",
        "voucherd_journal_commit_duration_seconds",
        "voucherd_reward_duration_seconds",
        "voucherd_event_loop_lag_seconds",
    ],
)
async def test_latency_histograms_have_buckets_from_a_quarter_millisecond_to_2_5_seconds(
    client: Client, name: str
) -> None:
    list_id = await list_with_codes(client, make_codes(3))
    campaign_id = await create_campaign(client, [list_id])
    await claim(client, list_id, "u-1")
    assert (await reward(client, campaign_id, "u-2"))[0] == 201

    async def observed() -> list[Sample]:
        samples = await scrape(client)
        return samples if (value(samples, f"{name}_count") or 0) >= 1 else []

    samples = await poll(observed, f"an observation of {name}")

    found = buckets(samples, name)
    assert [bound for bound, _ in found] == [*LATENCY_BOUNDS, float("inf")]
    counts = [count for _, count in found]
    assert counts == sorted(counts), counts
    assert counts[-1] == value(samples, f"{name}_count")
    total = value(samples, f"{name}_sum")
    assert total is not None
    assert total >= 0


async def test_journal_commits_are_counted_by_the_records_they_hold(client: Client) -> None:
    list_id = await list_with_codes(client, make_codes(5))
    await claim_batch(client, list_id, ["u-1", "u-2", "u-3"])

    samples = await scrape(client)

    found = buckets(samples, "voucherd_journal_records_per_commit")
    assert found[0][0] == 1
    assert found[-1][0] == float("inf")
    commits = value(samples, "voucherd_journal_records_per_commit_count")
    assert commits is not None
    assert commits >= 1
    assert commits == value(samples, "voucherd_journal_commit_duration_seconds_count")
    assert value(samples, "voucherd_mailbox_depth", kind="list") == 0.0
    assert value(samples, "voucherd_mailbox_depth", kind="campaign") == 0.0
