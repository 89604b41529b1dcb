"""The serving side of the ledger process and the shared-directory writer, on one real journal
directory and a real SQLite ledger: what a serving process learns from the checkpoints the ledger
process writes, and how a drained segment is replaced and removed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sqlalchemy import text

from metering import appender as appender_module
from metering.appender import JournalAppender
from metering.journal import Journal, pending_bytes_on_disk
from metering.store import create_db_engine, prepare_schema
from metering.writer import BatchWriter
from tests.metering.factories import make_event


def count(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM usage_events")).scalar_one())


async def until(check, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_own_pending_follows_the_ledger_checkpoints_and_a_drained_segment_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(appender_module, "ROTATE_DRAINED_S", 0.05)
    engine = create_db_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    prepare_schema(engine)
    directory = tmp_path / "journal"
    journal = Journal(directory, release_on_rotate=True)
    journal.open()
    first_segment = journal.active.path if journal.active else None

    async def scenario() -> None:
        sink = JournalAppender(engine, journal, tick_s=0.01)
        sink.start()
        for i in range(25):
            assert sink.submit(make_event(session=f"s-{i}"))
        assert sink.own_pending_events == 25  # no ledger process yet: nothing committed
        assert pending_bytes_on_disk(directory) > 0
        ledger = BatchWriter(
            engine, None, max_batch=10, flush_interval_s=0.01, shared_dir=directory
        )
        ledger.start()
        await until(lambda: sink.own_pending_events == 0)
        assert count(engine) == 25
        # the drained segment is replaced, then the ledger removes it as one nobody holds
        await until(lambda: journal.active is not None and journal.active.path != first_segment)
        assert first_segment is not None
        await until(lambda: not first_segment.exists())
        assert pending_bytes_on_disk(directory) == 0
        for i in range(25, 30):  # the fresh segment is drained in turn
            assert sink.submit(make_event(session=f"s-{i}"))
        await until(lambda: count(engine) == 30)
        await until(lambda: sink.own_pending_events == 0)
        await sink.stop()  # releases the active segment: the ledger drains it to its end
        await ledger.stop()
        assert not list(directory.glob("seg-*.jsonl"))

    asyncio.run(scenario())
    assert count(engine) == 30


def test_the_shared_writer_reads_a_live_segment_only_to_its_last_whole_line(
    tmp_path: Path,
) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    prepare_schema(engine)
    directory = tmp_path / "journal"
    journal = Journal(directory, release_on_rotate=True)
    journal.open()
    journal.append(make_event(session="whole"))
    assert journal.active is not None and journal.active.fd is not None
    os.write(journal.active.fd, b'{"id": "half-writt')  # an append in progress

    async def scenario() -> None:
        ledger = BatchWriter(
            engine, None, max_batch=10, flush_interval_s=0.01, shared_dir=directory
        )
        ledger.start()
        await until(lambda: count(engine) == 1)
        await asyncio.sleep(0.1)  # more passes over the half line
        await ledger.stop()

    asyncio.run(scenario())
    assert count(engine) == 1  # the half line was neither inserted nor quarantined
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM ledger_quarantine")).scalar_one() == 0
