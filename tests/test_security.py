"""Security: every operation of the OpenAPI document checks its key and its scope; keys are
compared in constant time and kept hashed; codes and keys stay out of logs, error messages and
metrics; a list's codes are seen only through the admin export and by the user who holds them.

tests/test_auth.py walks the route table; the walk here goes by the OpenAPI document, so an
operation the document promises is checked as documented. SECURITY.md explains the model.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import FUTURE, Client, ServerProcess, list_body, nonzero

from voucherd.server.openapi import openapi_document
from voucherd.settings import ApiKey, Scope, Settings, hash_key

ClientFactory = Callable[[Settings], Awaitable[Client]]

ADMIN, ISSUE, READ = Scope.ADMIN, Scope.ISSUE, Scope.READ
SCOPE_SETS = [
    frozenset(combination)
    for size in (1, 2, 3)
    for combination in itertools.combinations(sorted(Scope), size)
]
# Fresh keys for each run, so a key found in a log or a reply can only have come from here.
PLAIN = {scopes: f"vd_{secrets.token_urlsafe(24)}" for scopes in SCOPE_SETS}
KEYS = tuple(
    ApiKey(name=f"key-{'-'.join(sorted(scopes))}", sha256=hash_key(PLAIN[scopes]), scopes=scopes)
    for scopes in SCOPE_SETS
)
EVERY_SCOPE = PLAIN[frozenset(Scope)]
OPEN_OPERATIONS = {"GET /healthz", "GET /readyz", "GET /v1/openapi.json"}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def grants(scopes: frozenset[Scope], scope: Scope) -> bool:
    """What the server promises: a key's own scopes, and admin may also read."""
    return scope in scopes or (scope is READ and ADMIN in scopes)


def new_code() -> str:
    return f"Q{secrets.token_hex(7).upper()}"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    scope: Scope | None

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def document_operations(document: dict[str, Any]) -> list[Operation]:
    found = []
    for path, item in document["paths"].items():
        for method, spec in item.items():
            if method not in METHODS:
                continue
            scope = spec.get("x-scope")
            found.append(Operation(method.upper(), path, Scope(scope) if scope else None))
    return found


OPERATIONS = document_operations(openapi_document())


# -- the OpenAPI walk: 401 without a valid key, 403 without the scope --------------------------


@dataclass
class Objects:
    """Objects for the path parameters to name, so a refusal is not just a 404."""

    list_id: int
    upload_id: int
    campaign_id: int
    user_id: str = "u-1"

    def fill(self, path: str) -> str:
        return (
            path.replace("{list_id}", str(self.list_id))
            .replace("{upload_id}", str(self.upload_id))
            .replace("{campaign_id}", str(self.campaign_id))
            .replace("{user_id}", self.user_id)
        )


async def make_objects(client: Client) -> Objects:
    key = bearer(EVERY_SCOPE)
    response = await client.post("/v1/lists", json=list_body(), headers=key)
    assert response.status == 201, await response.text()
    list_id = (await response.json())["id"]
    response = await client.post(
        f"/v1/lists/{list_id}/uploads",
        data="A1\nA2\nA3\nA3\n",
        headers={**key, "Content-Type": "text/csv"},
    )
    assert response.status == 201, await response.text()
    upload_id = (await response.json())["id"]
    response = await client.post(
        "/v1/campaigns", json={"name": "walk", "lists": [list_id]}, headers=key
    )
    assert response.status == 201, await response.text()
    campaign_id = (await response.json())["id"]
    response = await client.post(
        f"/v1/lists/{list_id}/claims", json={"user_id": "u-1"}, headers=key
    )
    assert response.status == 201, await response.text()
    return Objects(list_id, upload_id, campaign_id)


async def snapshot(client: Client, objects: Objects) -> list[Any]:
    """What a refused request must not change: lists, uploads, campaigns, claims, events."""
    key = bearer(EVERY_SCOPE)
    state = []
    for path in (
        "/v1/lists",
        f"/v1/lists/{objects.list_id}/uploads",
        "/v1/campaigns",
        "/v1/users/u-1/vouchers",
        "/v1/events?since=0&limit=10000",
    ):
        response = await client.get(path, headers=key)
        assert response.status == 200, await response.text()
        state.append(steady(await response.json()))
    return state


