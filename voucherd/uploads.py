"""Uploads: a CSV streamed in, checked, stored in chunks, and made available all at once.

The body is parsed as it arrives, never held whole. Each chunk of codes is first checked for
duplicates and entered in the code index, in one transaction on the index's thread, so the
checks of concurrent uploads are serialized, never racing; then its codes are written to the
journal as one block. The codes join the list's pool only when the upload completes; an upload
that fails or is cut off by a crash leaves none of them behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any

import msgpack

from voucherd import clock, errors, events
from voucherd.actors.voucher_list import CompleteUpload, ListActor
from voucherd.codes import CsvParser, ParsedChunk, Reason, UploadAborted, describe_invalid
from voucherd.duplicates import Holder, Target, first_clash
from voucherd.persistence import code_index
from voucherd.persistence.code_index import CodeIndex
from voucherd.persistence.journal import Events, Journal, Op, Rows, Step
from voucherd.persistence.recovery import drop_upload_codes
from voucherd.pool import Segment, StoredBlock, pack, pack_lines
from voucherd.settings import Settings
from voucherd.statuses import Action, Status, check

log = logging.getLogger(__name__)

UPLOAD_COLUMNS = (
    "id, list_id, filename, status, rows, accepted, rejected, withdrawn, errors, error_code,"
    " error_message, started_at, finished_at, uploaded_by"
)
_INSERT_BLOCK = (
    "INSERT INTO code_blocks (first_id, upload_id, list_id, count, codes, width)"
    " VALUES (?, ?, ?, ?, zeroblob(?), ?)"
)
_INSERT_ERRORS = "INSERT INTO upload_errors (upload_id, line, code, reason) VALUES (?, ?, ?, ?)"
_PROGRESS = "UPDATE uploads SET rows = ?, accepted = ?, rejected = ?, errors = ? WHERE id = ?"


# The contract's four reasons are always there, 0 when none; `list_full` only when it happened.
_NO_ERRORS = {
    reason.value: 0
    for reason in (
        Reason.DUPLICATE_IN_FILE,
        Reason.DUPLICATE_IN_LIST,
        Reason.DUPLICATE_IN_PARTNER,
        Reason.INVALID_CODE,
    )
}


@dataclass(slots=True)
class Upload:
    id: int
    list_id: int
    filename: str | None
    started_at: float
    uploaded_by: str | None
    status: str = "in_progress"
    rows: int = 0
    accepted: int = 0
    withdrawn: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_code: str | None = None
    error_message: str | None = None
    finished_at: float | None = None

    @property
    def rejected(self) -> int:
        return sum(self.errors.values())

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Upload:
        (id_, list_id, filename, status, rows, accepted, _, withdrawn, errs, code, message) = row[
            :11
        ]
        return cls(
            id=id_,
            list_id=list_id,
            filename=filename,
            started_at=row[11],
            uploaded_by=row[13],
            status=status,
            rows=rows,
            accepted=accepted,
            withdrawn=withdrawn,
            errors=Counter(msgpack.unpackb(errs) if errs else {}),
            error_code=code,
            error_message=message,
            finished_at=row[12],
        )

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "list_id": self.list_id,
            "filename": self.filename,
            "status": self.status,
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "withdrawn": self.withdrawn,
            "errors": {**_NO_ERRORS, **{str(reason): n for reason, n in self.errors.items()}},
            "error": (
                None
                if self.error_code is None
                else {"code": self.error_code, "message": self.error_message}
            ),
            "started_at": clock.format_time(self.started_at),
            "finished_at": clock.format_optional(self.finished_at),
            "uploaded_by": self.uploaded_by,
        }

    def progress_row(self) -> tuple[Any, ...]:
        return (self.rows, self.accepted, self.rejected, msgpack.packb(dict(self.errors)), self.id)

    def finish_row(self) -> tuple[Any, ...]:
        return (
            self.status,
            self.rows,
            self.accepted,
            self.rejected,
            msgpack.packb(dict(self.errors)),
            self.error_code,
            self.error_message,
            self.finished_at,
            self.id,
        )


_FINISH = (
    "UPDATE uploads SET status = ?, rows = ?, accepted = ?, rejected = ?, errors = ?,"
    " error_code = ?, error_message = ?, finished_at = ? WHERE id = ?"
)


class UploadFailed(errors.VoucherdError):
    """The file was refused whole; `details` carries the failed upload."""


@dataclass(slots=True)
class _Tally:
    """Running counts of an upload's chunks."""

    rows: int = 0
    accepted: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, checked: _Checked) -> None:
        self.rows += checked.rows
        self.accepted += checked.accepted
        self.errors.update(reason for *_, reason in checked.rejected)


