"""The journal on its own: group commit, durability before the reply, and failures that stay put."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from voucherd import errors
from voucherd.metrics import Metrics
from voucherd.persistence.journal import Insert, Journal, Rows, Step

NOTE = "INSERT INTO notes (id, text) VALUES (?, ?)"
DOOMED = "INSERT INTO doomed (id) VALUES (?)"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


async def open_journal(database: Path, queue_limit: int = 10_000) -> tuple[Journal, Metrics]:
    metrics = Metrics()
    journal = Journal(database, "FULL", queue_limit, metrics)
    await journal.open()
    await journal.call(
        lambda db: db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text)")
    )
    journal.start()
    return journal, metrics


@pytest.fixture
async def journal_and_metrics(database: Path) -> AsyncIterator[tuple[Journal, Metrics]]:
    journal, metrics = await open_journal(database)
    yield journal, metrics
    await journal.close()


def notes_on_disk(database: Path) -> dict[int, str]:
    """The notes another connection sees: only what is committed."""
    with sqlite3.connect(database) as other:
        return dict(other.execute("SELECT id, text FROM notes").fetchall())


def commits(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("voucherd_journal_records_per_commit_count")
    return value or 0.0


def records_committed(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("voucherd_journal_records_per_commit_sum")
    return value or 0.0


async def test_concurrent_submits_are_committed_in_fewer_groups_than_submits(
    journal_and_metrics: tuple[Journal, Metrics], database: Path
) -> None:
    journal, metrics = journal_and_metrics

    async def write_note(index: int) -> None:
        await journal.write(Rows(NOTE, [(index, f"note {index}")]))

    await asyncio.gather(*(write_note(index) for index in range(500)))

    assert records_committed(metrics) == 500
    assert 1 <= commits(metrics) < 500
    assert len(notes_on_disk(database)) == 500


@pytest.mark.parametrize("sizes", [(1,), (255,), (256,), (257,), (300, 1, 700), (0, 3)])
async def test_inserts_from_many_callers_are_stored_whole_in_order_across_blocks(
    journal_and_metrics: tuple[Journal, Metrics], database: Path, sizes: tuple[int, ...]
) -> None:
    # Rows are written in multi-row blocks of 256, 128, … 1: every row of every caller must
    # land, none twice, whatever the group's size.
    journal, _ = journal_and_metrics
    starts = [sum(sizes[:index]) for index in range(len(sizes))]
    await asyncio.gather(
        *(
            journal.write(
                Insert("notes", ("id", "text"), [(n, f"note {n}") for n in range(s, s + size)])
            )
            for s, size in zip(starts, sizes, strict=True)
        )
    )

    assert notes_on_disk(database) == {n: f"note {n}" for n in range(sum(sizes))}


async def test_a_future_resolves_only_once_its_rows_are_readable_elsewhere(
    journal_and_metrics: tuple[Journal, Metrics], database: Path
) -> None:
    journal, _ = journal_and_metrics
    seen_at_resolution: list[dict[int, str]] = []

    def look(_: asyncio.Future[Any]) -> None:
        # Runs the moment the future resolves, before anyone awaiting it is resumed.
        seen_at_resolution.append(notes_on_disk(database))

    futures = [journal.submit([Rows(NOTE, [(index, f"note {index}")])]) for index in range(20)]
    for future in futures:
        future.add_done_callback(look)
    await asyncio.gather(*futures)

    assert len(seen_at_resolution) == 20
    for index, seen in enumerate(seen_at_resolution):
        assert seen.get(index) == f"note {index}"


async def test_a_failing_step_fails_only_its_own_caller(
    journal_and_metrics: tuple[Journal, Metrics], database: Path
) -> None:
    journal, metrics = journal_and_metrics
    await journal.write(Rows(NOTE, [(1, "first")]))
    groups_before = commits(metrics)

    def insert(note_id: int, text: str) -> Step:
        return Step(lambda db: db.execute(NOTE, (note_id, text)).rowcount)

    # A step is written in a transaction of its own, so a long upload step never holds
    # claims in its transaction; the rows behind it still share one.
    before = journal.submit([insert(2, "second")])
    clash = journal.submit([insert(1, "again")])
    after = journal.submit([Rows(NOTE, [(3, "third")])])
    also = journal.submit([Rows(NOTE, [(4, "fourth")])])
    results = await asyncio.gather(before, clash, after, also, return_exceptions=True)

    assert commits(metrics) == groups_before + 3
    assert results[0] == 1
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert results[2] is None
    assert notes_on_disk(database) == {1: "first", 2: "second", 3: "third", 4: "fourth"}


async def test_a_step_returns_its_result_to_its_caller(
    journal_and_metrics: tuple[Journal, Metrics],
) -> None:
    journal, _ = journal_and_metrics

    def count_notes(db: sqlite3.Connection) -> int:
        db.execute(NOTE, (7, "seven"))
        count: int = db.execute("SELECT count(*) FROM notes").fetchone()[0]
        return count

    assert await journal.write(Step(count_notes)) == 1


async def test_submit_refuses_with_overloaded_when_the_queue_is_full(database: Path) -> None:
    journal, _ = await open_journal(database, queue_limit=10)
    try:
        accepted = [journal.submit([Rows(NOTE, [(index, "x")])]) for index in range(10)]
        with pytest.raises(errors.Overloaded) as refused:
            journal.submit([Rows(NOTE, [(10, "x")])])
        assert refused.value.status == 503
        assert refused.value.code == "overloaded"

        await asyncio.gather(*accepted)
        # Once the queue drained, there is room again.
        await journal.write(Rows(NOTE, [(10, "x")]))
    finally:
        await journal.close()
    assert len(notes_on_disk(database)) == 11


async def test_a_write_waiting_for_room_goes_before_later_submits(database: Path) -> None:
    """An upload's chunk waiting for room is not starved by a stream of claims: while it
    waits, a plain submit finds the queue full even where it would fit."""
    journal, _ = await open_journal(database, queue_limit=10)
    started, release = threading.Event(), threading.Event()

    def stuck(db: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    try:
        held = journal.submit([Step(stuck)])
        assert await asyncio.to_thread(started.wait, 10)  # the writer is in it
        rows = [journal.submit([Rows(NOTE, [(n, "claim")])]) for n in range(9)]  # full: 10
        waiting = asyncio.ensure_future(
            journal.submit_waiting([Rows(NOTE, [(100, "chunk")])], records=5)
        )
        await asyncio.sleep(0.01)
        assert not waiting.done()
        release.set()
        await held
        # Nine records left in the queue: room for a claim, but the chunk waits first.
        assert journal.queued_records == 9
        with pytest.raises(errors.Overloaded):
            journal.submit([Rows(NOTE, [(200, "late claim")])])
        await asyncio.gather(*rows)
        await (await waiting)
    finally:
        await journal.close()
    assert notes_on_disk(database)[100] == "chunk"
    assert 200 not in notes_on_disk(database)


async def test_close_commits_what_is_queued_before_returning(database: Path) -> None:
    journal, _ = await open_journal(database)
    futures = [journal.submit([Rows(NOTE, [(index, f"note {index}")])]) for index in range(50)]

    await journal.close()

    assert all(future.done() and future.exception() is None for future in futures)
    assert len(notes_on_disk(database)) == 50
    with pytest.raises(errors.NotReady):
        journal.submit([Rows(NOTE, [(99, "late")])])


async def test_a_storage_fault_fails_the_whole_group_and_the_next_group_works(
    journal_and_metrics: tuple[Journal, Metrics], database: Path
) -> None:
    journal, metrics = journal_and_metrics
    with sqlite3.connect(database) as other:
        other.execute("CREATE TABLE doomed (id INTEGER PRIMARY KEY)")
    await journal.write(Rows(NOTE, [(1, "before")]), Rows(DOOMED, [(1,)]))
    # The table goes away under the running writer, as a disk or operator fault would have it.
    with sqlite3.connect(database) as other:
        other.execute("DROP TABLE doomed")

    # One group: a good entry, one whose table is gone, another good one.
    good = journal.submit([Rows(NOTE, [(2, "lost")])])
    broken = journal.submit([Rows(DOOMED, [(2,)])])
    other_good = journal.submit([Rows(NOTE, [(3, "lost too")])])
    results = await asyncio.gather(good, broken, other_good, return_exceptions=True)

    for result in results:
        assert isinstance(result, errors.StorageUnavailable), result
        assert result.status == 503
    assert metrics.registry.get_sample_value("voucherd_journal_failures_total") == 1
    assert notes_on_disk(database) == {1: "before"}

    await journal.write(Rows(NOTE, [(4, "after")]))
    assert notes_on_disk(database) == {1: "before", 4: "after"}


async def test_rows_queued_behind_a_long_step_are_written_before_the_next_step(
    journal_and_metrics: tuple[Journal, Metrics],
) -> None:
    journal, _ = journal_and_metrics
    finished: list[str] = []

    def slow(note_id: int) -> Step:
        def run(db: sqlite3.Connection) -> None:
            db.execute(NOTE, (note_id, "chunk"))
            # Long enough that everything below is queued while it runs.
            db.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                       " WHERE i < 300000) SELECT count(*) FROM n").fetchone()  # fmt: skip

        return Step(run)

    def done(name: str) -> Any:
        return lambda _: finished.append(name)

    first = journal.submit([slow(1)])
    first.add_done_callback(done("first chunk"))
    await asyncio.sleep(0.01)  # the writer has taken the first chunk
    second = journal.submit([slow(2)])
    second.add_done_callback(done("second chunk"))
    claims = journal.submit([Rows(NOTE, [(3, "claim")])])
    claims.add_done_callback(done("claims"))
    await asyncio.gather(first, second, claims)

    # The claims queued behind the second chunk did not wait for it.
    assert finished == ["first chunk", "claims", "second chunk"]


async def test_steps_are_not_starved_by_a_stream_of_rows(
    journal_and_metrics: tuple[Journal, Metrics], database: Path
) -> None:
    journal, _ = journal_and_metrics
    step = journal.submit([Step(lambda db: db.execute(NOTE, (1, "chunk")))])
    rows = [journal.submit([Rows(NOTE, [(10 + n, "claim")])]) for n in range(5)]
    await asyncio.wait_for(step, timeout=10)
    await asyncio.gather(*rows)
    assert len(notes_on_disk(database)) == 6