def steady(value: Any) -> Any:
    """The value without the fields that move with the clock alone."""
    if isinstance(value, dict):
        return {k: steady(v) for k, v in value.items() if k != "estimated_exhaustion_at"}
    if isinstance(value, list):
        return [steady(item) for item in value]
    return value


async def send(
    client: Client, operation: Operation, objects: Objects, headers: dict[str, str]
) -> tuple[int, str, str]:
    """One request to the operation: (status, content type, body)."""
    kwargs: dict[str, Any] = {"headers": dict(headers)}
    if operation.label == "POST /v1/lists/{list_id}/uploads":
        kwargs["data"] = "B1\nB2\n"
        kwargs["headers"]["Content-Type"] = "text/csv"
    elif operation.method in ("POST", "PATCH"):
        kwargs["json"] = {"user_id": "u-2", "user_ids": ["u-3"], "name": "x", "template": "x"}
    response = await client.request(operation.method, objects.fill(operation.path), **kwargs)
    return response.status, response.content_type, await response.text()


@pytest.fixture
async def keyed(start_client: ClientFactory, tmp_path: Path) -> Client:
    return await start_client(Settings(data_dir=tmp_path / "data", keys=KEYS))


async def test_the_served_document_is_the_one_walked(keyed: Client) -> None:
    response = await keyed.get("/v1/openapi.json")
    assert response.status == 200
    assert document_operations(await response.json()) == OPERATIONS


def test_every_operation_but_the_probes_and_the_document_needs_a_scope() -> None:
    document = openapi_document()
    assert document["security"] == [{"bearerAuth": []}]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert {op.label for op in OPERATIONS if op.scope is None} == OPEN_OPERATIONS
    for operation in OPERATIONS:
        spec = document["paths"][operation.path][operation.method.lower()]
        if operation.scope is None:
            assert spec["security"] == [], operation.label
        else:
            # No operation opts out of the document-wide bearer requirement.
            assert "security" not in spec, operation.label
            assert {"401", "403"} <= set(spec["responses"]), operation.label


# Wrong keys: one character off a real key, the same length as one, longer, shorter, and
# headers that carry no key at all.
WRONG_AUTHORIZATIONS = [
    f"Bearer {EVERY_SCOPE[:-1]}{'A' if EVERY_SCOPE[-1] != 'A' else 'B'}",
    f"Bearer vd_{secrets.token_urlsafe(24)}",
    f"Bearer {EVERY_SCOPE}{EVERY_SCOPE}",
    f"Bearer {EVERY_SCOPE[:10]}",
    f"Bearer {hash_key(EVERY_SCOPE)}",
    f"Basic {EVERY_SCOPE}",
    EVERY_SCOPE,
    "Bearer ",
]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
async def test_each_operation_refuses_what_its_scope_refuses(
    keyed: Client, operation: Operation
) -> None:
    objects = await make_objects(keyed)
    if operation.scope is None:
        for headers in ({}, {"Authorization": WRONG_AUTHORIZATIONS[0]}):
            status, _, body = await send(keyed, operation, objects, headers)
            assert status == 200, body
        return
    before = await snapshot(keyed, objects)
    problems = []

    async def expect(headers: dict[str, str], status: int, code: str, presented: str) -> None:
        got, content_type, body = await send(keyed, operation, objects, headers)
        if got != status or content_type != "application/json":
            problems.append(f"{headers}: {got} {body[:200]}")
        elif json.loads(body)["error"]["code"] != code:
            problems.append(f"{headers}: {body[:200]}")
        if len(presented.strip()) >= 8 and presented.strip() in body:
            problems.append(f"{headers}: the reply echoes the key: {body[:200]}")

    await expect({}, 401, "unauthorized", "")
    for authorization in WRONG_AUTHORIZATIONS:
        presented = authorization.partition(" ")[2] or authorization
        await expect({"Authorization": authorization}, 401, "unauthorized", presented)
    for scopes in SCOPE_SETS:
        if not grants(scopes, operation.scope):
            await expect(bearer(PLAIN[scopes]), 403, "forbidden", PLAIN[scopes])
    # Nothing refused left a trace: no object, claim or event changed.
    assert await snapshot(keyed, objects) == before
    for scopes in SCOPE_SETS:
        if grants(scopes, operation.scope):
            status, _, body = await send(keyed, operation, objects, bearer(PLAIN[scopes]))
            if status in (401, 403):
                problems.append(f"{sorted(scopes)}: {status} {body[:200]}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", sorted({op.path for op in OPERATIONS if op.scope is not None}))
