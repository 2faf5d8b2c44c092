"""The application: routes with their scopes, and the lifecycle wired in one place.

Lifecycle::

    startup:  open the journal -> listen at once (/readyz says 503)
              -> recovery task: open the code index, rebuild lists, start actors and the
                 writer -> ready
    SIGTERM:  stop listening -> new requests on open connections get 503 -> requests in
              flight finish, bodies still arriving included (up to shutdown_timeout)
    cleanup:  close connections -> actors drain their mailboxes
              -> the code index closes -> the journal commits what is queued and closes
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web
from aiohttp.typedefs import Handler

from voucherd.actors.campaign import Campaigns
from voucherd.actors.directory import Directory
from voucherd.campaigns import CampaignAction
from voucherd.metrics import Metrics
from voucherd.persistence.code_index import CodeIndex, drop_journal_copy
from voucherd.persistence.journal import Journal, shrink_memory
from voucherd.persistence.recovery import recover
from voucherd.server import campaigns, claims, events, lists, operations, uploads, watch
from voucherd.server.budget import Budgets
from voucherd.server.door import Door, DoorSite
from voucherd.server.keys import (
    BUDGETS,
    CAMPAIGNS,
    CODE_INDEX,
    DIRECTORY,
    IN_FLIGHT,
    JOURNAL,
    METRICS,
    READINESS,
    SCOPES,
    SETTINGS,
    STREAM,
    InFlight,
    Readiness,
)
from voucherd.server.middleware import front_door
from voucherd.settings import Scope, Settings
from voucherd.statuses import Action
from voucherd.stream import EventStream, read_events

log = logging.getLogger(__name__)

ADMIN, ISSUE, READ = Scope.ADMIN, Scope.ISSUE, Scope.READ

# (method, path, handler, scope); a scope of None means no key is needed. Claims come first:
# aiohttp tries routes in order, and they are the busiest by far.
ROUTES: list[tuple[str, str, Handler, Scope | None]] = [
    ("POST", "/v1/lists/{list_id}/claims", claims.create_claim, ISSUE),
    ("POST", "/v1/lists/{list_id}/claims/batch", claims.create_claims, ISSUE),
    ("GET", "/healthz", operations.healthz, None),
    ("GET", "/readyz", operations.readyz, None),
    ("GET", "/metrics", operations.metrics, READ),
    ("GET", "/v1/openapi.json", operations.openapi, None),
    ("POST", "/v1/lists", lists.create_list, ADMIN),
    ("GET", "/v1/lists", lists.find_lists, READ),
    ("GET", "/v1/lists/{list_id}", lists.get_list, READ),
    ("GET", "/v1/stats", lists.stats, READ),
    ("PATCH", "/v1/lists/{list_id}", lists.edit_list, ADMIN),
    ("POST", "/v1/lists/{list_id}/pause", lists.transition(Action.PAUSE), ADMIN),
    ("POST", "/v1/lists/{list_id}/activate", lists.transition(Action.ACTIVATE), ADMIN),
    ("POST", "/v1/lists/{list_id}/archive", lists.transition(Action.ARCHIVE), ADMIN),
    ("POST", "/v1/lists/{list_id}/uploads", uploads.create_upload, ADMIN),
    ("GET", "/v1/lists/{list_id}/uploads", uploads.list_uploads, READ),
    ("GET", "/v1/lists/{list_id}/uploads/{upload_id}", uploads.get_upload, READ),
    ("DELETE", "/v1/lists/{list_id}/uploads/{upload_id}", uploads.withdraw_upload, ADMIN),
    # The error file repeats rejected codes, which are the partner's secrets.
    ("GET", "/v1/lists/{list_id}/uploads/{upload_id}/errors", uploads.upload_errors, ADMIN),
    ("GET", "/v1/users/{user_id}/vouchers", claims.user_vouchers, ISSUE),
    ("POST", "/v1/campaigns/{campaign_id}/rewards", campaigns.create_reward, ISSUE),
    ("POST", "/v1/campaigns/{campaign_id}/rewards/batch", campaigns.create_rewards, ISSUE),
    ("POST", "/v1/campaigns", campaigns.create_campaign, ADMIN),
    ("GET", "/v1/campaigns", campaigns.find_campaigns, READ),
    ("GET", "/v1/campaigns/{campaign_id}", campaigns.get_campaign, READ),
    ("PATCH", "/v1/campaigns/{campaign_id}", campaigns.edit_campaign, ADMIN),
    *(
        ("POST", f"/v1/campaigns/{{campaign_id}}/{action}", campaigns.transition(action), ADMIN)
        for action in CampaignAction
    ),
    ("POST", "/v1/templates/render", campaigns.render_template, ADMIN),
    ("GET", "/v1/events", events.stream_events, READ),
]


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_json_bytes, middlewares=[front_door])
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[READINESS] = Readiness()
    app[IN_FLIGHT] = InFlight()
    app[BUDGETS] = Budgets.of(settings)
    scopes: dict[Handler, Scope | None] = {}
    for method, path, handler, scope in ROUTES:
        app.router.add_route(method, path, handler, name=handler.__name__)
        scopes[handler] = scope
    app[SCOPES] = scopes
    app.cleanup_ctx.append(_lifecycle)
    return app


# Seconds aiohttp's cleanup gives what is left once voucherd's own wait is over.
_CUT_OFF_GRACE = 1.0


async def serve(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT, then shut down in the order drawn above; exit status."""
    # A claim allocates a few dozen short-lived containers, nearly all freed by reference
    # counting; collecting the young generation every 700 of them costs several per cent of
    # throughput for nothing, so collect every 50,000 instead.
    gc.set_threshold(50_000, 20, 100)
    app = create_app(settings)
    # Requests in flight get `shutdown_timeout` below, before the runner's cleanup; what
    # outlasts it is cut off then, not after a second wait as long.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=_CUT_OFF_GRACE)
    try:
        await runner.setup()
    except OSError as exc:
        # The data folder cannot be made or opened: said in one line, not a traceback.
        log.error("cannot use the data folder %s: %s", settings.data_dir, exc)
        return 1
    assert runner.server is not None
    _open_files_for(settings.max_connections)
    door = Door(
        runner.server,
        app[BUDGETS].connections,
        access_log=None,
        keepalive_timeout=settings.idle_timeout,
        max_headers=settings.max_headers,
    )
    site = DoorSite(runner, door, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror or exc)
        await runner.cleanup()
        return 1
    # What recovery built lives as long as the process: the collector need not scan it again.
    await_ready = asyncio.create_task(_freeze_when_ready(app[READINESS]), name="gc-freeze")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await_ready.cancel()
    # aiohttp's own shutdown stops reading request bodies at once; a request whose body is
    # still arriving would be cut off. So stop listening first and wait for them here.
    await site.stop()
    app[READINESS].draining = True
    app[READINESS].ready = False
    app[STREAM].stop()
    in_flight = app[IN_FLIGHT]
    log.info("stopping: no new connections; %d requests in flight", in_flight.count)
    try:
        async with asyncio.timeout(settings.shutdown_timeout):
            await in_flight.drained()
    except TimeoutError:
        log.warning("%d requests cut off after %.0f s", in_flight.count, settings.shutdown_timeout)
    await runner.cleanup()
    return 0


