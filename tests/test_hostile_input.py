"""Hostile input against voucherd as a real process, over raw sockets where a well-behaved
client would refuse to send it. Each attack is bounded by a documented limit:

| attack                          | limit                                                  |
|---------------------------------|--------------------------------------------------------|
| oversized JSON body             | `max_json_bytes` (413 `payload_too_large`)             |
| oversized upload                | `max_upload_bytes` (413; tests/test_bad_input.py)      |
| deeply nested JSON              | orjson's 1024 levels (400 `invalid_request`)           |
| long request or header line     | aiohttp's 8190 bytes per line or field (400)           |
| many headers                    | `max_headers` lines (400)                              |
| many connections                | `max_connections` (503 `overloaded`, `Retry-After`)    |
| a connection idle, or dripping  | `idle_timeout`: closed once it has sent no whole head  |
| its request head                | for that long                                          |
| slow-drip body                  | `body_timeout`: 408 once it sends nothing for that long |
|                                 | (a JSON body must arrive whole within it)              |
| a WebSocket that never reads    | `event_buffer` (close 4008; tests/test_events.py,      |
|                                 | test_a_subscriber_that_never_reads_is_closed_with_...) |

A body dripped a byte at a time is read as it comes, costing one connection and one waiting
handler meanwhile: the tests show it blocks nothing else, and that the request completes, ends
cleanly when the client goes away, or is refused with 408 once it stalls for `body_timeout`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiohttp
import pytest
from support import (
    RawReply,
    ServerProcess,
    codes_csv,
    list_body,
    make_codes,
    read_reply,
    request_head,
)

from voucherd.settings import Settings

JSON_LIMIT = 64 * 1024
MAX_LINE = 8190  # aiohttp's limit for a line or a field, which voucherd keeps
MAX_HEADERS = Settings().max_headers


BODY_TIMEOUT = 4.0


@pytest.fixture
async def server(server_process: ServerProcess) -> ServerProcess:
    server_process.env["VOUCHERD_MAX_JSON_BYTES"] = str(JSON_LIMIT)
    server_process.env["VOUCHERD_BODY_TIMEOUT"] = str(BODY_TIMEOUT)
    server_process.start()
    await server_process.wait_ready()
    return server_process


@asynccontextmanager
async def session_to(server: ServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url) as session:
        yield session


async def new_list(server: ServerProcess, codes: int = 100, **overrides: Any) -> int:
    async with session_to(server) as session:
        async with session.post("/v1/lists", json=list_body(**overrides)) as response:
            assert response.status == 201, await response.text()
            list_id = int((await response.json())["id"])
        async with session.post(
            f"/v1/lists/{list_id}/uploads",
            data=codes_csv(make_codes(codes, prefix=f"L{list_id}-")).encode(),
            headers={"Content-Type": "text/csv"},
        ) as response:
            assert response.status == 201, await response.text()
    return list_id


async def get_json(server: ServerProcess, path: str) -> Any:
    async with session_to(server) as session, session.get(path) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def assert_serving(
    server: ServerProcess, list_id: int, *, distributed: int | None = None
) -> None:
    """The process is up and still hands out codes; the list had handed out `distributed`
    codes before this check's own claim, when given."""
    if distributed is not None:
        listing = await get_json(server, f"/v1/lists/{list_id}")
        assert listing["codes"]["distributed"] == distributed, listing
    assert server.process is not None
    assert server.process.poll() is None
    async with session_to(server) as session:
        async with session.get("/healthz") as response:
            assert response.status == 200
        async with session.post(
            f"/v1/lists/{list_id}/claims", json={"user_id": f"check-{time.monotonic_ns()}"}
        ) as response:
            assert response.status == 201, await response.text()


