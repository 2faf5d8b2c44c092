"""Claim keys: how a list finds its committed claims by key, in a map that grows without stalls.

Idempotency and the voucher tray look claims up by key in memory, and a campaign counts its
rewards by key and by user. A single dict of millions of keys stops the event loop each time it
doubles its table, and every list's claims stop with it: 0.2 s at 1.4M keys, 0.4 s at 2.8M,
0.8 s at 5.6M (`python -m bench.claim_keys`), seconds for tens of millions. So the map fills
one dict up to FIRST keys and never grows it again; later keys go to one of 256 dicts chosen by
their hash, each of which doubles at a 256th of the size. A map with fewer keys, nearly every
one, costs what one dict costs.
"""

from __future__ import annotations

import operator
import sys
from collections import deque
from collections.abc import Sequence
from itertools import repeat
from typing import Generic, TypeVar

V = TypeVar("V")

# The first dict's last doubling, at 699,051 keys, takes 30-95 ms (the more when the process
# must grow for it); the next, at 1,398,102, would take twice that, and so on.
FIRST = 1_000_000
# A dict picks a key's slot by the low bits of its hash, so the top byte picks the dict.
_SHIFT = sys.hash_info.width - 8
_SHARDS = 256
_ABSENT = object()


class ClaimKeys(Generic[V]):
    """A map from claim keys (`claims.identity`) or user ids to values."""

    __slots__ = ("_first", "_shards")

    def __init__(self, first: dict[str, V] | None = None) -> None:
        # Recovery hands over one dict however large: nobody waits while it is built, and
        # it takes no new keys past FIRST.
        self._first: dict[str, V] = {} if first is None else first
        self._shards: list[dict[str, V]] | None = None

    def __len__(self) -> int:
        return len(self._first) + sum(map(len, self._shards or ()))

    def get(self, key: str) -> V | None:
        found = self._first.get(key)
        if found is None and self._shards is not None:
            return self._shards[hash(key) >> _SHIFT].get(key)
        return found

    def add(self, keys: Sequence[str], values: Sequence[V]) -> None:
        """Add keys the map does not hold yet, with their values."""
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values")
        if self._shards is None and len(self._first) + len(keys) <= FIRST:
            self._first.update(zip(keys, values, strict=True))
        else:
            deque(map(operator.setitem, self._homes(keys), keys, values), maxlen=0)

    def add_new(self, keys: Sequence[str], values: Sequence[V]) -> bool:
        """Add these distinct keys with their values if the map holds none of them; whether
        it did. If it did not, the map is as it was. Each key is looked up once, in C: in a
        map of a million keys a lookup waits for memory, about 0.4 µs here."""
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values")
        values = list(values)
        if self._shards is None and len(self._first) + len(keys) <= FIRST:
            found = list(map(self._first.setdefault, keys, values))
        elif not self._first.keys().isdisjoint(keys):
            return False  # new keys go to the other dicts, so the first is looked in apart
        else:
            found = list(map(dict.setdefault, self._homes(keys), keys, values))
        if all(map(operator.is_, found, values)):
            return True
        added = zip(keys, found, values, strict=True)
        self.remove([key for key, was, value in added if was is value])
        return False

    def remove(self, keys: Sequence[str]) -> None:
        """Remove keys the map holds."""
        for key in keys:
            if self._first.pop(key, _ABSENT) is _ABSENT and self._shards is not None:
                del self._shards[hash(key) >> _SHIFT][key]

    def set(self, key: str, value: V) -> None:
        """Set a key's value, adding the key if the map does not hold it."""
        first = self._first
        if key in first or (self._shards is None and len(first) < FIRST):
            first[key] = value  # a key it holds, or room for one: the first dict stays bounded
        else:
            self._homes((key,))[0][key] = value

    def pop(self, key: str) -> V | None:
        """Remove a key; its value, or None if the map did not hold it."""
        found = self._first.pop(key, None)
        if found is None and self._shards is not None:
            return self._shards[hash(key) >> _SHIFT].pop(key, None)
        return found

    def setdefault(self, key: str, default: V) -> V:
        found = self.get(key)
        if found is None:
            self.add((key,), (default,))
            found = default
        return found

    def _homes(self, keys: Sequence[str]) -> list[dict[str, V]]:
        """The dicts these keys belong in, made at the first key past the first dict."""
        if self._shards is None:
            self._shards = [{} for _ in range(_SHARDS)]
        return list(
            map(self._shards.__getitem__, map(operator.rshift, map(hash, keys), repeat(_SHIFT)))
        )
