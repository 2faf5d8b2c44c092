"""Time as the API speaks it: RFC 3339 strings in UTC outside, epoch seconds inside."""

from __future__ import annotations

import time
from datetime import UTC, datetime

now = time.time


def format_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_optional(epoch: float | None) -> str | None:
    return None if epoch is None else format_time(epoch)


def parse_time(text: str) -> float:
    """Parse an RFC 3339 timestamp with an explicit offset; raise ValueError otherwise."""
    if not isinstance(text, str) or not 20 <= len(text) <= 40 or "T" not in text.upper():
        raise ValueError("expected an RFC 3339 timestamp such as 2026-12-31T23:59:59Z")
    parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("the timestamp needs a time zone, e.g. a trailing Z")
    return parsed.timestamp()
