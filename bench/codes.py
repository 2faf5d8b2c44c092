"""Distinct 12-character voucher codes, produced in chunks so a 10M-code file never sits in memory.

A code is one prefix letter (one per list, so lists never share a code), eight digits of block
number and three of position: 1 + 8 + 3 = 12. Each block of 1,000 codes is a single str.join, so
the generator outruns the network path it feeds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

CODE_LEN = 12
_BLOCK = 1000
_TAILS = [f"{i:03d}" for i in range(_BLOCK)]
_BLOCKS_PER_CHUNK = 64  # ~830 kB per chunk


def csv_chunks(prefix: str, count: int) -> Iterator[bytes]:
    """`count` codes, one per line, as byte chunks."""
    if len(prefix) != 1 or count > _BLOCK * 10**8:
        raise ValueError("one prefix letter, at most 1e11 codes")
    parts: list[str] = []
    for block in range(-(-count // _BLOCK)):
        head = f"{prefix}{block:08d}"
        tails = _TAILS[: min(_BLOCK, count - block * _BLOCK)]
        parts.append(head + ("\n" + head).join(tails) + "\n")
        if len(parts) == _BLOCKS_PER_CHUNK:
            yield "".join(parts).encode("ascii")
            parts.clear()
    if parts:
        yield "".join(parts).encode("ascii")


async def acsv_chunks(prefix: str, count: int) -> AsyncIterator[bytes]:
    """The same chunks for aiohttp's streaming request body."""
    for chunk in csv_chunks(prefix, count):
        yield chunk


def codes(prefix: str, count: int) -> Iterator[str]:
    """The same codes one by one, for the SQLite and in-memory baselines."""
    for chunk in csv_chunks(prefix, count):
        yield from chunk.decode("ascii").split("\n")[:-1]
