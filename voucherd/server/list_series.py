"""The per-list series of /metrics, written here a piece of lists at a time.

A list has eleven series. prometheus_client formats them in one pass of the event loop, about
7 µs a series: at 5,000 lists a scrape held the loop, and every claim, for 0.38 s. Here each
list's values are read first, then each family is written, a piece at a time (see pieces).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from voucherd import clock
from voucherd.campaigns import CampaignStatus
from voucherd.lists import duration_seconds
from voucherd.server.keys import CAMPAIGNS, DIRECTORY
from voucherd.server.pieces import pieces
from voucherd.statuses import Status


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    help: str
    # A list's series in this family: which of its row's values each shows (see _Row), and the
    # labels it adds to the list's own.
    series: tuple[tuple[int, str], ...]


def _one(value: int) -> tuple[tuple[int, str], ...]:
    return ((value, ""),)


FAMILIES = (
    Family("voucherd_list_codes", "Codes of a list by state.",
           tuple((value, f',state="{state}"') for value, state in
                 enumerate(("uploaded", "available", "distributed", "withdrawn")))),
    Family("voucherd_list_low_stock",
           "1 while a list's available codes are at or below its threshold.", _one(4)),
    Family("voucherd_list_low_stock_threshold", "A list's low-stock threshold, in codes.",
           _one(5)),
    Family("voucherd_list_expiry_seconds",
           "Seconds until a list expires; negative once expired.", _one(6)),
    Family("voucherd_list_expiry_warning_seconds",
           "How long before its expiry a list warns, in seconds; 0 without a warning.", _one(7)),
    Family("voucherd_list_running_campaigns", "Running campaigns that map a list.", _one(8)),
    Family("voucherd_list_claims_per_minute",
           "Codes a list handed out per minute over the last 15 minutes.", _one(9)),
    Family("voucherd_list_exhaustion_seconds",
           "Seconds until a list runs out at its recent claim rate; absent while nothing is "
           "claimed and while the list is not active.", _one(10)),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Row:
    labels: str
    # The list's four code counts by state, then one value for each of the other families;
    # None where the list has no such series.
    values: tuple[float | None, ...]


async def list_series(app: web.Application) -> AsyncIterator[bytes]:
    """Every non-archived list's series in the text format, a piece at a time. A list's series
    go away when it is archived."""
    rows = await _rows(app)
    for family in FAMILIES:
        yield f"# HELP {family.name} {family.help}\n# TYPE {family.name} gauge\n".encode()
        async for piece in pieces(rows):
            yield "".join(
                f"{family.name}{{{row.labels}{extra}}} {_number(value)}\n"
                for row in piece
                for index, extra in family.series
                if (value := row.values[index]) is not None
            ).encode()


async def _rows(app: web.Application) -> list[_Row]:
    """Each non-archived list's values, read a piece of lists at a time."""
    directory, campaigns, now = app[DIRECTORY], app[CAMPAIGNS], clock.now()
    running: dict[int, int] = {}
    for campaign in campaigns:
        if campaign.info.status(now) is CampaignStatus.RUNNING:
            for list_id in campaign.info.lists:
                running[list_id] = running.get(list_id, 0) + 1
    rows: list[_Row] = []
    async for piece in pieces(directory):
        for actor in piece:
            info = actor.info
            if info.stored_status is Status.ARCHIVED:
                continue
            counts = info.counts
            runs_out = info.exhaustion_at(now)
            values = (
                counts.uploaded, counts.available, counts.distributed, counts.withdrawn,
                1.0 if counts.available <= info.low_stock_threshold else 0.0,
                info.low_stock_threshold,
                info.expires_at - now,
                duration_seconds(info.expiry_warning) if info.expiry_warning else 0.0,
                running.get(info.id, 0),
                info.rate.per_minute(now),
                None if runs_out is None else runs_out - now,
            )  # fmt: skip
            rows.append(_Row(_labels(str(info.id), info.partner, info.tag), values))
    return rows


def _labels(list_id: str, partner: str, tag: str) -> str:
    return f'list_id="{list_id}",partner="{_escape(partner)}",tag="{_escape(tag)}"'


def _escape(value: str) -> str:
    """A label value as the text format quotes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    """A sample value as the text format reads it: Go's syntax for floats, which Python's
    repr of a finite float follows."""
    return repr(float(value))