async def exchange(server: ServerProcess, data: bytes) -> RawReply:
    """Send `data` on a connection of its own and read the reply; the server may stop reading
    and answer before all of it is sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        with suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
        return await asyncio.wait_for(read_reply(reader), 10)
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


def json_post(path: str, body: bytes) -> bytes:
    head = request_head(
        "POST", path, {"Content-Type": "application/json", "Content-Length": str(len(body))}
    )
    return head + body


# -- oversized bodies --------------------------------------------------------------------------


async def test_an_endless_json_body_is_refused_with_413_once_it_passes_the_limit(
    server: ServerProcess,
) -> None:
    list_id = await new_list(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        request_head(
            "POST", f"/v1/lists/{list_id}/claims",
            {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        )
        + b'5\r\n{"a":\r\n'
    )  # fmt: skip
    reply = asyncio.create_task(read_reply(reader))
    sent = 0
    chunk = b"400\r\n" + b"[" * 1024 + b"\r\n"
    # The client would go on for ever; the server answers once the limit is passed. Socket
    # buffers may take up to a few MiB more before the answer is read.
    with suppress(ConnectionError):
        while not reply.done() and sent < JSON_LIMIT + 64 * 1024**2:
            writer.write(chunk)
            await writer.drain()
            sent += 1024
            await asyncio.sleep(0)
    refused = await asyncio.wait_for(reply, 10)
    writer.close()
    assert refused.status == 413
    assert refused.json()["error"]["code"] == "payload_too_large"
    assert sent < JSON_LIMIT + 8 * 1024**2, f"the server read {sent} bytes before refusing"
    await assert_serving(server, list_id)


async def test_a_json_body_sent_whole_over_the_limit_is_refused_with_413(
    server: ServerProcess,
) -> None:
    list_id = await new_list(server)
    body = json.dumps({"user_id": "u-1", "metadata": {"a": "x" * JSON_LIMIT}}).encode()
    reply = await exchange(server, json_post(f"/v1/lists/{list_id}/claims", body))
    assert reply.status == 413
    assert reply.json()["error"]["code"] == "payload_too_large"
    await assert_serving(server, list_id, distributed=0)


async def test_a_json_body_declared_over_the_limit_is_refused_before_it_is_sent(
    server: ServerProcess,
) -> None:
    """A Content-Length over max_json_bytes is refused at once, as an upload's over
    max_upload_bytes is, rather than waiting for a body the server will refuse anyway."""
    list_id = await new_list(server)
    head = request_head(
        "POST", f"/v1/lists/{list_id}/claims",
        {"Content-Type": "application/json", "Content-Length": str(10 * 1024**3)},
    )  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head + b'{"user_id": "u-1", ')
        await writer.drain()
        try:
            reply = await asyncio.wait_for(read_reply(reader), 3)
        except TimeoutError:
            raise AssertionError(
                "no reply: the server waits for a 10 GiB body it will refuse"
            ) from None
    finally:
        writer.close()
    assert reply.status == 413
    assert reply.json()["error"]["code"] == "payload_too_large"
    await assert_serving(server, list_id)


# -- deeply nested JSON ------------------------------------------------------------------------


async def test_deeply_nested_json_is_refused_with_400_and_nothing_crashes(
    server: ServerProcess,
) -> None:
    list_id = await new_list(server)
    depth = 100_000
    path = f"/v1/lists/{list_id}/claims"
    bodies = [
        b"[" * depth + b"]" * depth,
        b"[" * (JSON_LIMIT - 1),  # as deep as the size limit allows, never closed
        b'{"a":' * depth + b"1" + b"}" * depth,
        b'{"user_id": "u-1", "metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}",
    ]
    for body in bodies:
        # The first is over the size limit: refused for that before its depth matters.
        reply = await exchange(server, json_post(path, body))
        expected = (
            (413, "payload_too_large") if len(body) > JSON_LIMIT else (400, "invalid_request")
        )
        assert (reply.status, reply.json()["error"]["code"]) == expected, body[:40]
    # Under the size limit, still far past any sane depth.
    for body in (b"[" * 20_000 + b"]" * 20_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000):
        reply = await exchange(server, json_post(path, body))
        assert reply.status == 400
        assert reply.json()["error"]["code"] == "invalid_request"
    await assert_serving(server, list_id, distributed=0)


async def test_a_body_labelled_compressed_that_is_not_gets_a_400_and_no_traceback(
    server: ServerProcess,
) -> None:
    list_id = await new_list(server)
    body = b'{"user_id": "u-1"}'
    for encoding in ("gzip", "deflate"):
        for path, status in ((f"/v1/lists/{list_id}/claims", 400), ("/v1/lists/999/claims", 404)):
            headers = {"Content-Type": "application/json", "Content-Encoding": encoding,
                       "Content-Length": str(len(body))}  # fmt: skip
            reply = await exchange(server, request_head("POST", path, headers) + body)
            assert reply.status == status, (path, reply.status, reply.body[:200])
            assert "error" in reply.json()
    await assert_serving(server, list_id, distributed=0)
    assert "Traceback" not in server.log(), server.log()


# -- long header lines, many headers -----------------------------------------------------------


async def test_over_long_lines_and_too_many_headers_get_400_and_the_server_stays_up(
    server: ServerProcess,
) -> None:
    list_id = await new_list(server)
    under = {
        "a header just under the field limit": request_head(
            "GET", "/healthz", {"X-Long": "a" * (MAX_LINE - 100)}
        ),
        "as many headers as allowed, nearly": request_head(
            "GET", "/healthz", {f"X-H{n}": "v" for n in range(MAX_HEADERS - 8)}
        ),
    }
    for what, data in under.items():
        reply = await exchange(server, data)
        assert reply.status == 200, (what, reply)
    over = {
        "a header value over the limit": request_head(
            "GET", "/healthz", {"X-Long": "a" * (MAX_LINE + 10)}
        ),
        "a 1 MiB header line": request_head("GET", "/healthz", {"X-Long": "a" * 1024**2}),
        "a header name over the limit": request_head("GET", "/healthz", {"X" * 9000: "v"}),
        "a request line over the limit": request_head("GET", "/healthz?" + "a" * 9000),
        "too many headers": request_head(
            "GET", "/healthz", {f"X-H{n}": "v" for n in range(MAX_HEADERS + 10)}
        ),
        "ten thousand headers": request_head(
            "GET", "/healthz", {f"X-H{n}": "v" for n in range(10_000)}
        ),
        "a long header on a claim": request_head(
            "POST", f"/v1/lists/{list_id}/claims",
            {"Content-Type": "application/json", "Content-Length": "18",
             "X-Long": "a" * 100_000},
        ) + b'{"user_id": "u-1"}',
    }  # fmt: skip
    for what, data in over.items():
        reply = await exchange(server, data)
        # Refused by the parser, before any handler runs: a JSON error like any other, which
        # names what is wrong without quoting the request back.
        assert reply.status == 400, (what, reply.status, reply.body[:200])
        assert reply.json()["error"]["code"] == "invalid_request", (what, reply.body[:200])
        assert b"aaaa" not in reply.body, (what, reply.body)
        assert b"X-H1" not in reply.body, (what, reply.body)
    await assert_serving(server, list_id, distributed=0)


async def test_bytes_that_are_not_http_get_a_json_error(server: ServerProcess) -> None:
    not_http = {
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03secret-ish\r\n\r\n": "HTTP method",
        b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n": "not valid HTTP/1.1",
        b"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n": "not valid HTTP/1.1",
    }
    for data, says in not_http.items():
        reply = await exchange(server, data)
        assert reply.status == 400, (data, reply)
        error = reply.json()["error"]
        assert error["code"] == "invalid_request", (data, error)
        assert says in error["message"], (data, error)
        assert b"secret-ish" not in reply.body
        assert b"Bad Header" not in reply.body


async def test_an_over_long_authorization_header_is_not_logged(server: ServerProcess) -> None:
    """Keys never appear in logs, nor in the reply: not even a key sent in a header line too
    long to parse."""
    secret = "vk_live_SECRET_3f9a2c71"
    data = request_head("GET", "/v1/lists", {"Authorization": f"Bearer {secret}{'x' * 9000}"})
    reply = await exchange(server, data)
    assert reply.status == 400
    assert reply.json()["error"] == {
        "code": "invalid_request",
        "message": "a line of the request head is too long (at most 8190 bytes)",
    }
    assert secret.encode() not in reply.body
    # The refusal is logged, by its kind alone; wait for that line before reading the log.
    for _ in range(100):
        if "unparseable request" in server.log():
            break
        await asyncio.sleep(0.05)
    assert "unparseable request" in server.log()
    assert secret not in server.log(), "the key was written to the server's log"


# -- slow-drip bodies --------------------------------------------------------------------------


async def drip(writer: asyncio.StreamWriter, data: bytes, pause: float) -> None:
    for byte in data:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(pause)


async def test_slow_drip_bodies_block_no_one_and_complete_when_their_last_byte_arrives(
    server: ServerProcess,
) -> None:
    list_id = await new_list(server, codes=5000)
    claim_body = b'{"user_id": "slow-claimer"}'
    upload_body = codes_csv([f"SLOW{n:04d}" for n in range(8)]).encode()
    claim_conn = await asyncio.open_connection("127.0.0.1", server.port)
    upload_conn = await asyncio.open_connection("127.0.0.1", server.port)
    claim_conn[1].write(
        request_head(
            "POST", f"/v1/lists/{list_id}/claims",
            {"Content-Type": "application/json", "Content-Length": str(len(claim_body))},
        )
    )  # fmt: skip
    upload_conn[1].write(
        request_head(
            "POST", f"/v1/lists/{list_id}/uploads?filename=slow.csv",
            {"Content-Type": "text/csv", "Content-Length": str(len(upload_body))},
        )
    )  # fmt: skip
    # Both bodies arrive a byte every 30 ms, over about two and a half seconds.
    dripping = asyncio.gather(
        drip(claim_conn[1], claim_body, 0.09), drip(upload_conn[1], upload_body, 0.03)
    )
    made: list[str] = []
    async with session_to(server) as session:
        while not dripping.done():
            async with session.post(
                f"/v1/lists/{list_id}/claims", json={"user_id": f"fast-{len(made)}"}
            ) as response:
                assert response.status == 201, await response.text()
                made.append((await response.json())["claim"]["code"])
            await asyncio.sleep(0.005)
            # Uploads and edits too: the list itself is not held up by the slow upload.
            if len(made) == 10:
                async with session.patch(
                    f"/v1/lists/{list_id}", json={"name": "Edited meanwhile"}
                ) as response:
                    assert response.status == 200, await response.text()
    await dripping
    # Claims went on on other connections all the while: dozens, not a handful.
    assert len(made) >= 20, made
    claim_reply = await asyncio.wait_for(read_reply(claim_conn[0]), 10)
    upload_reply = await asyncio.wait_for(read_reply(upload_conn[0]), 10)
    for _, writer in (claim_conn, upload_conn):
        writer.close()
    assert claim_reply.status == 201, claim_reply
    slow_code = claim_reply.json()["claim"]["code"]
    assert slow_code not in made
    assert upload_reply.status == 201, upload_reply
    assert (upload_reply.json()["status"], upload_reply.json()["accepted"]) == ("completed", 8)
    listing = await get_json(server, f"/v1/lists/{list_id}")
    assert listing["name"] == "Edited meanwhile"
    assert listing["codes"]["uploaded"] == 5008
    assert listing["codes"]["distributed"] == len(made) + 1


async def test_many_slow_clients_hold_only_their_own_connections(
    server: ServerProcess,
) -> None:
    """Two hundred clients start a claim and stop after the first byte of the body: each holds
    a connection and a waiting handler, and nothing else."""
    list_id = await new_list(server, codes=1000)
    stalled = []
    for n in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            request_head(
                "POST", f"/v1/lists/{list_id}/claims",
                {"Content-Type": "application/json", "Content-Length": "100"},
            )
            + b"{"
        )  # fmt: skip
        stalled.append((reader, writer, n))
    async with session_to(server) as session:
        for n in range(50):
            async with session.post(
                f"/v1/lists/{list_id}/claims", json={"user_id": f"fast-{n}"}
            ) as response:
                assert response.status == 201, await response.text()
    # They go away without finishing: none of them took a code.
    for _, writer, _ in stalled:
        writer.close()
    await asyncio.sleep(0.2)
    await assert_serving(server, list_id, distributed=50)


async def test_a_client_that_goes_away_mid_body_is_not_logged_as_a_server_error(
    server: ServerProcess,
) -> None:
    """A client gone is an everyday event, not a fault of the server: each one logged with an
    ERROR and a traceback would let anyone fill the log's disk by hanging up."""
    list_id = await new_list(server)
    for _ in range(5):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            request_head(
                "POST", f"/v1/lists/{list_id}/claims",
                {"Content-Type": "application/json", "Content-Length": "100"},
            )
            + b"{"
        )  # fmt: skip
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
    await asyncio.sleep(0.3)
    await assert_serving(server, list_id)
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]


