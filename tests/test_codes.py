"""Codes and the CSV parser, without a server: valid codes, and how a body is cut into rows."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucherd.codes import CsvParser, ParsedChunk, UploadAborted, describe_invalid, is_valid

PRINTABLE = [chr(c) for c in range(ord("!"), ord("~") + 1)]
ALLOWED = [c for c in PRINTABLE if c not in ',"']


def parse(data: bytes, sizes: list[int] | None = None, max_line_bytes: int = 4096) -> ParsedChunk:
    """Feed `data` in pieces of the given sizes (the rest in one piece), then finish."""
    parser = CsvParser(max_line_bytes)
    whole = ParsedChunk()
    pos = 0
    pieces: list[bytes] = []
    for size in sizes or []:
        pieces.append(data[pos : pos + size])
        pos += size
    pieces.append(data[pos:])
    for piece in pieces:
        whole.extend(parser.feed(piece))
    whole.extend(parser.finish())
    return whole


def byte_by_byte(data: bytes, max_line_bytes: int = 4096) -> ParsedChunk:
    return parse(data, [1] * len(data), max_line_bytes)


def random_sizes(data: bytes, rng: random.Random) -> list[int]:
    sizes: list[int] = []
    left = len(data)
    while left > 0:
        size = rng.randint(1, 9)
        sizes.append(size)
        left -= size
    return sizes


def abort_of(data: bytes, sizes: list[int] | None = None, max_line_bytes: int = 4096) -> str:
    with pytest.raises(UploadAborted) as raised:
        parse(data, sizes, max_line_bytes)
    return raised.value.code


def rows(chunk: ParsedChunk) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    return list(zip(chunk.lines, chunk.codes, strict=True)), chunk.invalid


# -- is_valid ----------------------------------------------------------------------------------


def test_a_code_of_one_character_is_valid() -> None:
    assert is_valid("A")


def test_a_code_of_64_characters_is_valid() -> None:
    assert is_valid("A" * 64)


def test_an_empty_code_is_invalid() -> None:
    assert not is_valid("")


def test_a_code_of_65_characters_is_invalid() -> None:
    assert not is_valid("A" * 65)


@pytest.mark.parametrize("char", ALLOWED)
def test_every_printable_ascii_character_but_comma_and_quote_is_valid(char: str) -> None:
    assert is_valid(char)
    assert is_valid(f"X{char}Y")


@pytest.mark.parametrize("char", [",", '"'])
def test_a_comma_or_a_double_quote_makes_a_code_invalid(char: str) -> None:
    assert not is_valid(char)
    assert not is_valid(f"X{char}Y")


@pytest.mark.parametrize(
    "code",
    ["A B", " AB", "AB ", "A\tB", "A\nB", "A\rB", "A\x00B", "A\x7fB", "A\x1fB", "é", "CODE€", "ß1",
     "\u00a0", "A\udc80B", "\udcff"],
)  # fmt: skip
def test_spaces_control_characters_and_non_ascii_are_invalid(code: str) -> None:
    assert not is_valid(code)


def test_64_characters_of_every_allowed_kind_are_valid() -> None:
    code = "".join(ALLOWED)[:64]
    assert len(code) == 64
    assert is_valid(code)


# -- CsvParser: rows ---------------------------------------------------------------------------


@pytest.mark.parametrize("header", [b"code", b"CODE", b"Code", b"cOdE", b"  code  "])
def test_a_first_line_code_in_any_case_is_a_header(header: bytes) -> None:
    parsed = parse(header + b"\nA1\nA2\n")
    assert rows(parsed) == ([(2, b"A1"), (3, b"A2")], [])


def test_the_header_is_the_first_non_blank_line() -> None:
    parsed = parse(b"\n  \n\r\ncode\nA1\n")
    assert rows(parsed) == ([(5, b"A1")], [])


def test_code_after_the_first_line_is_a_code() -> None:
    parsed = parse(b"A1\ncode\nCODE\n")
    assert rows(parsed) == ([(1, b"A1"), (2, b"code"), (3, b"CODE")], [])


def test_a_header_split_across_feeds_is_still_a_header() -> None:
    parsed = parse(b"co" + b"de\nA1\n", [2])
    assert rows(parsed) == ([(2, b"A1")], [])


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("sizes", [None, [1], [2], [3, 1]])
def test_a_byte_order_mark_at_the_start_is_dropped_however_it_arrives(
    sizes: list[int] | None,
) -> None:
    assert rows(parse(BOM + b"code\nA1\n", sizes)) == ([(2, b"A1")], [])
    assert rows(parse(BOM + b"A1\nA2\n", sizes)) == ([(1, b"A1"), (2, b"A2")], [])
    assert parse(BOM, sizes).rows == 0


def test_a_byte_order_mark_after_the_start_is_part_of_its_line() -> None:
    parsed = parse(b"A1\n" + BOM + b"A2\n")
    assert rows(parsed) == ([(1, b"A1")], [(2, BOM + b"A2")])


def test_blank_lines_are_skipped_but_counted() -> None:
    parsed = parse(b"A1\n\n   \n\t\nA2\n\n")
    assert rows(parsed) == ([(1, b"A1"), (5, b"A2")], [])
    assert parsed.rows == 2


def test_surrounding_whitespace_and_crlf_are_trimmed() -> None:
    parsed = parse(b"  A1  \r\n\tA2\t\r\nA3\r\n A4")
    assert rows(parsed) == ([(1, b"A1"), (2, b"A2"), (3, b"A3"), (4, b"A4")], [])


def test_a_last_line_without_newline_is_a_row() -> None:
    parsed = parse(b"A1\nA2")
    assert rows(parsed) == ([(1, b"A1"), (2, b"A2")], [])


def test_an_empty_body_has_no_rows() -> None:
    assert parse(b"").rows == 0
    assert parse(b"\n\n \r\n").rows == 0
    assert parse(b"code\n").rows == 0


def test_invalid_rows_are_reported_with_their_line() -> None:
    parsed = parse(b"A1\n" + b"X" * 65 + b'\nA B\nA"B\nA2\n')
    assert rows(parsed) == ([(1, b"A1"), (5, b"A2")], [(2, b"X" * 65), (3, b"A B"), (4, b'A"B')])


def test_64_characters_are_accepted_and_65_rejected() -> None:
    parsed = parse(b"Y" * 64 + b"\n" + b"Z" * 65 + b"\n")
    assert rows(parsed) == ([(1, b"Y" * 64)], [(2, b"Z" * 65)])


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"AB\xc3", b"\xc3\xa9t\xc3\xa9", b"\x80"])
def test_non_utf8_or_non_ascii_bytes_make_the_row_invalid(raw: bytes) -> None:
    parsed = parse(b"A1\n" + raw + b"\nA2\n")
    assert rows(parsed) == ([(1, b"A1"), (3, b"A2")], [(2, raw)])


def test_duplicates_are_not_the_parsers_business() -> None:
    parsed = parse(b"A1\nA1\n")
    assert rows(parsed) == ([(1, b"A1"), (2, b"A1")], [])


# -- CsvParser: feed boundaries ----------------------------------------------------------------

SAMPLE = (
    b"Code\r\n"
    b"A1\r\n"
    b"\r\n"
    b"  A2  \n"
    b"bad code\n"
    b"\n"
    b"\xff\xfeX\n"
    + b"L" * 64
    + b"\n"
    + b"M" * 65
    + b"\n"
    b"code\n"
    b"\t\n"
    b"last"
)  # fmt: skip


def test_the_sample_parses_as_expected() -> None:
    parsed = parse(SAMPLE)
    assert rows(parsed) == (
        [(2, b"A1"), (4, b"A2"), (8, b"L" * 64), (10, b"code"), (12, b"last")],
        [(5, b"bad code"), (7, b"\xff\xfeX"), (9, b"M" * 65)],
    )


def test_feeding_byte_by_byte_gives_the_same_rows_and_lines() -> None:
    assert rows(byte_by_byte(SAMPLE)) == rows(parse(SAMPLE))


@pytest.mark.parametrize("seed", range(20))
def test_feeding_in_random_chunks_gives_the_same_rows_and_lines(seed: int) -> None:
    rng = random.Random(seed)
    assert rows(parse(SAMPLE, random_sizes(SAMPLE, rng))) == rows(parse(SAMPLE))


@pytest.mark.parametrize("cut", range(len(SAMPLE) + 1))
def test_a_split_anywhere_gives_the_same_rows_and_lines(cut: int) -> None:
    assert rows(parse(SAMPLE, [cut])) == rows(parse(SAMPLE))


def test_empty_feeds_change_nothing() -> None:
    assert rows(parse(SAMPLE, [0, 3, 0, 0, 5, 0])) == rows(parse(SAMPLE))


# -- CsvParser: aborts -------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"a,b\n", b"A1\nA2,\nA3\n", b"A1\n,\n", b"A1\nx,y", b"a , b\n"])
def test_a_comma_anywhere_aborts_with_multiple_columns(body: bytes) -> None:
    assert abort_of(body) == "multiple_columns"
    assert abort_of(body, [1] * len(body)) == "multiple_columns"


def test_a_comma_on_the_header_line_aborts() -> None:
    assert abort_of(b"code,amount\nA1,5\n") == "multiple_columns"


def test_the_multiple_columns_message_names_the_line() -> None:
    with pytest.raises(UploadAborted, match="line 4"):
        byte_by_byte(b"A1\n\nA2\nA3,x\n")


@pytest.mark.parametrize("body", [b"\x00", b"A1\nA\x00B\n", b"A1\nA2\n\x00", b"PK\x03\x04\x00\x00"])
def test_a_nul_byte_aborts_with_binary_content(body: bytes) -> None:
    assert abort_of(body) == "binary_content"
    assert abort_of(body, [1] * len(body)) == "binary_content"


def test_a_line_of_max_line_bytes_is_fine() -> None:
    parsed = parse(b"A" * 10 + b"\nB\n", max_line_bytes=10)
    assert parsed.rows == 2


def test_a_partial_line_longer_than_max_line_bytes_aborts_before_its_end() -> None:
    parser = CsvParser(max_line_bytes=10)
    parser.feed(b"A1\n" + b"X" * 10)
    with pytest.raises(UploadAborted) as raised:
        parser.feed(b"X")
    assert raised.value.code == "line_too_long"
    assert "line 2" in raised.value.message


@pytest.mark.parametrize("body", [b"A1\n" + b"X" * 11 + b"\nA2\n", b"A1\n\n" + b"X" * 11])
def test_a_line_longer_than_max_line_bytes_aborts_with_line_too_long(body: bytes) -> None:
    messages = set()
    for sizes in (None, [1] * len(body), [2, 5, 3]):
        with pytest.raises(UploadAborted) as raised:
            parse(body, sizes, max_line_bytes=10)
        assert raised.value.code == "line_too_long"
        messages.add(raised.value.message)
    # Every chunking names the same line.
    assert len(messages) == 1
    line = body.count(b"\n", 0, body.index(b"X")) + 1
    assert f"line {line} " in messages.pop()


@pytest.mark.parametrize(
    "body",
    [
        b"A1\na,b\n" + b"X" * 20,  # a comma, then an unterminated line that is too long
        b"A1\na,b\n" + b"X" * 20 + b"\n",
        b"A1\na,b\nA2\x00\n",  # a comma, then a NUL byte
    ],
)
def test_the_first_offending_line_decides_the_failure_whatever_the_chunking(body: bytes) -> None:
    # The server reads the body in whatever pieces the network delivers: the same file must
    # fail the same way (201 multiple_columns, or 400 for binary and long lines) every time.
    assert abort_of(body, max_line_bytes=10) == "multiple_columns"
    assert abort_of(body, [1] * len(body), max_line_bytes=10) == "multiple_columns"


# -- describe_invalid --------------------------------------------------------------------------


def test_describe_invalid_keeps_printable_ascii() -> None:
    assert describe_invalid(b"bad code") == "bad code"
    assert describe_invalid(b'A"B') == 'A"B'


def test_describe_invalid_escapes_non_ascii_bytes() -> None:
    assert describe_invalid(b"AB\xff") == "AB\\xff"
    assert describe_invalid(b"\xc3\xa9") == "\\xc3\\xa9"


@pytest.mark.parametrize("raw", [b"A\x01B", b"A\x7fB", b"A\x1bB", b"A\rB", b"A\x0bB"])
def test_describe_invalid_escapes_control_characters(raw: bytes) -> None:
    rendered = describe_invalid(raw)
    assert rendered.isprintable()
    assert rendered.startswith("A")
    assert rendered.endswith("B")


def test_describe_invalid_shortens_a_long_row() -> None:
    rendered = describe_invalid(b"X" * 4000)
    assert 64 < len(rendered) <= 256


# -- properties --------------------------------------------------------------------------------

ROW_BYTES = st.sampled_from(
    [b"A", b"b", b"7", b"\n", b"\r", b" ", b"\t", b",", b'"', b"\xff", b"\xc3", b"\x00", b"code",
     b"CODE", b"X" * 30, b"\x01", b"~", b"!"]
)  # fmt: skip
BODIES = st.one_of(
    st.binary(max_size=300),
    st.lists(ROW_BYTES, max_size=60).map(b"".join),
)


# How a body is cut into reads, and the longest line the parser accepts.
CUTS = st.lists(st.integers(min_value=0, max_value=40), max_size=30)
LINE_LIMITS = st.integers(min_value=1, max_value=80)


def _outcome(
    data: bytes, sizes: list[int] | None, max_line_bytes: int
) -> ParsedChunk | UploadAborted:
    try:
        return parse(data, sizes, max_line_bytes)
    except UploadAborted as exc:
        return exc


@given(data=BODIES, sizes=CUTS, max_line_bytes=LINE_LIMITS)
def test_any_bytes_in_any_chunking_parse_or_abort_cleanly(
    data: bytes, sizes: list[int], max_line_bytes: int
) -> None:
    outcome = _outcome(data, sizes, max_line_bytes)
    whole = _outcome(data, None, max_line_bytes)
    if isinstance(outcome, UploadAborted):
        assert outcome.code in {"multiple_columns", "binary_content", "line_too_long"}
        # Whether a file is refused does not depend on how it was cut.
        assert isinstance(whole, UploadAborted)
        return
    assert not isinstance(whole, UploadAborted)
    assert rows(outcome) == rows(whole)
    assert outcome.rows == len(outcome.codes) + len(outcome.invalid)
    for code in outcome.codes:
        assert is_valid(code.decode("ascii"))
    for _, raw in outcome.invalid:
        assert not raw.isascii() or not is_valid(raw.decode("ascii"))
    lines = sorted([*outcome.lines, *(line for line, _ in outcome.invalid)])
    assert lines == sorted(set(lines))
    assert all(1 <= line <= data.count(b"\n") + 1 for line in lines)


def test_a_parsed_stretch_splits_by_rows_in_file_order() -> None:
    parsed = CsvParser().feed(b"A1\nbad one\nA2\nA3\nbad two\nA4\n")
    head, tail = parsed.split(3)
    assert (head.codes, list(head.lines), [line for line, _ in head.invalid]) == (
        [b"A1", b"A2"],
        [1, 3],
        [2],
    )
    assert (tail.codes, list(tail.lines), [line for line, _ in tail.invalid]) == (
        [b"A3", b"A4"],
        [4, 6],
        [5],
    )
    assert head.rows + tail.rows == parsed.rows
    whole, nothing = parsed.split(10)
    assert whole is parsed
    assert nothing.rows == 0


def _line_by_line(data: bytes, max_line_bytes: int) -> ParsedChunk | UploadAborted:
    """The model: every line parsed one by one, as reads of anything but clean codes are."""
    try:
        return CsvParser(max_line_bytes)._parse(data.split(b"\n"))
    except UploadAborted as exc:
        return exc


@given(data=BODIES, sizes=CUTS, max_line_bytes=LINE_LIMITS)
def test_reads_checked_whole_parse_as_line_by_line(
    data: bytes, sizes: list[int], max_line_bytes: int
) -> None:
    # A read of nothing but valid codes is checked by one regex; the rows must be the same.
    data = data.replace(b"\0", b"")
    outcome = _outcome(data, sizes, max_line_bytes)
    model = _line_by_line(data, max_line_bytes)
    if isinstance(outcome, UploadAborted) or isinstance(model, UploadAborted):
        assert isinstance(outcome, UploadAborted)
        assert isinstance(model, UploadAborted)
        return
    assert rows(outcome) == rows(model)


def test_a_large_clean_file_in_reads_keeps_every_code_and_line() -> None:
    codes = [f"C{n:011d}".encode() for n in range(20_000)]
    data = b"code\n" + b"".join(code + b"\n" for code in codes)
    parsed = parse(data, [65536] * (len(data) // 65536))
    assert rows(parsed) == (list(zip(range(2, 20_002), codes, strict=True)), [])
