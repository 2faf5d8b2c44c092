"""Logging: voucherd's own lines at the configured level, and nothing that could carry a code
or a key.

Two libraries would log partners' secrets if let: aiosqlite's debug lines repeat every
statement's parameters (claim rows, upload chunks), and aiohttp logs a request it cannot parse
with its raw line and headers (an `Authorization` header, a code in a path).
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _NoRawRequests(logging.Filter):
    """Keep aiohttp's line about a request it could not parse, without the request itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            # A body aiohttp cannot decode (a broken gzip) raises again when it reads what a
            # handler left unread: the client's fault, told in a line.
            status = exc.code if isinstance(exc, HttpProcessingError) else 400
            record.msg = (
                f"{record.msg}: unparseable request ({type(exc).__name__}, status {status})"
            )
            record.exc_info = None
            record.exc_text = None
        return True


def configure(level: str) -> None:
    logging.basicConfig(level=logging.INFO, format=FORMAT)
    logging.getLogger("voucherd").setLevel(level.upper())
    # Never below INFO, whatever voucherd's own level: their debug lines hold secrets.
    for name in ("aiosqlite", "aiohttp"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger("voucherd").level))
    logging.getLogger("aiohttp.server").addFilter(_NoRawRequests())
