"""Handlers for uploads: stream a CSV in, read the history and error files, withdraw."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from voucherd import errors, wire
from voucherd.actors.voucher_list import ListActor, Withdraw
from voucherd.codes import UploadAborted
from voucherd.server.inputs import page, path_id, unstalled
from voucherd.server.keys import BUDGETS, CODE_INDEX, DIRECTORY, JOURNAL, SETTINGS, caller
from voucherd.server.pieces import pieces
from voucherd.uploads import UPLOAD_COLUMNS, Upload, Uploader

READ_SIZE = 64 * 1024
CSV_TYPES = ("text/csv", "text/plain", "application/csv")
MAX_FILENAME = 255


async def create_upload(request: web.Request) -> web.Response:
    list_id = path_id(request, "list_id", "list")
    actor = request.app[DIRECTORY].actor(list_id)
    limit = request.app[SETTINGS].max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise errors.PayloadTooLarge(f"the file is larger than {limit} bytes")
    # Held from the first byte read: a stalled upload holds its buffers as long as it lasts.
    with request.app[BUDGETS].uploads.hold(1):
        upload = await _upload(request, actor)
    return wire.response(upload.view(), status=201)


async def _upload(request: web.Request, actor: ListActor) -> Upload:
    filename = request.query.get("filename")
    if request.content_type == "multipart/form-data":
        body, part_name = await _multipart_file(request)
        filename = filename or part_name
    elif request.content_type in CSV_TYPES:
        body = request.content.iter_chunked(READ_SIZE)
    else:
        raise errors.UnsupportedMediaType(
            "send the CSV as text/csv or text/plain, or as the field 'file' of multipart/form-data"
        )
    if filename is not None and len(filename) > MAX_FILENAME:
        raise errors.InvalidRequest(f"filename must be at most {MAX_FILENAME} characters")
    if filename is not None and "\x00" in filename:
        raise errors.InvalidRequest("filename must not contain NUL")
    settings = request.app[SETTINGS]
    key = caller(request)
    body = unstalled(body, settings.body_timeout)
    return await Uploader(settings, actor, request.app[CODE_INDEX]).run(
        body, filename, key.name if key else None
    )


async def _multipart_file(request: web.Request) -> tuple[AsyncIterator[bytes], str | None]:
    try:
        return await _find_file(request)
    except (ValueError, HttpProcessingError) as exc:
        # The parser's message may quote the body; only its kind is told.
        raise errors.InvalidRequest(
            f"the multipart body is malformed ({type(exc).__name__})"
        ) from None


# Transfer encodings that leave a part's bytes as they are.
_PLAIN_TRANSFER = ("", "binary", "8bit", "7bit")


async def _find_file(request: web.Request) -> tuple[AsyncIterator[bytes], str | None]:
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            raise errors.InvalidRequest("the multipart body has no field named 'file'")
        if isinstance(part, BodyPartReader) and part.name == "file":
            break
        if isinstance(part, BodyPartReader):
            await part.release()
    transfer = part.headers.get("Content-Transfer-Encoding", "").lower()
    encoding = part.headers.get("Content-Encoding", "identity").lower()
    if transfer not in _PLAIN_TRANSFER or encoding != "identity":
        # Read as they come, encoded bytes would be taken for codes.
        raise errors.UnsupportedMediaType("send the file part as it is, not encoded")

    async def chunks() -> AsyncIterator[bytes]:
        while data := await part.read_chunk(READ_SIZE):
            yield data
        if not part.at_eof():
            # The body ended without the part's closing boundary: the file may be cut short.
            raise UploadAborted(
                "truncated_body", "the multipart body ends before the file part's closing boundary"
            )

    return chunks(), part.filename


async def _load(request: web.Request) -> Upload:
    list_id = path_id(request, "list_id", "list")
    request.app[DIRECTORY].actor(list_id)
    upload_id = path_id(request, "upload_id", "upload")
    rows = await request.app[JOURNAL].reader.execute_fetchall(
        f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ? AND list_id = ?", (upload_id, list_id)
    )
    for row in rows:
        return Upload.from_row(tuple(row))
    raise errors.NotFound(f"upload {upload_id} of list {list_id} does not exist")


async def list_uploads(request: web.Request) -> web.Response:
    list_id = path_id(request, "list_id", "list")
    request.app[DIRECTORY].actor(list_id)
    wanted = page(request)
    # One row past the page says whether more follow; SQLite reads -1 as no limit.
    rows = await request.app[JOURNAL].reader.execute_fetchall(
        f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE list_id = ? AND id > ? ORDER BY id LIMIT ?",
        (list_id, wanted.after, -1 if wanted.limit is None else wanted.limit + 1),
    )
    found, more = wanted.cut(list(rows))
    views = []
    async for piece in pieces(found):
        views += [Upload.from_row(tuple(row)).view() for row in piece]
    return wire.response({"uploads": views, "has_more": more})


async def get_upload(request: web.Request) -> web.Response:
    return wire.response((await _load(request)).view())


async def upload_errors(request: web.Request) -> web.StreamResponse:
    upload = await _load(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="upload-{upload.id}-errors.csv"',
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("line", "code", "reason"))
    reader = request.app[JOURNAL].reader
    after = 0
    while True:
        # A page at a time, each read finished before the client is written to: a statement
        # left open across a slow download would pin the shared reader's snapshot.
        rows = await reader.execute_fetchall(
            "SELECT line, code, reason FROM upload_errors WHERE upload_id = ? AND line > ?"
            " ORDER BY line LIMIT 5000",
            (upload.id, after),
        )
        if not rows:
            break
        writer.writerows(rows)
        after = list(rows)[-1][0]
        await response.write(buffer.getvalue().encode("utf-8"))
        buffer.seek(0)
        buffer.truncate()
    await response.write(buffer.getvalue().encode("utf-8"))
    await response.write_eof()
    return response


async def withdraw_upload(request: web.Request) -> web.Response:
    upload = await _load(request)
    actor = request.app[DIRECTORY].actor(upload.list_id)
    withdrawn: int = await actor.ask(Withdraw(upload.id))
    return wire.response({"withdrawn": withdrawn})
