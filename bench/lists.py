"""The list calls the scenarios make on a running voucherd, each in a session of its own.

They fail loudly (bench.client.ApiError) with what was sent and what came back; the scenarios run
them through `run_async` between their measured runs.
"""

from __future__ import annotations

from bench import client
from bench.servers import Server


async def new_list(server: Server, partner: str, tag: str) -> int:
    async with client.session() as http:
        return await client.create_list(http, server.url, partner, tag)


async def upload(server: Server, list_id: int, prefix: str, count: int) -> client.UploadResult:
    """`count` fresh sequential codes, `prefix` their first letter (one per list)."""
    async with client.session() as http:
        return await client.upload(http, server.url, list_id, prefix, count)


async def upload_random(server: Server, list_id: int, count: int) -> client.UploadResult:
    async with client.session() as http:
        return await client.upload_random(http, server.url, list_id, count)


async def filled_list(
    server: Server, partner: str, tag: str, prefix: str, count: int, notes: list[str]
) -> int:
    """A new list holding `count` sequential codes; a short upload becomes a note."""
    list_id = await new_list(server, partner, tag)
    up = await upload(server, list_id, prefix, count)
    if up.accepted != count:
        notes.append(f"{partner} list {tag}: upload of {count:,} codes accepted {up.accepted:,}")
    return list_id


async def codes(server: Server, list_id: int) -> dict[str, int]:
    """The list's counts: uploaded, available, distributed, withdrawn."""
    async with client.session() as http:
        reply = await client.get_list(http, server.url, list_id)
    return {k: int(v) for k, v in reply["codes"].items()}


async def available(server: Server, list_id: int) -> int:
    return (await codes(server, list_id))["available"]


async def distributed(server: Server, list_id: int) -> int:
    return (await codes(server, list_id))["distributed"]


def stop(server: Server, what: str, notes: list[str]) -> None:
    """SIGTERM; anything but a clean exit becomes a note."""
    status, seconds = server.stop()
    if status != 0:
        notes.append(f"{server.name} ({what}) exited {status} on SIGTERM after {seconds:.1f} s")
