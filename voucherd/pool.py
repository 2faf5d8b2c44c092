"""The available codes of one list, packed: not a Python string per code.

Codes sit in segments, each a run of consecutive code ids from one upload stored as one bytes
object of newline-terminated codes, so a 12-character code costs 13 bytes plus a share of the
segment header. Claims take codes from the front in upload order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

_NEWLINE = ord("\n")


@dataclass(slots=True)
class Segment:
    upload_id: int
    next_id: int
    data: bytes
    pos: int = 0
    count: int = 0

    @classmethod
    def of(cls, upload_id: int, first_id: int, codes: list[bytes]) -> Segment:
        data = b"\n".join(codes) + b"\n"
        return cls(upload_id, first_id, data, 0, len(codes))


class Code(NamedTuple):
    """One code taken from the pool (a tuple: one is made per claim, so it must be cheap)."""

    id: int
    code: str
    upload_id: int


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
        end = segment.data.index(b"\n", segment.pos)
        code = Code(
            segment.next_id, segment.data[segment.pos : end].decode("ascii"), segment.upload_id
        )
        segment.pos = end + 1
        segment.next_id += 1
        segment.count -= 1
        if not segment.count:
            self._segments.popleft()
        self.available -= 1
        return code

    def take(self, count: int) -> list[Code]:
        """Up to `count` codes at once, in the order pop() would give them (batch claims)."""
        taken: list[Code] = []
        while self._returned and len(taken) < count:
            taken.append(self._returned.pop())
        while self._segments and len(taken) < count:
            segment = self._segments[0]
            wanted = min(count - len(taken), segment.count)
            # One split for the whole run instead of a search per code.
            parts = segment.data[segment.pos :].split(b"\n", wanted)
            first, upload_id = segment.next_id, segment.upload_id
            taken.extend(
                Code(first + offset, parts[offset].decode("ascii"), upload_id)
                for offset in range(wanted)
            )
            segment.pos += sum(map(len, parts[:wanted])) + wanted
            segment.next_id += wanted
            segment.count -= wanted
            if not segment.count:
                self._segments.popleft()
        self.available -= len(taken)
        return taken

    def give_back(self, code: Code) -> None:
        """Return a code whose claim was never made durable; it goes out next."""
        self._returned.append(code)
        self.available += 1

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
            codes = segment.data[segment.pos :].split(b"\n")[:-1]
            for offset, code in enumerate(codes):
                yield Code(segment.next_id + offset, code.decode("ascii"), segment.upload_id)


def rebuild(upload_id: int, first_id: int, data: bytes, taken: list[int]) -> list[Segment]:
    """Segments for a stored block of codes minus the ids already taken, sorted (recovery)."""
    count = data.count(b"\n")
    if not taken:
        return [Segment(upload_id, first_id, data, 0, count)]
    if taken[0] == first_id and taken[-1] == first_id + len(taken) - 1:
        # Claims take codes from the front, so the taken ones are nearly always a prefix.
        pos = _past_lines(data, len(taken))
        rest = count - len(taken)
        return [Segment(upload_id, first_id + len(taken), data[pos:], 0, rest)] if rest else []
    skip = set(taken)
    segments: list[Segment] = []
    run: list[bytes] = []
    run_first = first_id
    for offset, code in enumerate(data.split(b"\n")[:-1]):
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
