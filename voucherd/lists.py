"""A voucher list's metadata and counts, and how the API shows it. No I/O."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from voucherd import clock
from voucherd.duplicates import Scope
from voucherd.statuses import Status, effective

MAX_PARTNER = 100
MAX_TAG = 100
MAX_NAME = 200
MAX_DESCRIPTION = 2000


@dataclass(slots=True)
class Counts:
    """uploaded = available + distributed + withdrawn, at every moment the API can see."""

    uploaded: int = 0
    distributed: int = 0
    withdrawn: int = 0

    @property
    def available(self) -> int:
        return self.uploaded - self.distributed - self.withdrawn


@dataclass(slots=True)
class ListInfo:
    id: int
    partner: str
    tag: str
    name: str
    description: str
    expires_at: float
    stored_status: Status
    duplicate_scope: Scope
    low_stock_threshold: int
    created_at: float
    updated_at: float
    counts: Counts = field(default_factory=Counts)
    campaigns: list[int] = field(default_factory=list)

    def status(self, now: float | None = None) -> Status:
        return effective(self.stored_status, self.expires_at, clock.now() if now is None else now)

    def replace(self, **changes: Any) -> ListInfo:
        return dataclasses.replace(self, **changes)

    def row(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.partner,
            self.tag,
            self.name,
            self.description,
            self.expires_at,
            self.stored_status.value,
            self.duplicate_scope.value,
            self.low_stock_threshold,
            self.created_at,
            self.updated_at,
        )

    def view(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "id": self.id,
            "partner": self.partner,
            "tag": self.tag,
            "name": self.name,
            "description": self.description,
            "expires_at": clock.format_time(self.expires_at),
            "status": self.status().value,
            "duplicate_scope": self.duplicate_scope.value,
            "low_stock_threshold": self.low_stock_threshold,
            "created_at": clock.format_time(self.created_at),
            "updated_at": clock.format_time(self.updated_at),
            "codes": {
                "uploaded": counts.uploaded,
                "available": counts.available,
                "distributed": counts.distributed,
                "withdrawn": counts.withdrawn,
            },
            "campaigns": list(self.campaigns),
        }


INSERT_LIST = (
    "INSERT INTO lists (id, partner, tag, name, description, expires_at, status, duplicate_scope,"
    " low_stock_threshold, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_LIST = (
    "UPDATE lists SET name = ?, description = ?, expires_at = ?, status = ?,"
    " low_stock_threshold = ?, updated_at = ? WHERE id = ?"
)


def update_row(info: ListInfo) -> tuple[Any, ...]:
    return (
        info.name,
        info.description,
        info.expires_at,
        info.stored_status.value,
        info.low_stock_threshold,
        info.updated_at,
        info.id,
    )