# Files besides connections: the databases and their journals, the listening socket, logs.
_OTHER_FILES = 64


def _open_files_for(connections: int) -> None:
    """Raise the process's soft limit on open files so that every connection allowed can be
    accepted (many systems start services at 1,024); say so if the hard limit is lower."""
    wanted = connections + _OTHER_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        if raised < wanted:
            log.warning(
                "max_connections is %d but this process may open only %d files: connections "
                "past about %d will fail before voucherd can refuse them",
                connections, raised, raised - _OTHER_FILES,
            )  # fmt: skip


async def _freeze_when_ready(readiness: Readiness) -> None:
    await readiness.recovered.wait()
    gc.freeze()


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[SETTINGS], app[METRICS]
    journal = Journal(settings.database, settings.synchronous, settings.journal_queue_size, metrics)
    await journal.open()
    directory = Directory(settings, journal, metrics)
    stream = EventStream(partial(journal.read, read_events))
    journal.on_events = stream.publish
    app[JOURNAL] = journal
    app[CODE_INDEX] = CodeIndex(
        settings.code_index, settings.database, settings.synchronous, settings.index_merge_codes
    )
    app[DIRECTORY] = directory
    app[CAMPAIGNS] = Campaigns(journal, directory)
    app[STREAM] = stream
    metrics.watch(lambda: watch.gauges(app))
    tasks = [
        asyncio.create_task(_recover(app, journal, directory), name="recovery"),
        asyncio.create_task(watch.keep_retention(app), name="event-retention"),
        asyncio.create_task(watch.warn_expiring_lists(app), name="expiry-warnings"),
        asyncio.create_task(watch.measure_loop_lag(app), name="loop-lag"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        app[READINESS].ready = False
        stream.stop()
        await app[CAMPAIGNS].stop()
        await directory.stop()
        await app[CODE_INDEX].close()
        await journal.close()
        log.info("voucherd stopped: journal flushed and closed")


async def _recover(app: web.Application, journal: Journal, directory: Directory) -> None:
    readiness = app[READINESS]
    try:
        await app[CODE_INDEX].open()
        await journal.call(drop_journal_copy)
        recovered = await journal.call(recover)
        # Past the ids of codes entered in the index by a chunk a crash cut off, too.
        recovered.max_code_id = max(recovered.max_code_id, app[CODE_INDEX].high_id)
        directory.load(recovered)
        app[CAMPAIGNS].load(recovered.campaigns, recovered.max_campaign_id)
        journal.last_seq = app[STREAM].last_seq = recovered.last_seq
        journal.last_event_time = recovered.last_event_time
        app[STREAM].first_seq = recovered.first_seq
        # Recovery reads every block once; what it allocated on the way is returned here.
        await journal.call(shrink_memory)
        journal.start()
    except Exception as exc:
        log.exception("recovery failed")
        readiness.failed = f"recovery failed: {type(exc).__name__}"
        return
    readiness.ready = True
    readiness.recovered.set()
    log.info("ready")
