"""The ledger process: one per journal directory (per host), beside the serving processes.

The serving processes only append to the journal (``metering.appender``). This process does the
rest, so database work never shares their event loop's GIL and N workers never contend on one
SQLite file: it moves every segment into the database in batches with their rollups
(``BatchWriter`` in shared mode: the same idempotent insert, checkpoint after commit, quarantine
of bad rows), prunes by retention, reads the live TCO projection's window, and writes its
status for the serving processes (``metering.status``).

``tokenmeter serve`` starts it and restarts it if it dies; ``tokenmeter ledger run`` runs it on
its own. An exclusive lock on ``ledger.lock`` keeps it one per directory: a second one waits.
Durability is the journal's: whatever this process is doing when it is killed, the segments and
their checkpoints say what is committed, and the next one goes on from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from metering.journal import pending_bytes_on_disk
from metering.status import LOCK_FILE, LedgerStatus, write_status, write_window
from metering.tco_window import read_window
from metering.writer import BatchWriter

log = logging.getLogger(__name__)


# The status file's heartbeat (serving processes call a ledger stale after 10 s): rewritten every
# flush interval, it was most of the ledger's CPU with no traffic.
_STATUS_EVERY_S = 1.0


class LedgerService:
    def __init__(
        self,
        engine: Engine,
        directory: Path,
        *,
        max_batch: int,
        flush_interval_s: float,
        retention_days: int | None = None,
        window_days: float = 30.0,
        window_interval_s: float = 5.0,
        parent_pid: int | None = None,
        on_quarantined: Callable[[int], None] | None = None,
        on_backlog: Callable[[int, int], None] | None = None,
    ) -> None:
        """``on_backlog(events, bytes)``: each flush interval, what the segments of processes
        gone still hold (the serving processes count their own)."""
        self._on_backlog = on_backlog
        self._engine = engine
        self.directory = directory
        self._interval_s = flush_interval_s
        self._window_days = window_days
        self._window_interval_s = window_interval_s
        self._parent_pid = parent_pid
        self._started = time.time()
        self._quarantined = 0
        self._lock_fd: int | None = None
        self.writer = BatchWriter(
            engine,
            None,
            max_batch=max_batch,
            flush_interval_s=flush_interval_s,
            retention_days=retention_days,
            shared_dir=directory,
        )
        self._on_quarantined = on_quarantined
        self.writer.quarantine.on_quarantined = self._count_quarantined

    def _count_quarantined(self, n: int) -> None:
        self._quarantined += n
        if self._on_quarantined is not None:
            self._on_quarantined(n)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set (or the parent, if one was named, is gone); then one last
        drain of everything journaled."""
        self.directory.mkdir(parents=True, exist_ok=True)
        await self._lock(stop)
        if stop.is_set():
            return
        log.info("ledger process %d: moving %s into the database", os.getpid(), self.directory)
        self.writer.start()
        last_window = last_status = 0.0
        published: tuple[object, ...] = ()
        try:
            while not stop.is_set():
                now = time.monotonic()
                w = self.writer
                state = (w.db_ok, w.stalled, self._quarantined)
                if state != published or now - last_status >= _STATUS_EVERY_S:
                    self._publish()  # a change at once, else a heartbeat a second
                    published, last_status = state, now
                if now - last_window >= self._window_interval_s:
                    await self._write_window()
                    last_window = now
                if self._parent_pid is not None and os.getppid() != self._parent_pid:
                    log.warning("ledger process: serve (%d) is gone; stopping", self._parent_pid)
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._interval_s)
        finally:
            await self.writer.stop()  # the final drain
            self._publish()
            self._unlock()

    async def _lock(self, stop: asyncio.Event) -> None:
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
        warned = False
        while not stop.is_set():
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not warned:
                    log.warning(
                        "another ledger process holds %s; waiting for it to stop",
                        self.directory / LOCK_FILE,
                    )
                    warned = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
                continue
            self._lock_fd = fd
            return
        os.close(fd)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _publish(self) -> None:
        w = self.writer
        status = LedgerStatus(
            pid=os.getpid(),
            heartbeat=time.time(),
            started=self._started,
            db_ok=w.db_ok,
            stalled=w.stalled,
            written=w.written,
            quarantined=self._quarantined,
            orphan_events=w.orphan_events,
            backlog_bytes=pending_bytes_on_disk(self.directory),
        )
        if self._on_backlog is not None:
            self._on_backlog(w.orphan_events, w.orphan_bytes)
        try:
            write_status(self.directory, status)
        except OSError as exc:  # a full disk: the serving processes see a stale status
            log.warning("ledger status not written: %s", exc)

    async def _write_window(self) -> None:
        try:
            window = await asyncio.to_thread(
                read_window, self._engine, now=datetime.now(UTC), window_days=self._window_days
            )
            write_window(self.directory, window)
        except Exception as exc:  # the database may be down: the serving side keeps the last
            log.warning("TCO window not refreshed: %s", f"{type(exc).__name__}: {exc}")
