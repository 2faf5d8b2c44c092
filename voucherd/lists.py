"""A voucher list's metadata and counts, and how the API shows it. No I/O."""

from __future__ import annotations

import dataclasses
import re
from collections import deque
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


# An ISO 8601 duration of weeks, days, hours, minutes and seconds: "P3D", "PT12H", "P1DT6H".
_DURATION = re.compile(
    r"P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?",
    re.ASCII,
)
_UNIT_SECONDS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


def duration_seconds(text: str) -> float:
    """Seconds in an ISO 8601 duration such as "P3D"; ValueError for anything else (months and
    years have no fixed length, so they are not accepted)."""
    match = _DURATION.fullmatch(text.upper()) if 2 <= len(text) <= 40 else None
    if match is None or text.upper() in ("P", "PT") or text.upper().endswith("T"):
        raise ValueError("expected an ISO 8601 duration of weeks, days or time, such as P3D")
    return float(sum(_UNIT_SECONDS[unit] * int(n) for unit, n in match.groupdict().items() if n))


class ClaimRate:
    """Codes handed out per minute over the last 15 minutes, counted per minute. Counted
    from the process's start: a restart begins a fresh window."""

    WINDOW = 15

    __slots__ = ("_minutes",)

    def __init__(self) -> None:
        self._minutes: deque[list[int]] = deque()

    def record(self, now: float, count: int) -> None:
        minute = int(now // 60)
        minutes = self._minutes
        if minutes and minutes[-1][0] == minute:
            minutes[-1][1] += count
        else:
            minutes.append([minute, count])
            while len(minutes) > self.WINDOW + 1:
                minutes.popleft()

    def per_minute(self, now: float) -> float:
        # Counted by whole minutes: the current part minute and the 15 before it, so a claim
        # counts for at least 15 minutes.
        oldest = int(now // 60) - self.WINDOW
        return sum(count for minute, count in self._minutes if minute >= oldest) / self.WINDOW


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
    # How long before expires_at to warn (an ISO 8601 duration), and the expiry date a
    # `list.expiring` event was last written for: one warning per expiry date.
    expiry_warning: str | None = None
    warned_expiry: float | None = None
    rate: ClaimRate = field(default_factory=ClaimRate, compare=False)

    def status(self, now: float | None = None) -> Status:
        return effective(self.stored_status, self.expires_at, clock.now() if now is None else now)

    def replace(self, **changes: Any) -> ListInfo:
        return dataclasses.replace(self, **changes)

    def warning_at(self) -> float | None:
        """When the expiry warning is due, or None without one."""
        if self.expiry_warning is None:
            return None
        return self.expires_at - duration_seconds(self.expiry_warning)

    def exhaustion_at(self, now: float) -> float | None:
        """When the list runs out at its recent claim rate; None while nothing is claimed, and
        for a list that takes no claims (paused, expired or archived)."""
        rate = self.rate.per_minute(now)
        available = self.counts.available
        if rate <= 0 or available <= 0 or self.status(now) is not Status.ACTIVE:
            return None
        return now + available / rate * 60

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
            self.expiry_warning,
            self.warned_expiry,
        )

    def view(self) -> dict[str, Any]:
        counts = self.counts
        now = clock.now()
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
            "expiry_warning": self.expiry_warning,
            "created_at": clock.format_time(self.created_at),
            "updated_at": clock.format_time(self.updated_at),
            "codes": {
                "uploaded": counts.uploaded,
                "available": counts.available,
                "distributed": counts.distributed,
                "withdrawn": counts.withdrawn,
            },
            "campaigns": list(self.campaigns),
            "utilization": round(counts.distributed / counts.uploaded, 6)
            if counts.uploaded
            else 0.0,
            "claim_rate": round(self.rate.per_minute(now), 3),
            "estimated_exhaustion_at": clock.format_optional(self.exhaustion_at(now)),
        }


COLUMNS = (
    "id, partner, tag, name, description, expires_at, status, duplicate_scope,"
    " low_stock_threshold, created_at, updated_at, expiry_warning, warned_expiry"
)
INSERT_LIST = f"INSERT INTO lists ({COLUMNS}) VALUES ({', '.join('?' * 13)})"
SELECT_LISTS = f"SELECT {COLUMNS} FROM lists"
UPDATE_LIST = (
    "UPDATE lists SET name = ?, description = ?, expires_at = ?, status = ?,"
    " low_stock_threshold = ?, updated_at = ?, expiry_warning = ?, warned_expiry = ? WHERE id = ?"
)


def update_row(info: ListInfo) -> tuple[Any, ...]:
    return (
        info.name,
        info.description,
        info.expires_at,
        info.stored_status.value,
        info.low_stock_threshold,
        info.updated_at,
        info.expiry_warning,
        info.warned_expiry,
        info.id,
    )
