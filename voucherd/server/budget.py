"""Budgets: what requests in flight may hold at once, in all.

Past a budget a request is refused with 503 and `Retry-After`, so overload costs a client a
retry, never the server's memory: bodies still arriving, batches waiting for their list, uploads,
event subscribers and open connections each hold memory for as long as a client makes them last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from voucherd import errors
from voucherd.settings import Settings


class Budget:
    def __init__(self, name: str, what: str, limit: int) -> None:
        self.name = name
        self.what = what
        self.limit = limit
        self.used = 0
        self.refused = 0

    def take(self, amount: int) -> None:
        if self.used + amount > self.limit:
            self.refused += 1
            raise errors.Overloaded(
                f"voucherd is holding as many {self.what} as it may ({self.limit:,}); retry shortly"
            )
        self.used += amount

    def give(self, amount: int) -> None:
        self.used -= amount

    @contextlib.contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        self.take(amount)
        try:
            yield
        finally:
            self.give(amount)


@dataclass(frozen=True, slots=True)
class Budgets:
    body_bytes: Budget
    batch_users: Budget
    uploads: Budget
    subscribers: Budget
    connections: Budget

    @classmethod
    def of(cls, settings: Settings) -> Budgets:
        return cls(
            Budget("body_bytes", "bytes of request bodies", settings.max_body_bytes_in_flight),
            Budget("batch_users", "users of batches", settings.max_batch_users_in_flight),
            Budget("uploads", "uploads", settings.max_uploads_in_flight),
            Budget("subscribers", "event subscribers", settings.max_subscribers),
            Budget("connections", "connections", settings.max_connections),
        )

    def __iter__(self) -> Iterator[Budget]:
        budgets = (
            self.body_bytes,
            self.batch_users,
            self.uploads,
            self.subscribers,
            self.connections,
        )
        return iter(budgets)
