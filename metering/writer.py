"""Batch writer: moves journaled events to the database in bulk, off the request path.

Each batch is one transaction: the events are inserted with ``ON CONFLICT DO NOTHING`` and only
the rows actually inserted are added to the hourly rollups, so replaying a batch (after a crash
between commit and checkpoint) changes nothing. The journal checkpoint advances after the commit.
A database outage only makes the journal grow; the writer retries with backoff until it drains.
A batch that fails on its data is bisected: the good rows are committed, the bad ones moved to the
quarantine (``metering.quarantine``), and the writer goes on. Any other failure is told apart
by a ping: the database is down (``db_ok``), or it answers and the writer is stalled
(``stalled``, with the error), which ``/readyz`` reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, text

from metering.events import UsageEvent
from metering.ingest import EVENTS, insert_rows
from metering.journal import (
    SEGMENT_GLOB,
    Journal,
    JournalError,
    Segment,
    claim_if_orphan,
    read_checkpoint,
)
from metering.quarantine import Quarantine, insert_isolating

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 5.0
_ORPHAN_SCAN_S = 30.0


def insert_events(engine: Engine, events: Sequence[UsageEvent]) -> int:
    """Insert ``events`` and their rollups in one transaction; returns how many were new
    (see ``metering.ingest.insert_rows``)."""
    return insert_rows(engine, [e.flat() for e in events])


def prune_events(engine: Engine, *, older_than: datetime) -> int:
    """Delete raw events started before ``older_than``; rollups are kept."""
    with engine.begin() as conn:
        result = conn.execute(delete(EVENTS).where(EVENTS.c.started_at < older_than))
        return int(result.rowcount or 0)


class BatchWriter:
    """Appends events to the journal (or, with the journal off, a memory queue) and moves them
    to the database every ``flush_interval_s`` or ``max_batch`` events.

    With ``shared_dir`` instead of a journal, it appends nothing: it is the ledger process's
    writer, moving every segment of that directory into the database: those of live serving
    processes (it owns their checkpoints) and those left by processes gone or rotated away.
    """

    def __init__(
        self,
        engine: Engine,
        journal: Journal | None,
        *,
        max_batch: int,
        flush_interval_s: float,
        fsync_interval_s: float = 1.0,
        retention_days: int | None = None,
        shared_dir: Path | None = None,
    ) -> None:
        assert journal is None or shared_dir is None, "a journal of its own, or a shared one"
        self._engine = engine
        self._journal = journal
        self._shared = shared_dir
        self._live: dict[Path, Segment] = {}  # shared: segments live processes append to
        self._max_batch = max_batch
        self._interval_s = flush_interval_s
        self._fsync_interval_s = fsync_interval_s
        self._retention_days = retention_days
        self._memory: deque[UsageEvent] = deque()
        self._orphans: list[Segment] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._committed_own = 0
        self.journal_failed = False
        self.written = 0
        self.db_ok = True
        self.stalled: str | None = None  # the database answers, yet this error stops the writer
        self.quarantine = Quarantine(engine, journal.directory if journal else shared_dir)

    @property
    def backlog_events(self) -> int:
        own = self._journal.appended - self._committed_own if self._journal else 0
        return len(self._memory) + own + sum(o.pending_events for o in self._orphans)

    @property
    def orphan_events(self) -> int:
        """Events of segments whose writers are gone, not yet in the database."""
        return sum(o.pending_events for o in self._orphans)

    @property
    def orphan_bytes(self) -> int:
        return sum(o.pending_bytes() for o in self._orphans)

    @property
    def backlog_bytes(self) -> int:
        segments = [*self._orphans, *self._live.values()]
        if self._journal is not None:
            segments += self._journal.retired
            if self._journal.active is not None:
                segments.append(self._journal.active)
        return sum(s.pending_bytes() for s in segments)

    def submit(self, event: UsageEvent) -> bool:
        """Journal the event; False if the journal failed (the event is then kept in memory)."""
        ok = True
        if self._journal is not None:
            try:
                self._journal.append(event)
                self.journal_failed = False
            except JournalError:
                if not self.journal_failed:
                    log.exception("usage journal unwritable; events are held in memory")
                self.journal_failed = True
                self._memory.append(event)
                ok = False
        else:
            self._memory.append(event)
        if self.backlog_events >= self._max_batch:
            self._wakeup.set()
        return ok

    def start(self) -> None:
        if self._journal is not None:
            self._orphans = self._journal.claim_orphans()
            if self._orphans:
                log.info(
                    "replaying %d journal segment(s) left by earlier processes", len(self._orphans)
                )
        self._task = asyncio.create_task(self._run(), name="tokenmeter-batch-writer")

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._journal is not None:
            self._journal.close()

    async def flush(self) -> None:
        """Write everything pending now; raises if the database is unreachable."""
        await asyncio.to_thread(self._drain)

    async def _run(self) -> None:
        backoff = self._interval_s
        last_sync = last_scan = last_prune = time.monotonic()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), backoff)
            self._wakeup.clear()
            now = time.monotonic()
            if (
                self._journal
                and self._journal.fsync == "interval"
                and now - last_sync >= self._fsync_interval_s
            ):
                await asyncio.to_thread(self._journal.sync)
                last_sync = now
            if self._journal and self.journal_failed:
                self._probe_journal()
            if self._journal and now - last_scan >= _ORPHAN_SCAN_S:
                self._orphans += self._journal.claim_orphans()  # workers that died since
                last_scan = now
            if self._shared is not None:
                self._scan_shared()
            try:
                await self.flush()
                if self._retention_days and now - last_prune >= 3600:
                    await asyncio.to_thread(self._prune)
                    last_prune = now
                backoff = self._interval_s
                self._set_db_ok(True)
                self._set_stalled(None)
            except JournalError as exc:  # the disk, not the database: say so, keep db_ok
                self._set_stalled(str(exc))
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            except Exception as exc:
                if await asyncio.to_thread(self._database_answers):
                    self._set_db_ok(True)
                    self._set_stalled(f"{type(exc).__name__}: {exc}".splitlines()[0])
                else:
                    self._set_db_ok(False, exc)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            if self._journal is not None:
                self._journal.truncate_drained()
        await self._final_flush()

    def _scan_shared(self) -> None:
        """Find the directory's segments: a live process holds each of ``_live``; one nobody
        holds any more (its writer rotated away, exited or died) becomes an orphan, drained to
        its end and removed."""
        assert self._shared is not None
        claimed = {o.path for o in self._orphans}
        present = set(self._shared.glob(SEGMENT_GLOB))
        for path in sorted(present - claimed):
            known = self._live.get(path)
            orphan = claim_if_orphan(path, known.offset if known else None)
            if orphan is not None:
                self._live.pop(path, None)
                self._orphans.append(orphan)
            elif known is None and path.exists():
                self._live[path] = Segment(path, read_checkpoint(path))
        for path in [p for p in self._live if p not in present]:
            del self._live[path]

    def _database_answers(self) -> bool:
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def _set_stalled(self, error: str | None) -> None:
        if error is not None and error != self.stalled:
            log.error(
                "ledger writer stalled (the database answers): %s; %d events wait in the journal",
                error,
                self.backlog_events,
            )
        elif error is None and self.stalled is not None:
            log.warning("ledger writer moving again")
        self.stalled = error

    def _probe_journal(self) -> None:
        assert self._journal is not None
        try:
            self._journal.probe()
        except JournalError:
            return
        log.warning("usage journal writable again")
        self.journal_failed = False

    def _set_db_ok(self, ok: bool, exc: Exception | None = None) -> None:
        if ok and not self.db_ok:
            log.warning("database reachable again; journal backlog drained")
        elif not ok and self.db_ok:
            log.warning(
                "database unreachable (%s); events stay in the journal: %d pending",
                f"{type(exc).__name__}: {exc}".splitlines()[0],
                self.backlog_events,
            )
        self.db_ok = ok

    async def _final_flush(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.warning(
                "database unreachable at shutdown; %d events stay in the journal "
                "and are replayed on the next start",
                self.backlog_events,
            )

    def _drain(self) -> None:
        while self._memory:
            batch = list(self._memory)[: self._max_batch]
            self.written += insert_isolating(
                self._engine, [e.flat() for e in batch], self.quarantine
            )
            for _ in batch:
                self._memory.popleft()
        for seg in list(self._orphans):
            self._drain_segment(seg, final=True, own=False)
            self._orphans.remove(seg)
            seg.remove()
        for seg in list(self._live.values()):
            self._drain_segment(seg, final=False, own=False)
        if self._journal is None:
            return
        for seg in list(self._journal.retired):
            self._drain_segment(seg, final=True, own=True)
            self._journal.retired.remove(seg)
            seg.remove()
        if self._journal.active is not None:
            self._drain_segment(self._journal.active, final=False, own=True)

    def _drain_segment(self, seg: Segment, *, final: bool, own: bool) -> None:
        while True:
            rows, offset = seg.read(self._max_batch, final=final)
            if offset == seg.offset:
                return
            for position, line in seg.unreadable:
                self.quarantine.put_raw(
                    f"{seg.path.name}@{position}",
                    line.decode(errors="backslashreplace"),
                    "unreadable journal line",
                )
            seg.unreadable.clear()
            self.written += insert_isolating(self._engine, rows, self.quarantine)
            seg.commit(offset)
            if own:
                self._committed_own += len(rows)
            else:
                seg.pending_events = max(0, seg.pending_events - len(rows))
            if not final and len(rows) < self._max_batch:
                # Caught up with what was there: what was appended meanwhile waits for the next
                # flush. Reading on would chase a live segment's appends in batches of a few
                # events, one transaction and one checkpoint each: ~450 a second at c=1, the
                # ledger never idle (strace), and its work the whole of the c=1 tail.
                return

    def _prune(self) -> None:
        assert self._retention_days is not None
        cutoff = datetime.now(UTC) - timedelta(days=self._retention_days)
        removed = prune_events(self._engine, older_than=cutoff)
        if removed:
            log.info("retention: pruned %d events started before %s", removed, cutoff)
