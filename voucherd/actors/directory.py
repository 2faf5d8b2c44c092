"""The directory of voucher lists: finds a list's actor, creates lists, starts and stops them."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from voucherd import clock, errors
from voucherd.actors.voucher_list import Ids, ListActor
from voucherd.lists import INSERT_LIST, ListInfo
from voucherd.metrics import Metrics
from voucherd.persistence.journal import Journal, Step
from voucherd.persistence.recovery import Recovered
from voucherd.settings import Settings
from voucherd.statuses import Status


class Directory:
    def __init__(self, settings: Settings, journal: Journal, metrics: Metrics) -> None:
        self.settings = settings
        self.journal = journal
        self.metrics = metrics
        self.ids = Ids()
        self._actors: dict[int, ListActor] = {}

    def load(self, recovered: Recovered) -> None:
        self.ids = Ids(
            recovered.max_list_id,
            recovered.max_upload_id,
            recovered.max_code_id,
            recovered.max_claim_id,
        )
        for state in recovered.lists.values():
            self._add(
                ListActor(
                    state.info,
                    journal=self.journal,
                    ids=self.ids,
                    metrics=self.metrics,
                    mailbox_size=self.settings.mailbox_size,
                    pool=state.pool,
                    claims=state.claims,
                    keys_by_user=state.keys_by_user,
                    uploads=state.uploads,
                )
            )

    def _add(self, actor: ListActor) -> None:
        self._actors[actor.info.id] = actor
        actor.start()

    async def stop(self) -> None:
        await asyncio.gather(*(actor.stop() for actor in self._actors.values()))

    def __iter__(self) -> Iterator[ListActor]:
        return iter(self._actors.values())

    def actor(self, list_id: int) -> ListActor:
        actor = self._actors.get(list_id)
        if actor is None:
            raise errors.NotFound(f"list {list_id} does not exist")
        return actor

    def _tag_holder(self, partner: str, tag: str) -> ListInfo | None:
        return next(
            (
                actor.info
                for actor in self._actors.values()
                if actor.info.partner == partner
                and actor.info.tag == tag
                and actor.info.stored_status is not Status.ARCHIVED
            ),
            None,
        )

    async def create(self, info: ListInfo) -> ListInfo:
        """Store a new list; `info.id` is assigned here."""
        holder = self._tag_holder(info.partner, info.tag)
        if holder is not None:
            raise errors.TagTaken(
                f"partner {info.partner!r} already has a list tagged {info.tag!r}"
                f" (list {holder.id})"
            )
        info.id = self.ids.next_list()

        def insert(db: sqlite3.Connection) -> None:
            db.execute(INSERT_LIST, info.row())

        def register(written: asyncio.Future[Any]) -> None:
            # Registered when the row is written, even if the request was cancelled meanwhile.
            if not written.cancelled() and written.exception() is None:
                self._add(
                    ListActor(
                        info,
                        journal=self.journal,
                        ids=self.ids,
                        metrics=self.metrics,
                        mailbox_size=self.settings.mailbox_size,
                    )
                )

        written = self.journal.submit([Step(insert)])
        written.add_done_callback(register)
        try:
            await asyncio.shield(written)
        except sqlite3.IntegrityError:
            # Another create of the same tag committed first; the unique index caught it.
            raise errors.TagTaken(
                f"partner {info.partner!r} already has a list tagged {info.tag!r}"
            ) from None
        return info


def matching(
    actors: Iterable[ListActor],
    partner: str | None = None,
    status: Status | None = None,
    tag: str | None = None,
) -> list[ListInfo]:
    """The lists among these that match every filter given."""
    now = clock.now()
    return [
        actor.info
        for actor in actors
        if (partner is None or actor.info.partner == partner)
        and (tag is None or actor.info.tag == tag)
        and (status is None or actor.info.status(now) is status)
    ]
