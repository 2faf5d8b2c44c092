"""Distinct 12-character voucher codes, produced in chunks so a 10M-code file never sits in memory.

Sequential codes: one prefix letter (one per list, so lists never share a code), eight digits of
block number and three of position: 1 + 8 + 3 = 12. Each block of 1,000 codes is a single
str.join, so the generator outruns the network path it feeds.

Random codes, like real partner codes: 12 characters from [A-Z0-9], from a seeded
`random.Random`, so the same seed gives the same codes to voucherd and to the SQLite baseline.
They land all over a B-tree index instead of at its right edge, which is what makes them dear.
"""

from __future__ import annotations

import random
import string
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


RANDOM_SEED = 20_240_601
_ALPHABET = (string.ascii_uppercase + string.digits).encode("ascii")
# Random bytes map onto the 36 characters through one bytes.translate, in C. 252 = 7 * 36 of the
# 256 byte values map evenly; the other four are dropped, so every character is equally likely.
_EVEN = len(_ALPHABET) * (256 // len(_ALPHABET))
_TO_ALPHABET = bytes(_ALPHABET[b % len(_ALPHABET)] for b in range(_EVEN)) + bytes(256 - _EVEN)
_DROPPED = bytes(range(_EVEN, 256))
_RANDOM_CHUNK = 64_000  # codes per chunk, ~830 kB like the sequential chunks


def random_csv_chunks(count: int, seed: int = RANDOM_SEED) -> Iterator[bytes]:
    """`count` random codes, one per line, as byte chunks; the same for the same seed.

    Two of 36**12 codes colliding is about as likely as n**2 / 9.5e18 (1e-7 for 1M codes); the
    upload's `accepted` count would show it.
    """
    rng = random.Random(seed)
    left = count
    while left:
        n = min(left, _RANDOM_CHUNK)
        chars = b""
        while len(chars) < CODE_LEN * n:
            need = CODE_LEN * n - len(chars)
            chars += rng.randbytes(need + need // 32 + 64).translate(_TO_ALPHABET, _DROPPED)
        lines = [chars[i : i + CODE_LEN] for i in range(0, CODE_LEN * n, CODE_LEN)]
        yield b"\n".join(lines) + b"\n"
        left -= n


async def arandom_csv_chunks(count: int, seed: int = RANDOM_SEED) -> AsyncIterator[bytes]:
    """The same chunks for aiohttp's streaming request body."""
    for chunk in random_csv_chunks(count, seed):
        yield chunk


def random_codes(count: int, seed: int = RANDOM_SEED) -> Iterator[str]:
    """The same random codes one by one, for the SQLite baseline."""
    for chunk in random_csv_chunks(count, seed):
        yield from chunk.decode("ascii").split("\n")[:-1]
