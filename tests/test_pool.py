"""The packed pool of available codes, without a server: order, give-back, withdraw, rebuild."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucherd.pool import Code, CodePool, Segment, Taken, pack, pack_lines, rebuild, unpack


def codes_of(upload_id: int, first_id: int, count: int) -> list[bytes]:
    return [f"U{upload_id}-{first_id + offset}".encode() for offset in range(count)]


def segment(upload_id: int, first_id: int, count: int) -> Segment:
    return Segment.of(upload_id, first_id, codes_of(upload_id, first_id, count))


def expected(upload_id: int, first_id: int, count: int) -> list[Code]:
    return [
        Code(first_id + offset, code.decode(), upload_id)
        for offset, code in enumerate(codes_of(upload_id, first_id, count))
    ]


def drain(pool: CodePool) -> list[Code]:
    taken: list[Code] = []
    while (code := pool.pop()) is not None:
        taken.append(code)
    return taken


def one_by_one(taken: Taken) -> list[Code]:
    return list(map(Code, *taken))


def flatten(segments: list[Segment]) -> list[Code]:
    pool = CodePool()
    pool.add(segments)
    return drain(pool)


# -- pop order ---------------------------------------------------------------------------------


def test_an_empty_pool_pops_nothing() -> None:
    pool = CodePool()
    assert pool.pop() is None
    assert pool.available == 0


def test_codes_go_out_in_upload_order_across_segments() -> None:
    pool = CodePool()
    pool.add([segment(1, 1, 3), segment(1, 4, 2)])
    pool.add([segment(2, 6, 4)])
    assert pool.available == 9
    assert drain(pool) == expected(1, 1, 3) + expected(1, 4, 2) + expected(2, 6, 4)
    assert pool.available == 0
    assert pool.pop() is None


def test_empty_segments_are_ignored() -> None:
    pool = CodePool()
    pool.add([Segment(1, 1, b"", 0, 0), segment(2, 1, 2)])
    assert pool.available == 2
    assert drain(pool) == expected(2, 1, 2)


def test_codes_added_after_the_pool_ran_dry_go_out() -> None:
    pool = CodePool()
    pool.add([segment(1, 1, 1)])
    assert drain(pool) == expected(1, 1, 1)
    pool.add([segment(2, 2, 2)])
    assert drain(pool) == expected(2, 2, 2)


def test_a_code_given_back_goes_out_next() -> None:
    pool = CodePool()
    pool.add([segment(1, 1, 5)])
    first = pool.pop()
    second = pool.pop()
    assert first is not None
    assert second is not None
    pool.give_back(second)
    pool.give_back(first)
    assert pool.available == 5
    # Given back in reverse, so they go out in their original order.
    assert drain(pool) == expected(1, 1, 5)


def test_the_last_code_given_back_goes_out_first() -> None:
    pool = CodePool()
    pool.add([segment(1, 1, 3)])
    first = pool.pop()
    assert first is not None
    pool.give_back(first)
    assert pool.pop() == first
    assert pool.available == 2


def test_codes_lists_what_pop_would_yield_without_taking_it() -> None:
    pool = CodePool()
    pool.add([segment(1, 1, 3), segment(2, 4, 3)])
    taken = pool.pop()
    assert taken is not None
    pool.pop()
    pool.give_back(taken)
    listed = list(pool.codes())
    assert pool.available == len(listed) == 5
    assert drain(pool) == listed


# -- withdraw and held_by ----------------------------------------------------------------------


def three_uploads() -> CodePool:
    pool = CodePool()
    pool.add([segment(1, 1, 3)])
    pool.add([segment(2, 4, 4), segment(2, 8, 2)])
    pool.add([segment(3, 10, 3)])
    return pool


def test_held_counts_one_uploads_codes() -> None:
    pool = three_uploads()
    assert pool.held(2) == 6
    assert pool.held(1) == 3
    assert pool.held(99) == 0
    assert pool.available == 12


def test_held_leaves_out_codes_already_taken() -> None:
    pool = three_uploads()
    for _ in range(5):
        pool.pop()
    assert pool.held(1) == 0
    assert pool.held(2) == 4


def test_held_counts_a_code_given_back() -> None:
    pool = three_uploads()
    taken = [pool.pop() for _ in range(5)]
    returned = taken[4]
    assert returned is not None
    pool.give_back(returned)
    assert pool.held(2) == 5
    assert drain(pool) == [returned, *expected(2, 6, 2), *expected(2, 8, 2), *expected(3, 10, 3)]


def test_withdrawing_one_upload_leaves_the_others_in_order() -> None:
    pool = three_uploads()
    assert pool.withdraw(2) == 6
    assert pool.available == 6
    assert pool.held(2) == 0
    assert drain(pool) == expected(1, 1, 3) + expected(3, 10, 3)


def test_withdraw_takes_only_the_codes_still_here() -> None:
    pool = three_uploads()
    for _ in range(4):
        pool.pop()
    assert pool.withdraw(2) == 5
    assert pool.available == 3
    assert drain(pool) == expected(3, 10, 3)


def test_withdraw_takes_a_code_given_back_too() -> None:
    pool = three_uploads()
    taken = [pool.pop() for _ in range(4)]
    code_of_two = taken[3]
    code_of_one = taken[2]
    assert code_of_two is not None
    assert code_of_one is not None
    pool.give_back(code_of_two)
    pool.give_back(code_of_one)
    assert pool.withdraw(2) == 6
    assert drain(pool) == [code_of_one, *expected(3, 10, 3)]


def test_withdrawing_an_unknown_or_withdrawn_upload_takes_nothing() -> None:
    pool = three_uploads()
    pool.withdraw(2)
    assert pool.withdraw(2) == 0
    assert pool.withdraw(99) == 0
    assert pool.available == 6


def test_clear_empties_the_pool() -> None:
    pool = three_uploads()
    pool.clear()
    assert pool.pop() is None
    assert list(pool.codes()) == []


def test_codes_of_one_length_are_packed_without_newlines() -> None:
    same = Segment.of(1, 1, [b"AAAA", b"BBBB", b"CCCC"])
    mixed = Segment.of(2, 4, [b"AAAA", b"BBB", b"CCCCC"])
    assert (same.data, same.width) == (b"AAAABBBBCCCC", 4)
    assert (mixed.data, mixed.width) == (b"AAAA\nBBB\nCCCCC\n", 0)
    pool = CodePool()
    pool.add([same, mixed])
    assert pool.pop() == Code(1, "AAAA", 1)
    assert pool.take(3) == ([2, 3, 4], ["BBBB", "CCCC", "AAAA"], [1, 1, 2])
    assert drain(pool) == [Code(5, "BBB", 2), Code(6, "CCCCC", 2)]


@given(lengths=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=8))
def test_a_segment_holds_its_codes_whatever_their_lengths(lengths: list[int]) -> None:
    # Lengths that add up like one shared length's must not pass for one.
    codes = [bytes([65 + n % 26]) * length for n, length in enumerate(lengths)]
    pool = CodePool()
    pool.add([Segment.of(1, 1, codes)])
    assert [code.encode() for code in pool.take(len(codes)).codes] == codes


@given(
    reads=st.lists(
        st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=6),
        min_size=1,
        max_size=4,
    )
)
def test_packing_keeps_every_code_whatever_their_lengths(reads: list[list[int]]) -> None:
    # An upload's codes arrive as blocks of newline-ended lines, a block per read.
    codes = [[bytes([65 + n % 26]) * length for n, length in enumerate(read)] for read in reads]
    blocks = [b"".join(code + b"\n" for code in read) for read in codes]
    every = [code for read in codes for code in read]
    for data, width in (pack_lines(blocks), pack(every)):
        assert unpack(data, width) == every
        assert width == (len(every[0]) if len({len(code) for code in every}) == 1 else 0)


# -- rebuild -----------------------------------------------------------------------------------


def block(upload_id: int, first_id: int, count: int) -> bytes:
    return b"".join(code + b"\n" for code in codes_of(upload_id, first_id, count))


def model(upload_id: int, first_id: int, count: int, taken: list[int]) -> list[Code]:
    return [code for code in expected(upload_id, first_id, count) if code.id not in set(taken)]


def assert_well_formed(segments: list[Segment], upload_id: int) -> None:
    for part in segments:
        assert part.upload_id == upload_id
        assert part.count > 0
        rest = part.data[part.pos :]
        if part.width:
            assert b"\n" not in rest
            assert len(rest) == part.count * part.width
        else:
            assert rest.count(b"\n") == part.count


def test_rebuild_with_no_code_taken_is_the_whole_block() -> None:
    segments = rebuild(7, 100, block(7, 100, 5), [])
    assert_well_formed(segments, 7)
    assert flatten(segments) == expected(7, 100, 5)


def test_rebuild_with_a_prefix_taken_starts_after_it() -> None:
    segments = rebuild(7, 100, block(7, 100, 5), [100, 101])
    assert_well_formed(segments, 7)
    assert [(part.next_id, part.count) for part in segments] == [(102, 3)]
    assert flatten(segments) == expected(7, 100, 5)[2:]


def test_rebuild_with_every_code_taken_is_empty() -> None:
    assert rebuild(7, 100, block(7, 100, 5), [100, 101, 102, 103, 104]) == []


@pytest.mark.parametrize(
    "taken",
    [[101], [104], [100, 104], [101, 102, 103], [100, 102, 104], [102], [100, 101, 103]],
)
def test_rebuild_with_scattered_codes_taken_matches_the_model(taken: list[int]) -> None:
    segments = rebuild(7, 100, block(7, 100, 5), taken)
    assert_well_formed(segments, 7)
    assert flatten(segments) == model(7, 100, 5, taken)


def test_rebuild_keeps_the_ids_of_the_codes_left() -> None:
    pool = CodePool()
    pool.add(rebuild(7, 100, block(7, 100, 6), [101, 104]))
    assert pool.held(7) == 4
    assert [code.id for code in drain(pool)] == [100, 102, 103, 105]


@given(lengths=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=12))
def test_rebuild_after_a_prefix_of_codes_of_any_lengths(lengths: list[int]) -> None:
    # The prefix's end is guessed from the first code's length, then checked: codes of other
    # lengths must still cut at the right line.
    codes = [bytes([65 + n % 26]) * length for n, length in enumerate(lengths)]
    data = b"".join(code + b"\n" for code in codes)
    for taken in range(1, len(codes)):
        segments = rebuild(1, 10, data, list(range(10, 10 + taken)))
        assert [code.code.encode() for code in flatten(segments)] == codes[taken:]


@given(
    count=st.integers(min_value=1, max_value=40),
    first_id=st.integers(min_value=1, max_value=10_000),
    picks=st.sets(st.integers(min_value=0, max_value=39)),
)
def test_rebuild_leaves_exactly_the_codes_not_taken(
    count: int, first_id: int, picks: set[int]
) -> None:
    taken = sorted(first_id + pick for pick in picks if pick < count)
    segments = rebuild(3, first_id, block(3, first_id, count), taken)
    assert_well_formed(segments, 3)
    assert flatten(segments) == model(3, first_id, count, taken)


# -- available matches pop, under any sequence of operations -----------------------------------


@dataclass
class Model:
    """The pool as a plain list: codes in the order they go out."""

    queue: list[Code]

    def withdraw(self, upload_id: int) -> int:
        kept = [code for code in self.queue if code.upload_id != upload_id]
        count = len(self.queue) - len(kept)
        self.queue = kept
        return count


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(min_value=0, max_value=4)),
        st.tuples(st.just("pop"), st.integers(min_value=1, max_value=5)),
        st.tuples(st.just("take"), st.integers(min_value=1, max_value=7)),
        st.tuples(st.just("give_back"), st.integers(min_value=1, max_value=3)),
        st.tuples(st.just("give_back_taken"), st.integers(min_value=1, max_value=4)),
        st.tuples(st.just("withdraw"), st.integers(min_value=1, max_value=4)),
    ),
    max_size=40,
)


@given(OPERATIONS)
def test_available_always_matches_what_pop_yields(operations: list[tuple[str, int]]) -> None:
    pool = CodePool()
    shadow = Model([])
    out: list[Code] = []
    next_id = 1
    upload_id = 0
    for name, arg in operations:
        if name == "add":
            upload_id += 1
            parts = [segment(upload_id, next_id, arg), segment(upload_id, next_id + arg, 2)]
            pool.add(parts)
            shadow.queue.extend(expected(upload_id, next_id, arg + 2))
            next_id += arg + 2
        elif name == "pop":
            for _ in range(arg):
                code = pool.pop()
                assert code == (shadow.queue.pop(0) if shadow.queue else None)
                if code is not None:
                    out.append(code)
        elif name == "take":
            codes = one_by_one(pool.take(arg))
            assert codes == shadow.queue[:arg]
            del shadow.queue[:arg]
            out.extend(codes)
        elif name == "give_back":
            for _ in range(min(arg, len(out))):
                code = out.pop()
                pool.give_back(code)
                shadow.queue.insert(0, code)
        elif name == "give_back_taken":
            # The last codes out, given back at once as a batch slice gives them.
            back = out[len(out) - min(arg, len(out)) :]
            del out[len(out) - len(back) :]
            pool.give_back_taken(
                Taken(*map(list, zip(*back, strict=True))) if back else Taken([], [], [])
            )
            shadow.queue[:0] = back
        else:
            held = pool.held(arg)
            count = pool.withdraw(arg)
            assert count == held == shadow.withdraw(arg)
        assert pool.available == len(shadow.queue)
        assert list(pool.codes()) == shadow.queue
    assert drain(pool) == shadow.queue
    assert pool.available == 0
