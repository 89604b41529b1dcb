"""The journal: appends, checkpoints, orphan replay, torn tails."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
from sqlalchemy import text

from metering.journal import Journal, decode_event, decode_row, encode_event
from metering.store import create_db_engine, upgrade_schema
from metering.writer import BatchWriter
from tests.metering.factories import make_event


def count(engine, table: str = "usage_events") -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def migrated(tmp_path: Path):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    upgrade_schema(engine)
    return engine


def run_writer(engine, journal_dir: Path) -> BatchWriter:
    """Start a writer on ``journal_dir`` (claiming orphans), flush, stop."""

    async def go() -> BatchWriter:
        journal = Journal(journal_dir)
        journal.open()
        writer = BatchWriter(engine, journal, max_batch=100, flush_interval_s=10)
        writer.start()
        await writer.flush()
        await writer.stop()
        return writer

    return asyncio.run(go())


def test_encoding_round_trips():
    event = make_event()
    assert decode_event(encode_event(event)) == event


def test_a_line_written_before_error_detail_decodes_with_it_empty():
    row = make_event(error_detail="KeyError").flat()
    del row["error_detail"]  # a journal line of a release before migration 0008
    assert decode_row(orjson.dumps(row)) == {**row, "error_detail": ""}


def test_orphan_segment_is_replayed_and_removed(tmp_path):
    engine = migrated(tmp_path)
    seg = tmp_path / "journal" / "seg-dead-1.jsonl"
    seg.parent.mkdir()
    seg.write_bytes(b"".join(encode_event(make_event()) for _ in range(5)))
    run_writer(engine, seg.parent)
    assert count(engine) == 5
    assert not seg.exists()


def test_torn_tail_is_replayed_up_to_the_tear_with_a_warning(tmp_path, caplog):
    engine = migrated(tmp_path)
    seg = tmp_path / "journal" / "seg-dead-2.jsonl"
    seg.parent.mkdir()
    whole = b"".join(encode_event(make_event()) for _ in range(3))
    seg.write_bytes(whole + encode_event(make_event())[:40])
    with caplog.at_level(logging.WARNING, logger="metering.journal"):
        run_writer(engine, seg.parent)
    assert count(engine) == 3
    assert "torn last line" in caplog.text


def test_checkpoint_skips_committed_events(tmp_path):
    engine = migrated(tmp_path)
    seg = tmp_path / "journal" / "seg-dead-3.jsonl"
    seg.parent.mkdir()
    lines = [encode_event(make_event()) for _ in range(4)]
    seg.write_bytes(b"".join(lines))
    (seg.parent / (seg.name + ".ckpt")).write_text(str(len(lines[0]) + len(lines[1])))
    run_writer(engine, seg.parent)
    assert count(engine) == 2


def test_replaying_the_same_journal_twice_changes_nothing(tmp_path):
    engine = migrated(tmp_path)
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    payload = b"".join(encode_event(make_event()) for _ in range(50))
    (journal_dir / "seg-a-1.jsonl").write_bytes(payload)
    run_writer(engine, journal_dir)
    with engine.connect() as conn:
        before = conn.execute(
            text(
                "SELECT SUM(requests), SUM(input_tokens), SUM(output_tokens) "
                "FROM usage_rollups_hourly"
            )
        ).one()
    (journal_dir / "seg-b-1.jsonl").write_bytes(payload)  # the same events again
    run_writer(engine, journal_dir)
    with engine.connect() as conn:
        after = conn.execute(
            text(
                "SELECT SUM(requests), SUM(input_tokens), SUM(output_tokens) "
                "FROM usage_rollups_hourly"
            )
        ).one()
    assert count(engine) == 50
    assert tuple(after) == tuple(before) and before[0] == 50


def test_live_segment_of_another_process_is_not_claimed(tmp_path):
    other = Journal(tmp_path / "journal")
    other.open()
    other.append(make_event())
    mine = Journal(tmp_path / "journal")
    mine.open()
    assert mine.claim_orphans() == []
    other.close()
    assert [s.path for s in mine.claim_orphans()] == [other.active.path]


def test_append_survives_without_flush(tmp_path):
    journal = Journal(tmp_path / "journal", fsync="always")
    journal.open()
    event = make_event()
    journal.append(event)
    assert decode_event(journal.active.path.read_bytes().strip()) == event


def test_a_flush_takes_what_was_journaled_and_leaves_what_came_meanwhile(tmp_path, monkeypatch):
    """A live segment is read once per flush (in full batches while a backlog lasts): events
    appended while its batch was being inserted wait for the next flush, rather than being
    chased in batches of a few events, one transaction and one checkpoint each."""
    import metering.writer as writer_module

    engine = migrated(tmp_path)
    journal = Journal(tmp_path / "journal")
    journal.open()
    writer = BatchWriter(engine, journal, max_batch=100, flush_interval_s=10)
    insert = writer_module.insert_isolating
    batches: list[int] = []

    def insert_while_appending(engine_, rows, quarantine):
        batches.append(len(rows))
        if len(batches) == 3:
            for _ in range(3):  # the serving process appends during the last batch's insert
                writer.submit(make_event())
        return insert(engine_, rows, quarantine)

    monkeypatch.setattr(writer_module, "insert_isolating", insert_while_appending)

    async def go() -> None:
        for _ in range(250):  # a backlog: full batches until it is taken
            writer.submit(make_event())
        await writer.flush()
        assert batches == [100, 100, 50] and count(engine) == 250  # the 3 wait
        await writer.flush()
        assert batches == [100, 100, 50, 3] and count(engine) == 253

    asyncio.run(go())
    journal.close()
