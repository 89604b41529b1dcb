"""Batch writer: usage events are queued in memory and inserted in bulk, off the request path.

Inserts are idempotent by event id (``ON CONFLICT DO NOTHING``), so writing a batch twice after
a failure never doubles a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.dialects import postgresql, sqlite

from metering.events import UsageEvent
from metering.tables import UsageEventRecord

log = logging.getLogger(__name__)

_EVENTS: Table = UsageEventRecord.__table__  # type: ignore[attr-defined]


def event_row(event: UsageEvent) -> dict[str, Any]:
    u = event.usage
    return {
        "id": event.id,
        "started_at": datetime.fromtimestamp(event.started_at, UTC),
        "finished_at": datetime.fromtimestamp(event.finished_at, UTC),
        "key_id": event.key_id,
        "user": event.user,
        "agent": event.agent,
        "session": event.session,
        "use_case": event.use_case,
        "model": event.model,
        "backend": event.backend,
        "deployment": event.deployment,
        "upstream_model": event.upstream_model,
        "on_prem": event.on_prem,
        "stream": event.stream,
        "status": event.status,
        "http_status": event.http_status,
        "input_tokens": u.input_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "cache_write_1h_tokens": u.cache_write_1h_tokens,
        "output_tokens": u.output_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "usage_source": event.usage_source,
        "cost_micro_usd": event.cost_micro_usd,
        "latency_s": event.latency_s,
        "ttft_s": event.ttft_s,
        "overhead_s": event.overhead_s,
    }


def insert_events(engine: Engine, events: Sequence[UsageEvent]) -> None:
    """Insert ``events`` in one transaction; rows whose id exists are skipped."""
    if not events:
        return
    rows = [event_row(e) for e in events]
    dialect = engine.dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(_EVENTS).on_conflict_do_nothing(index_elements=["id"])
    elif dialect == "sqlite":
        stmt = sqlite.insert(_EVENTS).on_conflict_do_nothing(index_elements=["id"])
    else:  # pragma: no cover - only the two engines above are supported
        raise RuntimeError(f"unsupported database dialect {dialect!r}")
    with engine.begin() as conn:
        conn.execute(stmt, rows)


class BatchWriter:
    """Moves queued events to the database every ``flush_interval_s`` or ``max_batch`` events.

    A failed batch stays queued and is retried; the proxy never waits on the database.
    """

    def __init__(self, engine: Engine, *, max_batch: int, flush_interval_s: float) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._interval_s = flush_interval_s
        self._queue: deque[UsageEvent] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def submit(self, event: UsageEvent) -> None:
        self._queue.append(event)
        if len(self._queue) >= self._max_batch:
            self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tokenmeter-batch-writer")

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def flush(self) -> None:
        """Write everything queued now (used by tests and shutdown)."""
        while self._queue:
            await self._write_batch()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._interval_s)
            self._wakeup.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("usage batch write failed; %d events queued, retrying", self.backlog)
                await asyncio.sleep(self._interval_s)
        await self._final_flush()

    async def _final_flush(self) -> None:
        for _attempt in range(3):
            try:
                await self.flush()
                return
            except Exception:
                log.exception("final usage flush failed")
                await asyncio.sleep(self._interval_s)

    async def _write_batch(self) -> None:
        batch = _take(self._queue, self._max_batch)
        try:
            await asyncio.to_thread(insert_events, self._engine, batch)
        except BaseException:
            self._queue.extendleft(reversed(batch))
            raise
        self.written += len(batch)


def _take(queue: deque[UsageEvent], n: int) -> list[UsageEvent]:
    return [queue.popleft() for _ in range(min(n, len(queue)))]
