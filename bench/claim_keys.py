"""A list's map of claim keys as it grows: the cost a key and the longest stop, against one dict.

`python -m bench.claim_keys [--keys N] [--slice SIZE]` adds N keys a batch slice at a time, each
slice checked and added in one lookup a key as `ListActor` does (`add_new`), to a `ClaimKeys`
and, in the same run, to one plain dict (checked with `isdisjoint`, then updated). It prints
each million's ns a key and every slice that took longer than 10 ms: those are the doublings of
a table, during which the event loop, and every list's claims with it, wait. Run it pinned
(`taskset -c 0`) for steadier figures.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

from voucherd.claim_keys import ClaimKeys

STALL_S = 0.010


def grow(keys: list[str], size: int, adder: Callable[[list[str], range], None]) -> str:
    per_million: list[int] = []
    stalls: list[str] = []
    started = mark = time.perf_counter()
    for at in range(0, len(keys), size):
        part = keys[at : at + size]
        began = time.perf_counter()
        adder(part, range(at, at + len(part)))
        took = time.perf_counter() - began
        if took > STALL_S:
            stalls.append(f"{took * 1e3:.0f} ms at {at:,}")
        if (at + size) % 1_000_000 == 0:
            now = time.perf_counter()
            per_million.append(round((now - mark) / 1e6 * 1e9))
            mark = now
    total = time.perf_counter() - started
    return (
        f"{total / len(keys) * 1e9:.0f} ns a key; by million: {per_million}; "
        f"slices over {STALL_S * 1e3:.0f} ms: {', '.join(stalls) or 'none'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.claim_keys", description=__doc__)
    parser.add_argument("--keys", type=int, default=6_000_000)
    parser.add_argument("--slice", type=int, default=1000)
    args = parser.parse_args()
    keys = [f"user-{n}-{n * 7919 % 1_000_003}" for n in range(args.keys)]
    for key in keys:
        hash(key)  # hashed once, as a request's user ids are before they reach the map
    # The server collects rarely (gc.set_threshold) and these maps hold no containers.
    gc.disable()

    plain: dict[str, int] = {}

    def to_dict(part: list[str], ids: range) -> None:
        assert plain.keys().isdisjoint(part)
        plain.update(zip(part, ids, strict=True))

    claim_keys: ClaimKeys[int] = ClaimKeys()

    def to_claim_keys(part: list[str], ids: range) -> None:
        assert claim_keys.add_new(part, ids)

    print(f"{args.keys:,} keys in slices of {args.slice:,}")
    print(f"one dict (baseline): {grow(keys, args.slice, to_dict)}")
    plain.clear()
    print(f"ClaimKeys:           {grow(keys, args.slice, to_claim_keys)}")


if __name__ == "__main__":
    main()
