"""What runs beside the requests: gauges read at scrape time, the event loop's lag, expiry
warnings coming due, and retention of old events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from functools import partial

from aiohttp import web

from voucherd import clock, errors
from voucherd.actors.voucher_list import WarnExpiry
from voucherd.metrics import CounterMetricFamily, GaugeMetricFamily, Metric
from voucherd.persistence.journal import Step
from voucherd.server.budget import Budgets
from voucherd.server.keys import (
    BUDGETS,
    CAMPAIGNS,
    DIRECTORY,
    JOURNAL,
    METRICS,
    READINESS,
    SETTINGS,
    STREAM,
)
from voucherd.stream import delete_events, retention_cutoff

log = logging.getLogger(__name__)

LIST_LABELS = ["list_id", "partner", "tag"]
# How often the loop's lag is sampled, in seconds.
LAG_PERIOD = 0.25
# Old events are deleted this many at a time, each batch its own short transaction.
PURGE_BATCH = 20_000


def gauges(app: web.Application) -> Iterable[Metric]:
    """Saturation gauges, read from live state at each scrape (the per-list ones are written
    by list_series)."""
    directory, campaigns = app[DIRECTORY], app[CAMPAIGNS]
    depth = GaugeMetricFamily(
        "voucherd_mailbox_depth", "Messages waiting in actors' mailboxes, by kind.", labels=["kind"]
    )
    depth.add_metric(["list"], sum(actor.mailbox_depth for actor in directory))
    depth.add_metric(["campaign"], sum(campaign.mailbox_depth for campaign in campaigns))
    stream = app[STREAM]
    yield depth
    yield GaugeMetricFamily(
        "voucherd_journal_queue_records",
        "Records waiting for the journal's writer.",
        value=app[JOURNAL].queued_records,
    )
    yield GaugeMetricFamily(
        "voucherd_websocket_subscribers",
        "Open event stream subscriptions.",
        value=stream.subscribers,
    )
    yield GaugeMetricFamily(
        "voucherd_events_buffered",
        "Events waiting in subscribers' buffers to be sent.",
        value=stream.buffered,
    )
    yield GaugeMetricFamily("voucherd_event_seq", "The last event's seq.", value=stream.last_seq)
    yield from budget_metrics(app[BUDGETS])


def budget_metrics(budgets: Budgets) -> Iterable[Metric]:
    used = GaugeMetricFamily(
        "voucherd_budget_used", "What requests in flight hold of a budget.", labels=["budget"]
    )
    limit = GaugeMetricFamily(
        "voucherd_budget_limit", "The most requests in flight may hold.", labels=["budget"]
    )
    refused = CounterMetricFamily(
        "voucherd_budget_refusals",
        "Requests refused with 503 because a budget was spent.",
        labels=["budget"],
    )
    for budget in budgets:
        used.add_metric([budget.name], budget.used)
        limit.add_metric([budget.name], budget.limit)
        refused.add_metric([budget.name], budget.refused)
    yield from (used, limit, refused)


async def measure_loop_lag(app: web.Application) -> None:
    """Sample how late the loop wakes a timer: under CPU saturation or a blocking call, this
    is the delay every request waits on top of its own work."""
    lag = app[METRICS].loop_lag
    while True:
        started = time.monotonic()
        await asyncio.sleep(LAG_PERIOD)
        lag.observe(max(time.monotonic() - started - LAG_PERIOD, 0.0))


async def warn_expiring_lists(app: web.Application) -> None:
    """Ask each list with an expiry warning due to write its `list.expiring` event; the list's
    actor decides, so a warning is written once per expiry date."""
    settings, directory = app[SETTINGS], app[DIRECTORY]
    await app[READINESS].recovered.wait()
    while True:
        now = clock.now()
        for actor in list(directory):
            info = actor.info
            due = info.warning_at()
            if (
                due is not None
                and due <= now < info.expires_at
                and info.warned_expiry != info.expires_at
            ):
                try:
                    await actor.ask(WarnExpiry())
                except errors.VoucherdError as exc:
                    log.warning("list %d: expiry warning not written: %s", info.id, exc.message)
        await asyncio.sleep(settings.alert_check_interval)


async def keep_retention(app: web.Application) -> None:
    """Delete events past retention, a few times per retention period and at least hourly, in
    batches of short transactions. The stream learns the new oldest event before the delete,
    so a reader that checked it before cannot mistake the hole for the end of the stream."""
    settings, journal, stream = app[SETTINGS], app[JOURNAL], app[STREAM]
    await app[READINESS].recovered.wait()
    period = min(settings.event_retention / 4, 3600.0)
    while True:
        before = clock.now() - settings.event_retention
        try:
            while (upto := await journal.read(retention_cutoff, before, PURGE_BATCH)) is not None:
                stream.first_seq = upto + 1
                await journal.write(Step(partial(delete_events, upto=upto)))
        except errors.VoucherdError as exc:
            log.warning("could not delete old events: %s", exc.message)
        await asyncio.sleep(period)
