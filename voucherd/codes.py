"""Voucher codes and the CSV they arrive in: validation and a streaming line parser, no I/O.

A valid code is 1–64 characters of printable ASCII (`!` to `~`) other than `,` and `"`.
The parser works on bytes so that non-UTF-8 input is simply an invalid code, never a crash.
"""

from __future__ import annotations

import bisect
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

MAX_CODE_LENGTH = 64
_VALID = re.compile(rb"[!#-+\--~]{1,64}")
# A read made only of valid codes, one a line with nothing around them: the usual read.
_CLEAN_LINES = re.compile(rb"(?:[!#-+\--~]{1,64}\n)+")
_HEADER = b"code"
# Excel's "CSV UTF-8" export starts the file with a byte order mark.
_BOM = b"\xef\xbb\xbf"


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
    """The rows of one stretch of the file: good codes in order, and the rejected ones.

    The good codes are kept as blocks of newline-ended lines, one block per read, and their
    line numbers in an array: a chunk of 100,000 codes is then a few dozen objects rather than
    200,000, which would outlive each read and leave the heap fragmented after an upload."""

    blocks: list[bytes] = field(default_factory=list)
    lines: array[int] = field(default_factory=lambda: array("q"))
    invalid: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def good(self) -> int:
        return len(self.lines)

    @property
    def rows(self) -> int:
        return len(self.lines) + len(self.invalid)

    @property
    def codes(self) -> list[bytes]:
        """The good codes, in file order, made when asked for."""
        return [code for read in self.codes_by_read() for code in read]

    def codes_by_read(self) -> Iterator[list[bytes]]:
        """The good codes, in file order, a read's at a time."""
        for block in self.blocks:
            yield block.split(b"\n")[:-1]

    def extend(self, other: ParsedChunk) -> None:
        self.blocks.extend(other.blocks)
        self.lines.extend(other.lines)
        self.invalid.extend(other.invalid)

    def split(self, count: int) -> tuple[ParsedChunk, ParsedChunk]:
        """The first `count` rows, good and bad, in file order; and the rest."""
        if count >= self.rows:
            return self, ParsedChunk()
        # The line number of the first row left over: rows are numbered in file order.
        good, bad = self.lines, [line for line, _ in self.invalid]
        cut = sorted([*good[: count + 1], *bad[: count + 1]])[count] if bad else good[count]
        keep_good = bisect.bisect_left(good, cut)
        keep_bad = bisect.bisect_left(bad, cut)
        head, tail = _cut_blocks(self.blocks, keep_good)
        return (
            ParsedChunk(head, good[:keep_good], self.invalid[:keep_bad]),
            ParsedChunk(tail, good[keep_good:], self.invalid[keep_bad:]),
        )


def _cut_blocks(blocks: list[bytes], count: int) -> tuple[list[bytes], list[bytes]]:
    """Blocks holding the first `count` lines, and blocks holding the rest."""
    for index, block in enumerate(blocks):
        lines = block.count(b"\n")
        if count < lines:
            # Only the one block the cut falls in is split into lines.
            parts = block.split(b"\n")
            head = [*blocks[:index], _joined(parts[:count])] if count else blocks[:index]
            return head, [_joined(parts[count:-1]), *blocks[index + 1 :]]
        count -= lines
    return blocks, []


def _joined(codes: list[bytes]) -> bytes:
    return b"\n".join(codes) + b"\n" if codes else b""


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
        text = self._partial + (data if nul < 0 else data[:nul])
        end = text.rfind(b"\n") + 1
        whole, self._partial = text[:end], text[end:]
        chunk = self._parse_clean(whole) or self._parse(whole.split(b"\n")[:-1])
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

    def _parse_clean(self, whole: bytes) -> ParsedChunk | None:
        """The usual read, past the header, checked whole by one regex with no Python per
        line (a 64 KiB read took 3-5 ms of the event loop line by line); None for any other,
        which is parsed line by line."""
        if not self._seen_content or self.max_line_bytes < MAX_CODE_LENGTH:
            return None
        if _CLEAN_LINES.fullmatch(whole) is None:
            return None
        count = whole.count(b"\n")
        lines = array("q", range(self.line + 1, self.line + count + 1))
        self.line += count
        return ParsedChunk([whole], lines)

    def _parse(self, lines: list[bytes]) -> ParsedChunk:
        chunk = ParsedChunk()
        good: list[bytes] = []
        fullmatch = _VALID.fullmatch
        number = self.line
        for raw in lines:
            number += 1
            if len(raw) > self.max_line_bytes:
                raise UploadAborted("line_too_long", self._too_long(number))
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            code = raw.strip()
            if not code:
                continue
            if not self._seen_content:
                self._seen_content = True
                if code.lower() == _HEADER:
                    continue
            if fullmatch(code) is not None:
                good.append(code)
                chunk.lines.append(number)
            elif b"," in code:
                raise UploadAborted(
                    "multiple_columns",
                    f"line {number} holds a comma: the file must have exactly one column",
                )
            else:
                chunk.invalid.append((number, code))
        self.line = number
        if good:
            chunk.blocks.append(_joined(good))
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
