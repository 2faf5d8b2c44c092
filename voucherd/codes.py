"""Voucher codes and the CSV they arrive in: validation and a streaming line parser, no I/O.

A valid code is 1–64 characters of printable ASCII (`!` to `~`) other than `,` and `"`.
The parser works on bytes so that non-UTF-8 input is simply an invalid code, never a crash.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from enum import StrEnum

MAX_CODE_LENGTH = 64
_VALID = re.compile(rb"[!#-+\--~]{1,64}")
_HEADER = b"code"


class Reason(StrEnum):
    """Why a row of an upload was rejected; the keys of an upload's `errors`."""

    DUPLICATE_IN_FILE = "duplicate_in_file"
    DUPLICATE_IN_LIST = "duplicate_in_list"
    DUPLICATE_IN_PARTNER = "duplicate_in_partner"
    INVALID_CODE = "invalid_code"
    LIST_FULL = "list_full"


class UploadAborted(Exception):
    """The file as a whole is unacceptable; no code of it may be added."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def is_valid(code: str) -> bool:
    return code.isascii() and _VALID.fullmatch(code.encode("ascii")) is not None


@dataclass(slots=True)
class ParsedChunk:
    """The rows of one stretch of the file: good codes in order, and the rejected ones."""

    codes: list[bytes] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    invalid: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.codes) + len(self.invalid)

    def split(self, count: int) -> tuple[ParsedChunk, ParsedChunk]:
        """The first `count` rows, good and bad, in file order; and the rest."""
        if count >= self.rows:
            return self, ParsedChunk()
        # The line number of the first row left over: rows are numbered in file order.
        good, bad = self.lines, [line for line, _ in self.invalid]
        cut = sorted(good[: count + 1] + bad[: count + 1])[count] if bad else good[count]
        keep_good = bisect.bisect_left(good, cut)
        keep_bad = bisect.bisect_left(bad, cut)
        return (
            ParsedChunk(self.codes[:keep_good], good[:keep_good], self.invalid[:keep_bad]),
            ParsedChunk(self.codes[keep_good:], good[keep_good:], self.invalid[keep_bad:]),
        )


class CsvParser:
    """Feed it the body as it arrives; it yields parsed rows and never holds more than a line."""

    def __init__(self, max_line_bytes: int = 4096) -> None:
        self.max_line_bytes = max_line_bytes
        self.line = 0
        self._partial = b""
        self._seen_content = False

    def feed(self, data: bytes) -> ParsedChunk:
        # The rows before a fault are parsed first, so the first bad line decides how the file
        # fails, however the network happened to cut it.
        nul = data.find(b"\0")
        lines = (self._partial + (data if nul < 0 else data[:nul])).split(b"\n")
        self._partial = lines.pop()
        chunk = self._parse(lines)
        if nul >= 0:
            raise UploadAborted(
                "binary_content", f"line {self.line + 1} holds a NUL byte: the file is not a CSV"
            )
        if len(self._partial) > self.max_line_bytes:
            raise UploadAborted("line_too_long", self._too_long(self.line + 1))
        return chunk

    def finish(self) -> ParsedChunk:
        rest, self._partial = self._partial, b""
        return self._parse([rest] if rest else [])

    def _parse(self, lines: list[bytes]) -> ParsedChunk:
        chunk = ParsedChunk()
        fullmatch = _VALID.fullmatch
        number = self.line
        for raw in lines:
            number += 1
            if len(raw) > self.max_line_bytes:
                raise UploadAborted("line_too_long", self._too_long(number))
            code = raw.strip()
            if not code:
                continue
            if not self._seen_content:
                self._seen_content = True
                if code.lower() == _HEADER:
                    continue
            if fullmatch(code) is not None:
                chunk.codes.append(code)
                chunk.lines.append(number)
            elif b"," in code:
                raise UploadAborted(
                    "multiple_columns",
                    f"line {number} holds a comma: the file must have exactly one column",
                )
            else:
                chunk.invalid.append((number, code))
        self.line = number
        return chunk

    def _too_long(self, number: int) -> str:
        return f"line {number} is longer than {self.max_line_bytes} bytes"


def describe_invalid(code: bytes) -> str:
    """A printable rendering of a rejected row for the error file: bytes outside printable
    ASCII become `\\xNN`, so no control character can break the CSV it goes into."""
    return "".join(
        chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}"
        for byte in code[: MAX_CODE_LENGTH * 2]
    )