async def test_a_method_the_document_does_not_list_gets_nothing_without_a_key(
    keyed: Client, path: str
) -> None:
    objects = await make_objects(keyed)
    listed = {op.method for op in OPERATIONS if op.path == path}
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
        if method in listed:
            continue
        response = await keyed.request(method, objects.fill(path))
        assert response.status == 405, f"{method} {path}: {response.status}"


async def test_the_event_stream_upgrade_checks_the_key_and_the_scope(keyed: Client) -> None:
    for headers, status in (
        ({}, 401),
        ({"Authorization": WRONG_AUTHORIZATIONS[0]}, 401),
        (bearer(PLAIN[frozenset({ISSUE})]), 403),
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await keyed.ws_connect("/v1/events", headers=headers)
        assert refused.value.status == status
    for scopes in (frozenset({READ}), frozenset({ADMIN})):
        ws = await keyed.ws_connect("/v1/events", headers=bearer(PLAIN[scopes]))
        await ws.close()


# -- constant-time comparison ------------------------------------------------------------------


async def test_every_key_is_compared_in_constant_time(
    keyed: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The presented key is hashed, then compared with every configured digest through
    hmac.compare_digest, matching or not: the work does not depend on which key (if any)
    matches, nor on how much of it is right, nor on its length."""
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: str, b: str) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    presented = [
        PLAIN[SCOPE_SETS[0]],  # the first key configured
        EVERY_SCOPE,  # the last
        WRONG_AUTHORIZATIONS[0].removeprefix("Bearer "),  # one character off, same length
        "x",  # much shorter
        "x" * 5000,  # much longer
    ]
    for key in presented:
        compared.clear()
        response = await keyed.get("/v1/lists", headers=bearer(key))
        assert response.status in (200, 401, 403)
        assert compared == [(64, 64)] * len(KEYS), key[:20]


async def test_a_wrong_key_of_any_length_gets_the_same_reply(keyed: Client) -> None:
    replies = set()
    for key in ("x", EVERY_SCOPE[:-1] + "!", "x" * len(EVERY_SCOPE), "x" * 4000):
        response = await keyed.get("/v1/lists", headers=bearer(key))
        assert response.status == 401
        replies.add(await response.text())
    assert len(replies) == 1, replies


# -- voucherd keys create ----------------------------------------------------------------------


def voucherd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("VOUCHERD_")}
    return subprocess.run(
        [sys.executable, "-m", "voucherd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def create_key(name: str, *scopes: str) -> tuple[str, str, str]:
    """`voucherd keys create`: (the plain key, the config lines printed, all it printed)."""
    result = voucherd("keys", "create", name, *itertools.chain(*(("--scope", s) for s in scopes)))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    found = re.search(r"API key[^:]*: (\S+)", result.stdout)
    assert found is not None, result.stdout
    return found.group(1), result.stdout[result.stdout.index("[keys.") :], result.stdout


def test_keys_create_prints_the_key_once_and_a_config_entry_holding_only_its_digest() -> None:
    key, lines, printed = create_key("ops", "admin", "read")
    assert printed.count(key) == 1
    assert key not in lines
    entry = tomllib.loads(lines)["keys"]["ops"]
    assert entry == {"sha256": hash_key(key), "scopes": ["admin", "read"]}
    # 32 random bytes: guessing one is not a threat.
    assert len(key) >= 40


# -- a full run with DEBUG logs: codes and keys never logged, echoed or labelled ---------------


@dataclass
class Reply:
    request: str
    status: int
    body: str


@dataclass
class FullRun:
    log: str = ""
    metrics: str = ""
    # Every code sent to the server or handed out by it, accepted or rejected.
    codes: set[str] = field(default_factory=set)
    # The codes of the rejected rows of each upload, by (list id, upload id).
    rejected: dict[tuple[int, int], set[str]] = field(default_factory=dict)
    held: dict[str, set[str]] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    # Every error reply, and every reply to an upload.
    errors: list[Reply] = field(default_factory=list)
    uploads: list[Reply] = field(default_factory=list)
    # The answers of every GET operation of the document, by operation, after the run.
    reads: dict[str, list[Reply]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)


class Caller:
    def __init__(self, session: aiohttp.ClientSession, url: str, run: FullRun) -> None:
        self.session, self.url, self.run = session, url, run

    async def __call__(
        self, method: str, path: str, key: str, *, expect: int | None = None, **kwargs: Any
    ) -> Any:
        headers = {**kwargs.pop("headers", {}), **bearer(key)}
        async with self.session.request(
            method, self.url + path, headers=headers, **kwargs
        ) as response:
            body = await response.text()
        reply = Reply(f"{method} {path}", response.status, body)
        if response.status >= 400:
            self.run.errors.append(reply)
        if "/uploads" in path and method == "POST":
            self.run.uploads.append(reply)
        if expect is not None:
            assert response.status == expect, f"{method} {path}: {response.status} {body[:300]}"
        return json.loads(body) if response.content_type == "application/json" else body


def claim_code(reply: Any, run: FullRun, user: str) -> None:
    code = reply["claim"]["code"]
    run.codes.add(code)
    run.held.setdefault(user, set()).add(code)


async def exercise(url: str, keys: dict[str, str], run: FullRun) -> None:
    """Uploads, claims, batches, rewards, error cases and reads, as a deployment sees them."""
    admin, issue, read = keys["admin"], keys["issue"], keys["read"]
    async with aiohttp.ClientSession() as session:
        call = Caller(session, url, run)
        ws = await session.ws_connect(
            f"{url}/v1/events", params={"types": "voucher.rewarded"}, headers=bearer(read)
        )

        async def new_list(tag: str, partner: str = "Acme", **extra: Any) -> int:
            body = {"partner": partner, "tag": tag, "name": tag, "expires_at": FUTURE} | extra
            list_id: int = (await call("POST", "/v1/lists", admin, json=body, expect=201))["id"]
            return list_id

        async def upload(list_id: int, data: bytes | str, **kwargs: Any) -> Any:
            headers = {"Content-Type": "text/csv"}
            return await call(
                "POST", f"/v1/lists/{list_id}/uploads", admin, data=data, headers=headers, **kwargs
            )

        one, two = await new_list("one"), await new_list("two")
        first = [new_code() for _ in range(150)]
        run.codes.update(first)
        reply = await upload(one, "code\n" + "\n".join(first) + "\n", expect=201)
        assert reply["accepted"] == 150, reply

        # Every kind of rejected row: each is a code of some kind, and none may leak.
        twice, spaced, long, accented = new_code(), new_code(), new_code() * 5, new_code()
        rejects = [first[0], twice, f"{spaced[:6]} {spaced[6:]}", long, f"{accented}é"]
        more = [new_code() for _ in range(20)]
        run.codes.update([twice, spaced, long, accented, *more])
        body = "\n".join([first[0], twice, twice, rejects[2], long, *more]).encode()
        reply = await upload(one, body + f"\n{accented}é\n".encode(), expect=201)
        assert reply["rejected"] == 5, reply
        run.rejected[(one, reply["id"])] = {first[0], twice, rejects[2], long, f"{accented}é"}

        # A multipart upload to a list of the same partner: a duplicate across lists.
        others = [new_code() for _ in range(100)]
        run.codes.update(others)
        form = aiohttp.FormData()
        form.add_field("file", "\n".join([first[1], *others]), filename="two.csv")
        reply = await call("POST", f"/v1/lists/{two}/uploads", admin, data=form, expect=201)
        assert nonzero(reply["errors"]) == {"duplicate_in_partner": 1}, reply
        multipart_upload = reply["id"]
        run.rejected[(two, reply["id"])] = {first[1]}

        # Files that fail whole: two columns, a NUL byte, a line too long.
        pair, nul, wide = new_code(), new_code(), new_code()
        run.codes.update([pair, nul, wide])
        await upload(two, f"{pair},{new_code()}\n")
        await upload(two, f"{nul}\n{nul}\x00\n")
        await upload(two, f"{wide}\n{wide * 400}\n")

        single = await new_list("single", partner="Solo", duplicate_scope="list")
        last = new_code()
        run.codes.add(last)
        await upload(single, last + "\n", expect=201)
        paused = await new_list("paused", partner="Solo")
        await upload(paused, new_code() + "\n", expect=201)
        await call("POST", f"/v1/lists/{paused}/pause", admin, expect=200)

        # Claims: fresh, repeated, with idempotency keys, in batches, refused.
        for index in range(30):
            user = f"user-{index}"
            path = f"/v1/lists/{one}/claims"
            claim_code(
                await call("POST", path, issue, json={"user_id": user}, expect=201), run, user
            )
            if index % 3 == 0:
                await call("POST", path, issue, json={"user_id": user}, expect=200)
            if index % 5 == 0:
                keyed = {"user_id": user, "idempotency_key": f"order-{index}", "metadata": {"a": 1}}
                claim_code(await call("POST", path, issue, json=keyed, expect=201), run, user)
        users = [f"batch-{index}" for index in range(40)]
        reply = await call(
            "POST",
            f"/v1/lists/{two}/claims/batch",
            issue,
            json={"user_ids": [*users, users[0]]},
            expect=200,
        )
        for claim in reply["claims"]:
            claim_code({"claim": claim}, run, claim["user_id"])
        reply = await call("POST", f"/v1/lists/{single}/claims", issue, json={"user_id": "solo"})
        claim_code(reply, run, "solo")
        await call(
            "POST", f"/v1/lists/{single}/claims", issue, json={"user_id": "late"}, expect=409
        )
        await call("POST", f"/v1/lists/{paused}/claims", issue, json={"user_id": "p"}, expect=409)
        await call("POST", "/v1/lists/99999/claims", issue, json={"user_id": last}, expect=404)

        # Bad bodies, each carrying codes where they do not belong.
        code = first[5]
        for bad in (
            code,
            json.dumps({"user_id": 42, "idempotency_key": code}),
            json.dumps({"user_id": "u", "metadata": code}),
            json.dumps({"user_id": f"{code}\n"}),
            json.dumps({"user_id": "x" * 300 + code}),
            json.dumps({"user_id": "u", "idempotency_key": code * 30}),
            json.dumps({"user_id": "u", "metadata": {"k": code * 400}}),
            json.dumps({"user_id": "u", "metadata": [code]}),
            '{"user_id": "' + code,
        ):
            headers = {"Content-Type": "application/json"}
            await call(
                "POST", f"/v1/lists/{one}/claims", issue, data=bad, headers=headers, expect=400
            )
        bad_batches: list[dict[str, Any]] = [{"user_ids": [code, 7]}, {"user_ids": code}]
        for bad_batch in bad_batches:
            await call("POST", f"/v1/lists/{one}/claims/batch", issue, json=bad_batch, expect=400)

        # A campaign whose message carries the code, rewards qualifying and not.
        campaign_body = {
            "name": "cashback",
            "lists": [one, two],
            "max_codes_per_user": 2,
            "qualification": {
                "event": "Charged",
                "where": [{"property": "amount", "op": "gte", "value": 100}],
            },
            "message_template": "Hi {{ Profile.user_id }}, use {{ Event.voucherCode }}",
        }
        reply = await call("POST", "/v1/campaigns", admin, json=campaign_body, expect=201)
        campaign = reply["id"]
        rewards = f"/v1/campaigns/{campaign}/rewards"
        for index in range(20):
            user = f"rewarded-{index}"
            event = {"name": "Charged", "properties": {"amount": 150}}
            reply = await call("POST", rewards, issue, json={"user_id": user, "event": event})
            assert reply["rewarded"], reply
            run.codes.add(reply["reward"]["code"])
            run.held.setdefault(user, set()).add(reply["reward"]["code"])
            await call("POST", rewards, issue, json={"user_id": user, "event": event}, expect=200)
        low = {"name": "Charged", "properties": {"amount": 50}}
        reply = await call("POST", rewards, issue, json={"user_id": "cheap", "event": low})
        assert reply == {"rewarded": False, "reason": "not_qualified"}
        for bad_reward in (
            {"user_id": "u", "event": {"name": f"{code}\x01"}},
            {"user_id": "u", "event": code},
            {"user_id": [code]},
        ):
            await call("POST", rewards, issue, json=bad_reward, expect=400)
        segment = [f"segment-{index}" for index in range(15)]
        segment_body = {"name": "segment", "lists": [two]}
        reply = await call("POST", "/v1/campaigns", admin, json=segment_body, expect=201)
        open_campaign = reply["id"]
        reply = await call(
            "POST",
            f"/v1/campaigns/{open_campaign}/rewards/batch",
            issue,
            json={"user_ids": segment},
            expect=200,
        )
        for result in reply["results"]:
            run.codes.add(result["reward"]["code"])
            run.held.setdefault(result["user_id"], set()).add(result["reward"]["code"])
        await call(
            "POST",
            "/v1/templates/render",
            admin,
            json={
                "template": "{{ Event.voucherCode | divided_by: 0 }}",
                "event": {"voucherCode": code},
            },
            expect=400,
        )

        # Keys that are wrong or lack the scope; one of them is a code.
        await call("GET", "/v1/lists", f"vd_{secrets.token_urlsafe(24)}", expect=401)
        await call("GET", "/v1/lists", code, expect=401)
        await call("POST", f"/v1/lists/{one}/claims", read, json={"user_id": "r"}, expect=403)
        await call("GET", f"/v1/lists/{one}/uploads/1/errors", read, expect=403)

        await call("DELETE", f"/v1/lists/{two}/uploads/{multipart_upload}", admin, expect=200)
        await call("POST", f"/v1/lists/{single}/archive", admin, expect=200)

        # The subscriber saw the codes handed out: the design of the reference product.
        while len(run.events) < 5:
            message = await ws.receive(timeout=10)
            assert message.type is aiohttp.WSMsgType.TEXT, message
            run.events.append(json.loads(message.data))
        await ws.close()

        await read_everything(call, run, keys["all"])
        run.metrics = await call("GET", "/metrics", read, expect=200)


async def read_everything(call: Caller, run: FullRun, key: str) -> None:
    """Every GET operation of the document, over every object there is, with every scope."""
    lists = (await call("GET", "/v1/lists", key, expect=200))["lists"]
    campaigns = (await call("GET", "/v1/campaigns", key, expect=200))["campaigns"]
    uploads = []
    for listing in lists:
        path = f"/v1/lists/{listing['id']}/uploads"
        uploads += [(listing["id"], u["id"]) for u in (await call("GET", path, key))["uploads"]]
    users = [*sorted(run.held), "nobody"]
    for operation in OPERATIONS:
        if operation.method != "GET":
            continue
        paths = {operation.path}
        if "{upload_id}" in operation.path:
            paths = {
                operation.path.replace("{list_id}", str(list_id)).replace(
                    "{upload_id}", str(upload)
                )
                for list_id, upload in uploads
            }
        elif "{list_id}" in operation.path:
            paths = {operation.path.replace("{list_id}", str(x["id"])) for x in lists}
        elif "{campaign_id}" in operation.path:
            paths = {operation.path.replace("{campaign_id}", str(x["id"])) for x in campaigns}
        elif "{user_id}" in operation.path:
            paths = {operation.path.replace("{user_id}", user) for user in users}
        elif operation.path == "/v1/events":
            paths = {"/v1/events?since=0&limit=10000"}
        replies = run.reads.setdefault(operation.label, [])
        for path in sorted(paths):
            async with call.session.get(call.url + path, headers=bearer(key)) as response:
                replies.append(Reply(f"GET {path}", response.status, await response.text()))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullRun]:
    base = tmp_path_factory.mktemp("full-run")
    keys, lines = {}, []
    # The admin key comes from `voucherd keys create`, as an operator would make it.
    keys["admin"], created, _ = create_key("ops", "admin")
    lines.append(created)
    for name, scopes in (("issue", ["issue"]), ("read", ["read"]), ("all", sorted(Scope))):
        keys[name] = f"vd_{secrets.token_urlsafe(32)}"
        digest = hash_key(keys[name])
        lines.append(f'[keys.{name}]\nsha256 = "{digest}"\nscopes = {json.dumps(scopes)}\n')
    config = base / "voucherd.toml"
    config.write_text("\n".join(lines))
    server = ServerProcess(base / "data", config=config, env={"VOUCHERD_LOG_LEVEL": "DEBUG"})
    run = FullRun(keys=set(keys.values()))
    try:
        server.start()
        asyncio.run(server.wait_ready())
        asyncio.run(exercise(server.url, keys, run))
        assert server.terminate() == 0, server.log()[-3000:]
        run.log = server.log()
        yield run
    finally:
        server.stop()


def found_in(text: str, secrets_: set[str]) -> list[str]:
    return sorted(secret for secret in secrets_ if secret in text)


def test_the_run_logged_at_debug_level_and_used_enough_codes(full_run: FullRun) -> None:
    assert " DEBUG " in full_run.log
    assert len(full_run.codes) > 250
    assert sum(len(codes) for codes in full_run.held.values()) > 100


def test_the_debug_log_of_a_full_run_holds_no_code(full_run: FullRun) -> None:
    leaked = found_in(full_run.log, full_run.codes)
    lines = [line[:300] for line in full_run.log.splitlines() if any(c in line for c in leaked)]
    assert not leaked, f"{len(leaked)} codes in the log, e.g.:\n" + "\n".join(lines[:5])


def test_the_debug_log_of_a_full_run_holds_no_key(full_run: FullRun) -> None:
    assert not found_in(full_run.log, full_run.keys)


def test_no_metric_label_holds_a_code(full_run: FullRun) -> None:
    labels = re.findall(r'="((?:[^"\\]|\\.)*)"', full_run.metrics)
    assert labels, full_run.metrics[:500]
    assert not found_in("\n".join(labels), full_run.codes)
    assert not found_in(full_run.metrics, full_run.codes | full_run.keys)


def test_no_error_reply_holds_a_code_or_a_key(full_run: FullRun) -> None:
    assert len(full_run.errors) > 20
    leaks = [
        f"{reply.request} → {reply.status} {reply.body[:200]}"
        for reply in full_run.errors
        if found_in(reply.body, full_run.codes | full_run.keys)
    ]
    assert not leaks, "\n".join(leaks)


def test_an_upload_reply_counts_rejected_rows_without_naming_them(full_run: FullRun) -> None:
    assert any('"rejected":5' in reply.body for reply in full_run.uploads)
    leaks = [reply.body[:300] for reply in full_run.uploads if found_in(reply.body, full_run.codes)]
    assert not leaks, "\n".join(leaks)


def test_codes_are_read_only_by_their_holder_the_admin_export_and_the_event_stream(
    full_run: FullRun,
) -> None:
    assert {op.label for op in OPERATIONS if op.method == "GET"} == set(full_run.reads)
    problems = []
    for label, replies in full_run.reads.items():
        for reply in replies:
            assert reply.status == 200, f"{reply.request}: {reply.status} {reply.body[:200]}"
            seen = set(found_in(reply.body, full_run.codes))
            if label == "GET /v1/lists/{list_id}/uploads/{upload_id}/errors":
                # The admin export: the rejected rows of that upload, nothing else.
                list_id, upload_id = map(int, re.findall(r"\d+", reply.request)[1:3])
                rows = full_run.rejected.get((list_id, upload_id), set())
                seen -= {code for code in full_run.codes if any(code in row for row in rows)}
            elif label == "GET /v1/users/{user_id}/vouchers":
                user = reply.request.split("/")[3]
                held = full_run.held.get(user, set())
                vouchers = json.loads(reply.body)["vouchers"]
                assert {v["code"] for v in vouchers} == held, reply.request
                seen -= held
            elif label == "GET /v1/events":
                events = json.loads(reply.body)["events"]
                shown = {
                    e["data"]["voucherCode"] for e in events if e["type"] == "voucher.rewarded"
                }
                assert shown == {c for codes in full_run.held.values() for c in codes}
                seen -= shown
            if seen:
                problems.append(f"{reply.request}: {sorted(seen)[:3]}")
    assert not problems, "\n".join(problems)


def test_the_admin_export_lists_every_rejected_row(full_run: FullRun) -> None:
    replies = full_run.reads["GET /v1/lists/{list_id}/uploads/{upload_id}/errors"]
    exported = "\n".join(reply.body for reply in replies)
    for codes in full_run.rejected.values():
        for code in codes:
            assert code.replace("é", "\\xc3\\xa9") in exported, code


def test_the_event_stream_shows_a_read_subscriber_the_codes_handed_out(full_run: FullRun) -> None:
    # By design (the reference product's event): `read` keys are trusted with codes.
    rewarded = [e for e in full_run.events if e["type"] == "voucher.rewarded"]
    assert rewarded
    assert all(e["data"]["voucherCode"] in full_run.codes for e in rewarded)


# -- what the client sends back at it ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/lists/{code}/claims", {"user_id": "u-1"}),
        ("GET", "/v1/campaigns/{code}", None),
        ("PATCH", "/v1/lists/1", {"expires_at": "{code}-2026-01-01T00:00"}),
        ("GET", "/v1/events?types={code}", None),
        ("POST", "/v1/campaigns", {"name": "c", "lists": [1], "{code}": 1}),
        ("PATCH", "/v1/campaigns/1", {"{code}": 1}),
        ("GET", "/v1/lists?status={code}", None),
        ("GET", "/v1/campaigns?status={code}", None),
    ],
    ids=[
        "list-id",
        "campaign-id",
        "expires-at",
        "event-types",
        "campaign-field",
        "campaign-edit-field",
        "list-status",
        "campaign-status",
    ],
)
async def test_an_error_message_does_not_echo_a_code_sent_in_the_wrong_place(
    keyed: Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """A code pasted where an id or a time belongs is refused without being repeated: error
    messages end up in clients' logs and dashboards."""
    await make_objects(keyed)
    code = new_code()
    kwargs: dict[str, Any] = {"headers": bearer(EVERY_SCOPE)}
    if body is not None:
        kwargs["json"] = json.loads(json.dumps(body).replace("{code}", code))
    response = await keyed.request(method, path.replace("{code}", code), **kwargs)
    reply = await response.text()
    assert 400 <= response.status < 500, reply
    assert code not in reply.upper(), reply


def bad_request(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        return sock.recv(4096)


async def test_a_malformed_request_line_or_header_is_not_logged_with_its_key_or_code(
    tmp_path: Path,
) -> None:
    """At the default log level, an HTTP request the parser refuses must not put the raw line
    (a key in a malformed Authorization header, a code in a path) into the log."""
    key = f"vd_{secrets.token_urlsafe(24)}"
    config = tmp_path / "voucherd.toml"
    config.write_text(f'[keys.k]\nsha256 = "{hash_key(key)}"\nscopes = ["read"]\n')
    server = ServerProcess(tmp_path / "data", config=config)
    code = new_code()
    try:
        server.start()
        await server.wait_ready()
        for raw in (
            f"GET /v1/lists HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer {key}\r\n\r\n",
            f"GET /v1/lists HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\x01\r\n\r\n",
            f"GET /v1/lists HTTP/1.1\r\nHost: x\r\nBearer {key}\r\n\r\n",
            f"GET /v1/lists/{code} HTTP/1.1 x\r\nHost: x\r\n\r\n",
            f"{code} /v1/lists HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            reply = bad_request(server.port, raw.encode())
            assert reply.startswith(b"HTTP/1."), reply
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        log = server.log()
        assert key not in log, log[-3000:]
        assert code not in log, log[-3000:]
    finally:
        server.stop()
