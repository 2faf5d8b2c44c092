"""The available codes of one list, packed: not a Python string per code.

Codes sit in segments, each a run of consecutive code ids from one upload stored as one bytes
object. Codes of one length, as an upload's nearly always are, are packed end to end, so a
12-character code costs 12 bytes plus a share of the segment's header; codes of mixed lengths
end with a newline each. Claims take codes from the front in upload order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple

_NEWLINE = ord("\n")


@dataclass(slots=True)
class Segment:
    upload_id: int
    next_id: int
    data: bytes
    pos: int = 0
    count: int = 0
    # The length every code has when they share one, and are packed without newlines; 0
    # when each code ends with a newline.
    width: int = 0

    @classmethod
    def of(cls, upload_id: int, first_id: int, codes: list[bytes]) -> Segment:
        data, width = pack(codes)
        return cls(upload_id, first_id, data, 0, len(codes), width)


# A stored block of codes: the first code's id, the codes as pack() made them, their width.
StoredBlock = tuple[int, bytes, int]


def pack(codes: list[bytes]) -> tuple[bytes, int]:
    """Codes as one bytes object, the way blocks are stored and segments hold them, and their
    width: end to end when all share one length (width), else each ended by a newline (0)."""
    lengths = set(map(len, codes))
    if len(lengths) == 1:
        return b"".join(codes), lengths.pop()
    return b"\n".join([*codes, b""]), 0


def pack_lines(blocks: list[bytes]) -> tuple[bytes, int]:
    """pack() for codes given as blocks of newline-ended lines, a block at a time."""
    width = blocks[0].find(b"\n") if blocks else 0
    for block in blocks:
        # One width for all if each newline sits where that width puts one, and no other.
        lines, odd = divmod(len(block), width + 1)
        if (
            width <= 0
            or odd
            or block.count(b"\n") != lines
            or block[width :: width + 1] != b"\n" * lines
        ):
            return b"".join(blocks), 0
    return b"".join([block.replace(b"\n", b"") for block in blocks]), width


def unpack(data: bytes, width: int) -> list[bytes]:
    """The codes of a block packed by pack()."""
    if width:
        return [data[at : at + width] for at in range(0, len(data), width)]
    return data.split(b"\n")[:-1]


class Code(NamedTuple):
    """One code taken from the pool (a tuple: one is made per claim, so it must be cheap)."""

    id: int
    code: str
    upload_id: int


class Taken(NamedTuple):
    """Codes taken at once, as columns: the ids, the codes, the upload of each."""

    ids: list[int]
    codes: list[str]
    upload_ids: list[int]


class CodePool:
    def __init__(self) -> None:
        self._segments: deque[Segment] = deque()
        self._returned: list[Code] = []
        self.available = 0

    def add(self, segments: Iterable[Segment]) -> None:
        for segment in segments:
            if segment.count:
                self._segments.append(segment)
                self.available += segment.count

    def pop(self) -> Code | None:
        if self._returned:
            self.available -= 1
            return self._returned.pop()
        if not self._segments:
            return None
        segment = self._segments[0]
        start = segment.pos
        if segment.width:
            end = segment.pos = start + segment.width
        else:
            end = segment.data.index(b"\n", start)
            segment.pos = end + 1
        code = Code(segment.next_id, segment.data[start:end].decode("ascii"), segment.upload_id)
        segment.next_id += 1
        segment.count -= 1
        if not segment.count:
            self._segments.popleft()
        self.available -= 1
        return code

    def take(self, count: int) -> Taken:
        """Up to `count` codes at once, in the order pop() would give them (batch claims), as
        columns: no object a code."""
        taken = Taken([], [], [])
        ids, codes, upload_ids = taken
        while self._returned and len(ids) < count:
            code = self._returned.pop()
            ids.append(code.id)
            codes.append(code.code)
            upload_ids.append(code.upload_id)
        while self._segments and len(ids) < count:
            segment = self._segments[0]
            wanted = min(count - len(ids), segment.count)
            cut, segment.pos = _cut(segment, wanted)
            ids += range(segment.next_id, segment.next_id + wanted)
            codes += cut
            upload_ids += repeat(segment.upload_id, wanted)
            segment.next_id += wanted
            segment.count -= wanted
            if not segment.count:
                self._segments.popleft()
        self.available -= len(ids)
        return taken

    def give_back(self, code: Code) -> None:
        """Return a code whose claim was never made durable; it goes out next."""
        self._returned.append(code)
        self.available += 1

    def give_back_taken(self, taken: Taken) -> None:
        """Return codes taken at once; they go out next, in the order they were taken."""
        self._returned += reversed(list(map(Code, *taken)))
        self.available += len(taken.ids)

    def held(self, upload_id: int) -> int:
        """How many codes of one upload are here."""
        in_segments = sum(s.count for s in self._segments if s.upload_id == upload_id)
        return in_segments + sum(1 for c in self._returned if c.upload_id == upload_id)

    def withdraw(self, upload_id: int) -> int:
        """Take out every code of one upload; return how many."""
        count = self.held(upload_id)
        self._segments = deque(s for s in self._segments if s.upload_id != upload_id)
        self._returned = [code for code in self._returned if code.upload_id != upload_id]
        self.available -= count
        return count

    def clear(self) -> None:
        """Free the memory of an archived list. `available` keeps its value: an archived
        list's codes still count as available in its record, they are just never handed out."""
        self._segments.clear()
        self._returned.clear()

    def codes(self) -> Iterator[Code]:
        """Every available code in the order claims would take them (for exports and checks)."""
        yield from reversed(self._returned)
        for segment in self._segments:
            codes, _ = _cut(segment, segment.count)
            for offset, code in enumerate(codes):
                yield Code(segment.next_id + offset, code, segment.upload_id)