@dataclass(frozen=True, slots=True)
class _Checked:
    """A chunk after its check: the accepted codes as the block the journal stores, and the
    rejected rows as (upload id, line, code, reason)."""

    rows: int
    first_id: int
    accepted: int
    block: bytes
    width: int
    rejected: list[tuple[int, int, str, str]]


class Uploader:
    """Runs one upload from the first byte to completion or failure."""

    def __init__(self, settings: Settings, actor: ListActor, index: CodeIndex) -> None:
        self.settings = settings
        self.actor = actor
        self.journal = actor.journal
        self.index = index
        self.upload: Upload | None = None
        self.target: Target | None = None
        self.segments: list[Segment] = []
        # The chunks written, as the writer's thread counts them for the progress row, and
        # those committed: a commit that fails takes its chunk's rows and errors with it.
        self._tally = _Tally()
        self._committed = _Tally()
        # Rejected rows of the chunks handed to the journal so far.
        self._rejected_sent = 0
        # Code ids and cap room held for chunks being written; given back as each one lands.
        self._reserved = 0
        # Parsing and checking the next chunk overlap with writing the previous one.
        self._writing: tuple[asyncio.Future[Any], int, _Checked] | None = None
        # Giving way to claims: what the journal had written beside the upload at the last look.
        self._seen_records = 0

    async def run(
        self, body: AsyncIterator[bytes], filename: str | None, uploaded_by: str | None
    ) -> Upload:
        info = self.actor.info
        check(info.status(), Action.UPLOAD, info.id)
        upload = Upload(self.actor.ids.next_upload(), info.id, filename, clock.now(), uploaded_by)
        self.upload = upload
        self.target = Target(info.id, upload.id, info.partner, info.duplicate_scope)
        await self.journal.write(
            Rows(
                "INSERT INTO uploads (id, list_id, filename, status, started_at, uploaded_by)"
                " VALUES (?, ?, ?, 'in_progress', ?, ?)",
                [(upload.id, info.id, filename, upload.started_at, uploaded_by)],
            )
        )
        try:
            await self._receive(body)
            self._take_tally()
            if upload.rows == 0:
                raise UploadAborted("empty_file", "the file holds no codes")
            completion = await self.actor.ask_waiting(self._completion())
        except UploadAborted as exc:
            await self._fail(exc.code, exc.message)
            if exc.code in ("binary_content", "line_too_long", "truncated_body"):
                raise errors.InvalidRequest(exc.message, {"upload": upload.view()}) from None
        except errors.PayloadTooLarge as exc:
            await self._fail("payload_too_large", exc.message)
            raise errors.PayloadTooLarge(exc.message, {"upload": upload.view()}) from None
        except errors.RequestTimeout as exc:
            await self._fail("request_timeout", exc.message)
            raise errors.RequestTimeout(exc.message, {"upload": upload.view()}) from None
        except BaseException as exc:
            # Client gone, disk trouble: none of the codes stay.
            await self._fail("interrupted", _reason(exc))
            raise
        else:
            await self._await_completion(completion)
        finally:
            self.actor.incoming -= self._reserved
            self.journal.release_memory()
            self.index.tidy()
        self.actor.metrics.uploads.labels(upload.status).inc()
        self.actor.metrics.codes_uploaded.inc(upload.accepted)
        for reason, count in upload.errors.items():
            self.actor.metrics.codes_rejected.labels(reason).inc(count)
        return upload

    async def _receive(self, body: AsyncIterator[bytes]) -> None:
        parser = CsvParser(self.settings.max_line_bytes)
        pending = ParsedChunk()
        self._seen_records = self.journal.shared_records
        size = 0
        async for data in body:
            size += len(data)
            if size > self.settings.max_upload_bytes:
                raise errors.PayloadTooLarge(
                    f"the file is larger than {self.settings.max_upload_bytes} bytes"
                )
            began = time.perf_counter()
            pending.extend(parser.feed(data))
            await self._give_way(time.perf_counter() - began)
            while pending.rows >= self.settings.upload_chunk_codes:
                chunk, pending = pending.split(self.settings.upload_chunk_codes)
                await self._store(chunk)
        pending.extend(parser.finish())
        if pending.rows:
            await self._store(pending)
        await self._written()

    async def _store(self, parsed: ParsedChunk) -> None:
        size = parsed.good
        # The codes a list holds count against its cap, available or handed out: withdrawn
        # ones left it, so withdrawing a wrong upload makes room for the right one.
        counts = self.actor.info.counts
        room = self.settings.max_codes_per_list - (
            counts.uploaded - counts.withdrawn + self.actor.incoming
        )
        room = max(room, 0)
        first_id = self.actor.ids.take_codes(size)
        # Hold the room now, so a concurrent upload to the same list cannot take it too.
        held = min(size, room)
        self.actor.incoming += held
        self._reserved += held
        began = time.perf_counter()
        checked = await self.index.call(self._check, parsed, first_id, room)
        # The check shares the core with claims too, so it counts with the parsing.
        await self._give_way(time.perf_counter() - began)
        # The index has the chunk's codes (committed) before the journal has their block, so
        # the index never misses a stored code. A chunk waits for room in the journal's queue
        # rather than failing the upload because claims are busy; it counts there as its rows
        # do, one packed block and the error rows the file still has room for.
        # The error file keeps the earliest rejected rows, up to the cap; all are counted.
        kept = min(
            len(checked.rejected), max(self.settings.max_error_rows - self._rejected_sent, 0)
        )
        self._rejected_sent += len(checked.rejected)
        store = [Step(partial(self._store_chunk, checked, kept))]
        writing = await self.journal.submit_waiting(store, 1 + kept)
        await self._written()
        self._writing = (writing, held, checked)

    async def _written(self) -> None:
        if self._writing is None:
            return
        (writing, held, checked), self._writing = self._writing, None
        segment: Segment | None = await writing
        self._committed.add(checked)
        used = segment.count if segment is not None else 0
        self.actor.incoming -= held - used
        self._reserved -= held - used
        if segment is not None:
            self.segments.append(segment)

    async def _give_way(self, worked: float) -> None:
        """After each read of the body and each chunk's check: while claims are being written,
        rest so that the upload's parsing and checking take at most `upload_share` of the time;
        claims come first. Resting after every read rather than every chunk keeps each stretch
        of work a few milliseconds long, so claims never queue behind a long one. The checks
        run on the index's thread at a lower priority, and their time counts too: they share
        the core with the claims. On a server with nothing else to do the upload runs flat
        out, and a body already buffered still gives others a turn between reads."""
        claims_busy = self.journal.shared_records != self._seen_records
        self._seen_records = self.journal.shared_records
        share = self.settings.upload_share
        rest = worked * (1 - share) / share if claims_busy and share < 1 else 0.0
        await asyncio.sleep(rest)
        if rest:
            self.actor.metrics.upload_rest_seconds.inc(rest)

    def _check(
        self, db: sqlite3.Connection, parsed: ParsedChunk, first_id: int, room: int
    ) -> _Checked:
        """Runs on the code index's thread: find the chunk's duplicates and enter the codes
        it accepts, in one transaction."""
        upload, target = self.upload, self.target
        assert upload is not None
        assert target is not None
        # A merge the last chunk made due runs before this one (or after the upload), never
        # inside the chunk, so an upload that ends where a merge falls due does not wait for it.
        self.index.merge_when_due(db)
        rejected: list[tuple[int, int, str, str]] = [
            (upload.id, line, describe_invalid(raw), Reason.INVALID_CODE)
            for line, raw in parsed.invalid
        ]
        # This thread shares the GIL with the event loop: the usual chunk (no repeats, no
        # holders) is handled by whole-list operations in C, with no Python per code, a piece
        # at a time with the GIL let go between pieces.
        codes: list[bytes] = []
        for read in parsed.codes_by_read():
            codes += read
            code_index.give_way()
        unique: dict[bytes, None] = {}
        for start in range(0, len(codes), code_index.PIECE):
            unique.update(dict.fromkeys(codes[start : start + code_index.PIECE]))
            code_index.give_way()
        repeated = len(unique) < len(codes)
        if repeated:
            rejected.extend(_repeats(upload.id, codes, parsed.lines))
        distinct = list(unique)
        ordered = code_index.in_order(distinct)
        unique_json = code_index.json_array(distinct)
        db.execute("BEGIN")
        try:
            holders: dict[bytes, list[Holder]] = {}
            for (
                code,
                list_id,
                upload_id,
                partner,
                status,
                upload_status,
                claimed,
            ) in self.index.holders(db, unique_json, ordered):
                live = (
                    upload_status == "completed"
                    or (upload_status == "in_progress" and upload_id not in self.index.failing)
                    or bool(claimed)
                )
                holder = Holder(list_id, upload_id, partner, status == Status.ARCHIVED, live)
                holders.setdefault(code.encode("ascii"), []).append(holder)
            if not holders and len(unique) <= room:
                # The usual case: every distinct code is new, and the JSON is already made.
                accepted, accepted_json = distinct, unique_json
                # Every code of the chunk, in its order, unless some repeat.
                packed = None if repeated else pack_lines(parsed.blocks)
            else:
                # A code's line is where it first appears: later ones are repeats.
                lines = dict(zip(reversed(codes), reversed(parsed.lines), strict=True))
                accepted, packed = [], None
                for code in unique:
                    reason = first_clash(target, holders[code]) if code in holders else None
                    if reason is None and len(accepted) >= room:
                        reason = Reason.LIST_FULL
                    if reason is None:
                        accepted.append(code)
                    else:
                        rejected.append((upload.id, lines[code], code.decode("ascii"), reason))
                accepted_json = code_index.json_array(accepted)
            if accepted:
                self.index.enter(db, first_id, upload.id, accepted_json, len(accepted), ordered)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        block, width = packed or pack(accepted)
        return _Checked(parsed.rows, first_id, len(accepted), block, width, rejected)

    def _store_chunk(self, checked: _Checked, kept: int, db: sqlite3.Connection) -> Segment | None:
        """Runs on the journal's thread inside its transaction: the block and the first `kept`
        rejected rows, by line."""
        upload, tally = self.upload, self._tally
        assert upload is not None
        segment = None
        if checked.accepted:
            # The block is written through a blob handle rather than bound: the cached
            # statement would keep a copy of the last block bound to it (1.2 MB) for good.
            db.execute(
                _INSERT_BLOCK,
                (checked.first_id, upload.id, upload.list_id, checked.accepted,
                 len(checked.block), checked.width),
            )  # fmt: skip
            with db.blobopen("code_blocks", "codes", checked.first_id) as blob:
                blob.write(checked.block)
            segment = Segment(
                upload.id, checked.first_id, checked.block, 0, checked.accepted, checked.width
            )
        if kept:
            rows = checked.rejected
            if kept < len(rows):
                rows = sorted(rows, key=itemgetter(1))[:kept]
            db.executemany(_INSERT_ERRORS, rows)
        tally.add(checked)
        db.execute(_PROGRESS, (tally.rows, tally.accepted, sum(tally.errors.values()),
                               msgpack.packb(dict(tally.errors)), upload.id))  # fmt: skip
        return segment

    def _take_tally(self) -> None:
        upload = self.upload
        assert upload is not None
        upload.rows = self._committed.rows
        upload.accepted = self._committed.accepted
        upload.errors = Counter(self._committed.errors)

    def _completion(self) -> CompleteUpload:
        upload = self.upload
        assert upload is not None
        upload.status = "completed"
        upload.finished_at = clock.now()
        return CompleteUpload(
            upload.id,
            tuple(self.segments),
            upload.accepted,
            (
                Rows(_FINISH, [upload.finish_row()]),
                Events(
                    [
                        events.upload_finished(
                            upload.list_id,
                            upload.id,
                            upload.filename,
                            upload.accepted,
                            upload.rejected,
                            upload.finished_at,
                        )
                    ]
                ),
            ),
        )

    async def _await_completion(self, completion: asyncio.Future[Any]) -> None:
        """Once the list's actor has the completion, its answer alone decides the upload's
        fate: a caller cancelled meanwhile still waits for it, so the codes are never both
        added to the pool and dropped from the database."""
        try:
            try:
                await asyncio.shield(completion)
            except asyncio.CancelledError:
                await asyncio.wait([completion])
                if completion.exception() is None:
                    raise
                completion.result()
        except errors.VoucherdError as exc:
            # Refused (the list was archived meanwhile, or the write failed): nothing was added.
            await self._fail("interrupted", exc.message)
            raise

    async def _fail(self, code: str, message: str) -> None:
        upload = self.upload
        assert upload is not None
        if self._writing is not None:
            # The chunk being written must land before the drop that undoes it.
            with contextlib.suppress(Exception):
                await self._written()
        self._take_tally()
        upload.status = "failed"
        upload.accepted = 0
        upload.error_code = code
        upload.error_message = message
        upload.finished_at = clock.now()
        self.segments.clear()

        def drop(db: sqlite3.Connection) -> list[StoredBlock]:
            db.execute(_FINISH, upload.finish_row())
            return drop_upload_codes(db, upload.id)

        failed = events.upload_failed(
            upload.list_id, upload.id, upload.filename, code, upload.finished_at
        )
        ops: list[Op] = [Step(drop), Events([failed])]
        # A task of its own, shielded: a cancelled request must still leave its upload
        # recorded as failed, or at least counted for nothing until it is.
        await asyncio.shield(_background(_record_failure(self.journal, self.index, upload.id, ops)))
        log.info("upload %d to list %d failed: %s", upload.id, upload.list_id, code)