async def test_a_slow_upload_whose_client_goes_away_fails_and_adds_no_code(
    server: ServerProcess,
) -> None:
    list_id = await new_list(server, codes=100)
    body = codes_csv([f"GONE{n:06d}" for n in range(20_000)]).encode()
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        request_head(
            "POST", f"/v1/lists/{list_id}/uploads?filename=gone.csv",
            {"Content-Type": "text/csv", "Content-Length": str(len(body))},
        )
    )  # fmt: skip
    # Most of the file, slowly enough that the server stores a chunk or more of it, and then
    # the client is gone.
    sent = 0
    for start in range(0, len(body) * 3 // 4, 16 * 1024):
        writer.write(body[start : start + 16 * 1024])
        await writer.drain()
        sent += 16 * 1024
        await asyncio.sleep(0.01)
    writer.close()
    uploads: list[dict[str, Any]] = []
    for _ in range(100):
        uploads = (await get_json(server, f"/v1/lists/{list_id}/uploads"))["uploads"]
        if uploads[-1]["status"] != "in_progress":
            break
        await asyncio.sleep(0.05)
    cut = uploads[-1]
    assert cut["filename"] == "gone.csv"
    assert (cut["status"], cut["accepted"]) == ("failed", 0), cut
    listing = await get_json(server, f"/v1/lists/{list_id}")
    assert listing["codes"]["uploaded"] == 100
    # None of its codes is held: the same file sent whole now goes in complete.
    async with (
        session_to(server) as session,
        session.post(
            f"/v1/lists/{list_id}/uploads", data=body, headers={"Content-Type": "text/csv"}
        ) as response,
    ):
        reply = await response.json()
        assert response.status == 201, reply
    assert (reply["status"], reply["accepted"]) == ("completed", 20_000)
    await assert_serving(server, list_id)


async def test_a_json_body_that_stalls_is_refused_with_408(server: ServerProcess) -> None:
    list_id = await new_list(server, codes=10)
    body = b'{"user_id": "stalled"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        # Half the body, then nothing: the reply comes once body_timeout has passed.
        writer.write(json_post(f"/v1/lists/{list_id}/claims", body)[: -len(body) // 2])
        await writer.drain()
        reply = await asyncio.wait_for(read_reply(reader), BODY_TIMEOUT * 10)
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()
    assert reply.status == 408
    assert json.loads(reply.body)["error"]["code"] == "request_timeout"
    await assert_serving(server, list_id, distributed=0)


async def test_an_upload_that_stalls_is_refused_with_408_and_adds_no_code(
    server: ServerProcess,
) -> None:
    list_id = await new_list(server, codes=100)
    body = codes_csv([f"STALL{n:06d}" for n in range(20_000)]).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            request_head(
                "POST", f"/v1/lists/{list_id}/uploads?filename=stalled.csv",
                {"Content-Type": "text/csv", "Content-Length": str(len(body))},
            ) + body[: len(body) // 2]
        )  # fmt: skip
        await writer.drain()
        reply = await asyncio.wait_for(read_reply(reader), BODY_TIMEOUT * 10)
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()
    assert reply.status == 408
    error = json.loads(reply.body)["error"]
    assert error["code"] == "request_timeout"
    stalled = error["details"]["upload"]
    assert (stalled["status"], stalled["accepted"]) == ("failed", 0)
    assert stalled["error"]["code"] == "request_timeout"
    listing = await get_json(server, f"/v1/lists/{list_id}")
    assert listing["codes"]["uploaded"] == 100
    await assert_serving(server, list_id)


MAX_CONNECTIONS = 4
IDLE_TIMEOUT = 1.0


@pytest.fixture
async def narrow_server(server_process: ServerProcess) -> ServerProcess:
    """A server that holds few connections."""
    return await started(server_process, VOUCHERD_MAX_CONNECTIONS=str(MAX_CONNECTIONS))


@pytest.fixture
async def impatient_server(server_process: ServerProcess) -> ServerProcess:
    """A server that closes idle connections soon."""
    return await started(server_process, VOUCHERD_IDLE_TIMEOUT=str(IDLE_TIMEOUT))


async def started(server: ServerProcess, **env: str) -> ServerProcess:
    server.env.update(env)
    server.start()
    await server.wait_ready()
    return server


async def test_a_connection_past_max_connections_gets_503_and_changes_nothing(
    narrow_server: ServerProcess,
) -> None:
    server = narrow_server
    list_id = await new_list(server, codes=10)
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(MAX_CONNECTIONS)]
    try:
        # Each held connection is a live keep-alive connection: it is served.
        for reader, writer in held:
            writer.write(request_head("GET", "/healthz"))
            assert (await asyncio.wait_for(read_reply(reader), 10)).status == 200
        claim = json_post(f"/v1/lists/{list_id}/claims", b'{"user_id": "one-too-many"}')
        refused = await exchange(server, claim)
        assert refused.status == 503, refused
        assert refused.json()["error"]["code"] == "overloaded"
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"
        # A client that sends nothing, or only part of a head, gets the refusal too.
        silent = await exchange(server, b"")
        partial = await exchange(server, b"GET /healthz HTTP/1.1\r\nHost: 12")
        assert (silent.status, partial.status) == (503, 503)
        # Room again once a connection goes: a claim then succeeds, and it is the only one.
        reader, writer = held.pop()
        writer.close()
        reply = await once_served(server, claim)
        assert reply.status == 201, reply
        metrics = await scrape(server)
    finally:
        for _, writer in held:
            writer.close()
    assert f'voucherd_budget_limit{{budget="connections"}} {MAX_CONNECTIONS:.1f}' in metrics
    refusals = re.search(r'voucherd_budget_refusals_total\{budget="connections"\} (\S+)', metrics)
    assert refusals is not None, metrics
    assert float(refusals[1]) >= 3, metrics
    # Every connection's place is given back once it is gone: only the scrape's is taken.
    for _ in range(50):
        metrics = await scrape(server)
        if 'voucherd_budget_used{budget="connections"} 1.0' in metrics:
            break
        await asyncio.sleep(0.05)
    assert 'voucherd_budget_used{budget="connections"} 1.0' in metrics
    await assert_serving(server, list_id, distributed=1)


async def once_served(server: ServerProcess, data: bytes) -> RawReply:
    """The reply to `data` once a connection is free: a connection just closed by the client
    is given back when the server has seen it go."""
    for _ in range(50):
        reply = await exchange(server, data)
        if reply.status != 503:
            return reply
        await asyncio.sleep(0.05)
    raise AssertionError(f"still refused: {reply}")


async def scrape(server: ServerProcess) -> str:
    """/metrics (written in pieces, so read by a client that understands chunks)."""
    async with session_to(server) as session:
        for _ in range(50):
            async with session.get("/metrics") as response:
                if response.status != 503:
                    assert response.status == 200
                    return await response.text()
            await asyncio.sleep(0.05)
    raise AssertionError("/metrics still refused")


async def test_idle_connections_and_heads_dripped_are_closed_but_long_requests_are_not(
    impatient_server: ServerProcess,
) -> None:
    server = impatient_server
    list_id = await new_list(server, codes=10)
    idle = await asyncio.open_connection("127.0.0.1", server.port)
    idle[1].write(request_head("GET", "/healthz"))
    assert (await asyncio.wait_for(read_reply(idle[0]), 10)).status == 200
    silent = await asyncio.open_connection("127.0.0.1", server.port)
    dripping = await asyncio.open_connection("127.0.0.1", server.port)
    # A head sent a byte every 100 ms never ends; the connection is closed all the same.
    head = request_head("GET", "/healthz", {"X-Slow": "a" * 1000})
    drip_head = asyncio.create_task(drip(dripping[1], head, 0.1))
    # A claim whose body takes three times the idle timeout to arrive is not idle: it is
    # answered (a body is bounded by body_timeout instead).
    body = b'{"user_id": "patient"}'
    patient = await asyncio.open_connection("127.0.0.1", server.port)
    patient[1].write(json_post(f"/v1/lists/{list_id}/claims", body)[: -len(body)])
    drip_body = asyncio.create_task(drip(patient[1], body, IDLE_TIMEOUT * 3 / len(body)))
    started = time.monotonic()
    try:
        for reader, _ in (idle, silent, dripping):
            assert await asyncio.wait_for(reader.read(), IDLE_TIMEOUT * 10) == b""
        closed_after = time.monotonic() - started
        assert not drip_head.done() or drip_head.exception() is not None
        await drip_body
        reply = await asyncio.wait_for(read_reply(patient[0]), 10)
    finally:
        drip_head.cancel()
        for _, writer in (idle, silent, dripping, patient):
            writer.close()
    assert closed_after < IDLE_TIMEOUT * 5
    assert reply.status == 201, reply
    listing = await get_json(server, f"/v1/lists/{list_id}")
    assert listing["codes"]["distributed"] == 1
