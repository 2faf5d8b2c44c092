"""A mailbox: a bounded queue with one reader, which takes everything queued at once.

Lighter than asyncio.Queue on the hot path: a put is an append, and only a put that finds the
reader asleep wakes it. List actors read their messages from one, and the journal's writer the
entries it commits as a group.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class MailboxFull(Exception):
    pass


class Mailbox(Generic[T]):
    def __init__(self, size: int) -> None:
        self._items: deque[T] = deque()
        self._size = size
        self._wakeup: asyncio.Future[None] | None = None
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> None:
        if len(self._items) >= self._size:
            raise MailboxFull
        self._items.append(item)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def put(self, item: T) -> None:
        while len(self._items) >= self._size:
            self._room.clear()
            await self._room.wait()
        self.put_nowait(item)

    def take_all_now(self) -> list[T]:
        """Everything queued, or nothing; never waits."""
        batch = list(self._items)
        self._items.clear()
        self._room.set()
        return batch

    async def take_all(self) -> list[T]:
        """Everything queued, waiting for a first item if there is none."""
        while not self._items:
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        return self.take_all_now()
