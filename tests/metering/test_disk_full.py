"""A full disk: the journal never glues a new line to a torn one, checkpoint failures name the
journal (not the database), and a drained segment gives its disk back at once.

The full disk is real to the kernel: a child process runs under RLIMIT_FSIZE, so a write that
crosses the limit is short and the next fails with EFBIG, exactly as ENOSPC behaves.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import textwrap

from sqlalchemy import text

from metering.journal import Journal
from metering.store import create_db_engine, upgrade_schema
from metering.writer import BatchWriter
from tests.metering.factories import make_event

PRELUDE = """
import asyncio, json, random, resource, signal, sys, time
from pathlib import Path
sys.path.insert(0, ".")
from metering.journal import Journal, JournalError, decode_row
from tests.metering.factories import make_event
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, like ENOSPC
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
def disk_full(at): resource.setrlimit(resource.RLIMIT_FSIZE, (at, hard))
def disk_freed(): resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
"""


def run_child(body: str) -> dict:
    script = PRELUDE + textwrap.dedent(body)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_line_is_glued_to_a_torn_one_after_a_short_write(tmp_path):
    result = run_child(f"""
        journal = Journal(Path({str(tmp_path)!r}))
        journal.open()
        rng = random.Random(1)
        ok = failed = 0
        disk_full(1500)  # a few lines fit, then one is cut short
        for _ in range(20):
            try:
                journal.append(make_event(rng)); ok += 1
            except JournalError:
                failed += 1
        disk_freed()
        after = 0
        for _ in range(5):
            try:
                journal.append(make_event(rng)); after += 1
            except JournalError:
                journal.probe()  # what the writer does: a fresh segment once writable
                journal.append(make_event(rng)); after += 1
        journal.close()
        lines = b"".join(p.read_bytes() for p in sorted(Path({str(tmp_path)!r}).glob("seg-*")))
        decoded = [decode_row(l) for l in lines.split(b"\\n") if l.strip()]
        print(json.dumps({{"ok": ok, "failed": failed, "after": after, "lines": len(decoded)}}))
    """)
    assert result["failed"] > 0 and result["ok"] > 0
    assert result["after"] == 5
    assert result["lines"] == result["ok"] + result["after"]  # every line whole, none lost


def test_a_checkpoint_the_disk_refuses_names_the_journal_not_the_database(tmp_path, pg_url):
    engine = create_db_engine(pg_url)
    upgrade_schema(engine)
    engine.dispose()
    result = run_child(f"""
        from metering.store import create_db_engine
        from metering.writer import BatchWriter
        engine = create_db_engine({pg_url!r})
        journal = Journal(Path({str(tmp_path)!r}))
        journal.open()
        writer = BatchWriter(engine, journal, max_batch=100, flush_interval_s=0.01)
        async def main():
            writer.start()
            rng = random.Random(2)
            for _ in range(5):
                writer.submit(make_event(rng))
            disk_full(0)  # the database (another process) takes the rows; the checkpoint fails
            for _ in range(500):
                if writer.stalled:
                    break
                await asyncio.sleep(0.01)
            seen = {{"stalled": writer.stalled, "db_ok": writer.db_ok}}
            disk_freed()
            for _ in range(500):
                if not writer.stalled and writer.backlog_events == 0:
                    break
                await asyncio.sleep(0.01)
            seen["recovered"] = writer.stalled is None and writer.backlog_events == 0
            await writer.stop()
            return seen
        print(json.dumps(asyncio.run(main())))
    """)
    assert result["stalled"] and "journal" in result["stalled"]
    assert "database" not in result["stalled"]
    assert result["db_ok"] is True and result["recovered"] is True
    engine = create_db_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM usage_events")).scalar_one() == 5
    engine.dispose()


def test_a_drained_segment_is_emptied_at_once(tmp_path, db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    journal = Journal(tmp_path / "journal")
    journal.open()
    writer = BatchWriter(engine, journal, max_batch=100, flush_interval_s=0.01)
    rng = random.Random(3)

    async def main() -> tuple[int, int, int]:
        writer.start()
        for _ in range(50):
            writer.submit(make_event(rng))
        assert journal.active is not None
        grown = journal.active.path.stat().st_size
        for _ in range(500):  # bounded poll: drained within a few flush intervals
            if journal.active.path.stat().st_size == 0:
                break
            await asyncio.sleep(0.01)
        emptied = journal.active.path.stat().st_size
        writer.submit(make_event(rng))  # appends go on in the emptied segment
        await writer.stop()
        return grown, emptied, writer.written

    grown, emptied, written = asyncio.run(main())
    assert grown > 0 and emptied == 0 and written == 51
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM usage_events")).scalar_one() == 51
    engine.dispose()
