"""The actor: a task draining a bounded mailbox of envelopes.

Lifecycle::

    start() -> running: receive() gets every message queued since the last turn, in order
    stop()  -> the stop envelope queues behind pending work, which is handled first;
               anything that arrives later fails with ActorStopped.

An error raised for one message goes back to its caller only; an unexpected one is logged and
the caller gets it too, and the actor keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Generic, TypeVar

from voucherd import errors
from voucherd.mailbox import Mailbox, MailboxFull

log = logging.getLogger(__name__)

M = TypeVar("M")


class ActorStopped(errors.NotReady):
    code = "shutting_down"


class Envelope(Generic[M]):
    """A message and the future its reply goes to."""

    __slots__ = ("future", "message")

    def __init__(self, message: M, future: asyncio.Future[Any]) -> None:
        self.message = message
        self.future = future

    def reply(self, result: Any) -> None:
        if not self.future.done():
            self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


_STOP: Any = object()


class Actor(Generic[M]):
    def __init__(self, name: str, mailbox_size: int) -> None:
        self.name = name
        self._mailbox: Mailbox[Envelope[M]] = Mailbox(mailbox_size)
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._stopping = False

    @property
    def mailbox_depth(self) -> int:
        return len(self._mailbox)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    def ask(self, message: M) -> asyncio.Future[Any]:
        """Queue a message; the future carries the reply. A full mailbox is a 503, at once."""
        if self._stopping:
            raise ActorStopped(f"{self.name} is stopping")
        envelope: Envelope[M] = Envelope(message, self._loop.create_future())
        try:
            self._mailbox.put_nowait(envelope)
        except MailboxFull:
            raise errors.Overloaded(f"{self.name} has too many requests waiting") from None
        return envelope.future

    async def ask_waiting(self, message: M) -> asyncio.Future[Any]:
        """Queue a message, waiting for room rather than refusing: for the few messages that
        must not fail because claims are busy, such as completing an upload. Returns once
        queued; the future carries the reply."""
        if self._stopping:
            raise ActorStopped(f"{self.name} is stopping")
        envelope: Envelope[M] = Envelope(message, self._loop.create_future())
        await self._mailbox.put(envelope)
        return envelope.future

    async def stop(self) -> None:
        if self._task is None or self._stopping:
            return
        self._stopping = True
        await self._mailbox.put(Envelope(_STOP, self._loop.create_future()))
        await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = await self._mailbox.take_all()
            stop = next((i for i, env in enumerate(batch) if env.message is _STOP), None)
            work = batch if stop is None else batch[:stop]
            try:
                await self.receive(work)
            except Exception as exc:
                log.exception("%s failed on a turn", self.name)
                for envelope in work:
                    envelope.fail(exc)
            if stop is not None:
                self._teardown(batch[stop + 1 :])
                return

    def _teardown(self, left: list[Envelope[M]]) -> None:
        if len(self._mailbox):
            left.extend(self._mailbox.take_all_now())
        for envelope in left:
            envelope.fail(ActorStopped(f"{self.name} stopped before handling the request"))

    async def receive(self, batch: list[Envelope[M]]) -> None:
        """Handle one turn's messages in order; subclasses reply through each envelope."""
        raise NotImplementedError