# Failures being recorded; held here so the tasks are not collected.
_BACKGROUND: set[asyncio.Task[None]] = set()
RETRY_SECONDS = 2.0


def _background(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run `work` as a task held in _BACKGROUND until it ends."""
    task = asyncio.create_task(work)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


async def _record_failure(
    journal: Journal, index: CodeIndex, upload_id: int, ops: list[Op]
) -> None:
    """Record a failed upload, waiting for room in the journal's queue as chunks do: a client
    told to send the file again must not find its codes still counted. If the journal cannot
    write (a full disk, say), the failure is recorded as soon as it can be, without waiting for
    a restart, and meanwhile the checks count none of its codes."""
    try:
        dropped = await journal.write_waiting(*ops)
    except errors.VoucherdError as exc:
        log.error("upload %d: could not record its failure yet: %s", upload_id, exc.message)
        index.failing.add(upload_id)
        _background(_record_later(journal, index, upload_id, ops))
        return
    # Left behind, the index's entries of a failed upload would count for nothing in the
    # checks: forgetting them only keeps the index small.
    with contextlib.suppress(errors.VoucherdError, sqlite3.Error):
        await index.forget(dropped)


async def _record_later(journal: Journal, index: CodeIndex, upload_id: int, ops: list[Op]) -> None:
    """Retry recording a failed upload until it is written, or until the journal closes (then
    recovery fails it at the next start)."""
    while True:
        await asyncio.sleep(RETRY_SECONDS)
        try:
            await journal.write_waiting(*ops)
        except errors.NotReady:
            return
        except errors.VoucherdError:
            continue
        index.failing.discard(upload_id)
        log.info("upload %d: its failure is recorded", upload_id)
        return


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, errors.VoucherdError) else "upload interrupted"


def _repeats(
    upload_id: int, codes: list[bytes], lines: Sequence[int]
) -> list[tuple[int, int, str, str]]:
    """The rows of a chunk whose code appeared earlier in it."""
    seen: set[bytes] = set()
    found: list[tuple[int, int, str, str]] = []
    for code, line in zip(codes, lines, strict=True):
        if code in seen:
            found.append((upload_id, line, code.decode("ascii"), Reason.DUPLICATE_IN_FILE))
        seen.add(code)
    return found
