"""Replies that grow with what they hold, built a piece at a time: lists, a list's uploads,
a user's claims.

The event loop serves every request and every claim: a reply built over tens of thousands of
lists in one pass (about 5 µs a list) would hold all of them for a quarter of a second and more.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")

# Items handled between turns of the event loop: a piece takes a few milliseconds at most.
PIECE = 500


async def pieces(items: Iterable[T]) -> AsyncIterator[Sequence[T]]:
    """The items a piece at a time, other requests running between pieces. They are taken
    first: a list created meanwhile would break a pass over the directory itself."""
    items = list(items)
    for start in range(0, len(items), PIECE):
        if start:
            await asyncio.sleep(0)
        yield items[start : start + PIECE]


def in_one_piece(items: Sequence[object]) -> bool:
    """Whether these items make a single piece: handled at once, no turn given away."""
    return len(items) <= PIECE
