"""The serving process's side of the ledger process: append to the journal, nothing more.

Each serving process appends its events to a segment of its own (``metering.journal``); the
ledger process (``metering.service``) moves them into the database and writes each segment's
checkpoint. What the appender does besides the append is cheap and runs on the event loop every
``tick_s``: read its segments' checkpoints to know which of its events are committed (budgets
subtract those from their local count), start a fresh segment once the active one is drained
(the ledger removes the drained one), sync the journal on the ``interval`` policy, and read the
ledger's status file for ``/readyz``.

When the journal cannot be written, events are held in memory and, every tick, appended again
once it can; while it cannot, they are inserted into the database straight from here (the one
database write a serving process makes), so that nothing answered waits only in memory while
the database answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from array import array
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from metering.events import UsageEvent
from metering.journal import (
    Journal,
    JournalError,
    lock_is_held,
    pending_bytes_on_disk,
    read_checkpoint,
)
from metering.quarantine import Quarantine, insert_isolating
from metering.status import LOCK_FILE, LedgerStatus, read_status

log = logging.getLogger(__name__)

ROTATE_DRAINED_S = 5.0  # a drained segment is replaced at most this often


@dataclass(slots=True)
class _Track:
    """One of this process's segments: where each of its events ends, and how many of them
    the ledger has committed."""

    path: Path
    ends: array[int] = field(default_factory=lambda: array("q"))
    committed: int = 0
    committed_bytes: int = 0
    size: int = 0

    def refresh(self) -> None:
        try:
            if not self.path.exists():  # drained and removed by the ledger process
                self.committed, self.committed_bytes = len(self.ends), self.size
                return
            offset = read_checkpoint(self.path)
        except OSError:
            return
        self.committed = bisect_right(self.ends, offset)
        self.committed_bytes = offset

    @property
    def pending(self) -> int:
        return len(self.ends) - self.committed


class JournalAppender:
    """The writer of a serving process when the ledger runs in its own process."""

    def __init__(
        self,
        engine: Engine,
        journal: Journal,
        *,
        tick_s: float,
        fsync_interval_s: float = 1.0,
        stale_after_s: float = 10.0,
    ) -> None:
        self._engine = engine
        self._journal = journal
        self._tick_s = tick_s
        self._fsync_interval_s = fsync_interval_s
        self._stale_after_s = stale_after_s
        self._tracks: deque[_Track] = deque()
        self._memory: deque[UsageEvent] = deque()
        self._task: asyncio.Task[None] | None = None
        self._started = time.time()
        self._status: LedgerStatus | None = None
        self._quarantine = Quarantine(engine, None)
        self.journal_failed = False

    # -- the request path --------------------------------------------------------------------

    def submit(self, event: UsageEvent) -> bool:
        """Journal the event; False if the journal failed (the event is then kept in memory)."""
        if not self._memory:
            try:
                self._note(*self._journal.append(event))
                self.journal_failed = False
                return True
            except JournalError:
                if not self.journal_failed:
                    log.exception("usage journal unwritable; events are held in memory")
                self.journal_failed = True
        self._memory.append(event)  # behind earlier held events, to keep their order
        return False

    def _note(self, path: Path, end: int) -> None:
        if not self._tracks or self._tracks[-1].path != path:
            self._tracks.append(_Track(path))
        track = self._tracks[-1]
        track.ends.append(end)
        track.size = end

    # -- what the state and budgets read ----------------------------------------------------

    @property
    def own_pending_events(self) -> int:
        """Events this process submitted that are not yet committed (they commit in order)."""
        for track in self._tracks:
            track.refresh()
        return len(self._memory) + sum(t.pending for t in self._tracks)

    @property
    def backlog_events(self) -> int:
        """Ours not yet committed, and those of processes gone the ledger process has found."""
        orphans = self._status.orphan_events if self._status and self.ledger_running else 0
        return self.own_pending_events + orphans

    @property
    def own_backlog_bytes(self) -> int:
        """Bytes of this process's segments past their checkpoints."""
        for track in self._tracks:
            track.refresh()
        return sum(t.size - t.committed_bytes for t in self._tracks)

    @property
    def backlog_bytes(self) -> int:
        """Every segment's bytes past its checkpoint, ours and others', read from the disk."""
        try:
            return pending_bytes_on_disk(self._journal.directory)
        except OSError:
            return 0

    @property
    def status(self) -> LedgerStatus | None:
        return self._status

    @property
    def db_ok(self) -> bool:
        return self._status.db_ok if self._status is not None else True

    @property
    def ledger_running(self) -> bool:
        """A ledger process holds the directory's lock (it is alive, or starting)."""
        try:
            return lock_is_held(self._journal.directory / LOCK_FILE)
        except OSError:
            return False

    @property
    def stalled(self) -> str | None:
        """Why the ledger does not move: its own error, or that it is not running."""
        now = time.time()
        status = self._status
        if not self.ledger_running:
            if now - self._started < self._stale_after_s:
                return None  # starting beside us
            return "the ledger process is not running (nobody holds the journal's ledger.lock)"
        if status is None or status.heartbeat < self._started - self._stale_after_s:
            return None  # it has only just taken the lock
        if status.age_s(now) > self._stale_after_s:
            return f"the ledger process does not move (last seen {status.age_s(now):.0f} s ago)"
        return status.stalled

    # -- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        self._status = read_status(self._journal.directory)
        self._task = asyncio.create_task(self._run(), name="tokenmeter-journal-appender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._hand_over_memory()
        if self._memory:
            log.error(
                "%d events held in memory could be neither journaled nor written to the "
                "database at shutdown: they are lost",
                len(self._memory),
            )
        if self._journal.fsync != "none":
            with contextlib.suppress(OSError):
                self._journal.sync()
        self._journal.close()  # releases the segment: the ledger process drains and removes it

    async def _run(self) -> None:
        last_sync = last_rotate = time.monotonic()
        while True:
            await asyncio.sleep(self._tick_s)
            now = time.monotonic()
            try:
                self._status = read_status(self._journal.directory)
                if self._journal.fsync == "interval" and now - last_sync >= self._fsync_interval_s:
                    await asyncio.to_thread(self._journal.sync)
                    last_sync = now
                if self._memory:
                    await self._hand_over_memory()
                if now - last_rotate >= ROTATE_DRAINED_S and self._rotate_if_drained():
                    last_rotate = now
                self._forget_committed()
            except Exception:  # never let the loop die: the journal keeps everything
                log.exception("journal appender tick failed")

    def _rotate_if_drained(self) -> bool:
        """Start a fresh segment when the ledger has committed all of the active one, so the
        drained file is removed now rather than at rotation by size."""
        if not self._tracks or self.journal_failed:
            return False
        track = self._tracks[-1]
        if track.path != (self._journal.active.path if self._journal.active else None):
            return False
        track.refresh()
        if not track.size or track.committed_bytes < self._journal.size:
            return False
        try:
            self._journal.rotate()
        except JournalError as exc:
            log.warning("journal: drained segment not replaced: %s", exc)
            return False
        return True

    def _forget_committed(self) -> None:
        active = self._journal.active.path if self._journal.active else None
        while self._tracks and self._tracks[0].path != active:
            track = self._tracks[0]
            track.refresh()
            if track.pending:
                break
            self._tracks.popleft()

    async def _hand_over_memory(self) -> None:
        """Held events: back into the journal if it is writable again, else into the
        database directly."""
        if self.journal_failed:
            try:
                self._journal.probe()
                log.warning("usage journal writable again")
                self.journal_failed = False
            except JournalError:
                pass
        while self._memory and not self.journal_failed:
            try:
                self._note(*self._journal.append(self._memory[0]))
            except JournalError:
                self.journal_failed = True
                break
            self._memory.popleft()
        if not self._memory:
            return
        batch = list(self._memory)
        rows = [e.flat() for e in batch]
        try:
            await asyncio.to_thread(insert_isolating, self._engine, rows, self._quarantine)
        except Exception as exc:
            log.warning(
                "journal unwritable and database unreachable (%s): %d events held in memory",
                f"{type(exc).__name__}: {exc}".splitlines()[0],
                len(self._memory),
            )
            return
        for _ in batch:
            self._memory.popleft()
