"""Time as the API speaks it: RFC 3339 strings in UTC outside, epoch seconds inside."""

from __future__ import annotations

import re
import time
from datetime import datetime
from functools import lru_cache

now = time.time

# The API shows whole seconds, from the epoch to the last second RFC 3339's four digits allow.
LATEST = 253402300799.0  # 9999-12-31T23:59:59Z


def format_time(epoch: float) -> str:
    return _format_second(int(epoch))


@lru_cache(maxsize=4096)
def _format_second(second: int) -> str:
    # Every claim in one second, and every claim on one list, shares a rendering.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def format_optional(epoch: float | None) -> str | None:
    return None if epoch is None else format_time(epoch)


# RFC 3339's date-time: what datetime.fromisoformat also takes (week dates, offsets without a
# colon or with hours alone, a space for the T) is refused. A time zone is required.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)", re.ASCII)


def parse_time(text: str) -> float:
    """Parse an RFC 3339 timestamp with an explicit offset; raise ValueError otherwise."""
    found = _RFC3339.fullmatch(text) if isinstance(text, str) and len(text) <= 40 else None
    if found is None:
        raise ValueError("expected an RFC 3339 timestamp such as 2026-12-31T23:59:59Z")
    if found[1] == "60":
        # A leap second: datetime has none, so it is read as the second before.
        text = text[: found.start(1)] + "59" + text[found.end(1) :]
    try:
        parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        # datetime's own message repeats the text, which may be anything a client sent.
        raise ValueError("expected an RFC 3339 timestamp such as 2026-12-31T23:59:59Z") from None
    if parsed.tzinfo is None:
        raise ValueError("the timestamp needs a time zone, e.g. a trailing Z")
    epoch = parsed.timestamp()
    if not 0 <= epoch <= LATEST:
        raise ValueError("the timestamp must lie between 1970 and 9999")
    return epoch