def _cut(segment: Segment, count: int) -> tuple[list[str], int]:
    """The next `count` codes of a segment, and the offset past them: one decode or one split
    for the whole run instead of a search per code."""
    start = segment.pos
    if segment.width:
        width = segment.width
        end = start + count * width
        text = segment.data[start:end].decode("ascii")
        return [text[at : at + width] for at in range(0, end - start, width)], end
    parts = segment.data[start:].split(b"\n", count)[:count]
    end = start + sum(map(len, parts)) + count
    return [part.decode("ascii") for part in parts], end


def rebuild(
    upload_id: int, first_id: int, data: bytes, taken: list[int], width: int = 0
) -> list[Segment]:
    """Segments for a stored block of codes (packed at `width`, see pack()) minus the ids
    already taken, sorted (recovery)."""
    count = len(data) // width if width else data.count(b"\n")
    if not taken:
        return [Segment(upload_id, first_id, data, 0, count, width)]
    if taken[0] == first_id and taken[-1] == first_id + len(taken) - 1:
        # Claims take codes from the front, so the taken ones are nearly always a prefix.
        pos = len(taken) * width if width else _past_lines(data, len(taken))
        rest = count - len(taken)
        return (
            [Segment(upload_id, first_id + len(taken), data[pos:], 0, rest, width)] if rest else []
        )
    skip = set(taken)
    segments: list[Segment] = []
    run: list[bytes] = []
    run_first = first_id
    for offset, code in enumerate(unpack(data, width)):
        code_id = first_id + offset
        if code_id in skip:
            if run:
                segments.append(Segment.of(upload_id, run_first, run))
                run = []
            run_first = code_id + 1
        else:
            run.append(code)
    if run:
        segments.append(Segment.of(upload_id, run_first, run))
    return segments


def _past_lines(data: bytes, lines: int) -> int:
    """The offset just past the first `lines` lines of `data`, found with count(), which runs
    in C: at a million claimed codes a search per line would cost a third of a second."""
    # An upload's codes usually share one length: guess from the first line, then check.
    guess = lines * (data.index(b"\n") + 1)
    if guess <= len(data) and data[guess - 1] == _NEWLINE and data.count(b"\n", 0, guess) == lines:
        return guess
    # Otherwise the smallest offset whose prefix holds that many newlines.
    low, high = lines, len(data)
    while low < high:
        middle = (low + high) // 2
        if data.count(b"\n", 0, middle) < lines:
            low = middle + 1
        else:
            high = middle
    return low
