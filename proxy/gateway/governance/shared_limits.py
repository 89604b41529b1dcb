"""Rate-limit buckets shared by every replica through Redis, and what a replica does without it.

Admission asks Redis in one round trip, bounded by ``rate_limits.redis_timeout_s``. Tokens are
debited after the response, off the request path: the ledger listener only adds them to a
pending map, which the next admission carries along in its own script call; when none comes
within ``DEBIT_DELAY_S``, a task sends the map alone. Under load that is one round trip per
request, debits included. When Redis does not answer, nothing is refused for that: this replica
decides alone with its share of every limit (limit / replicas) until a probe, once a second,
finds Redis again. Leaving and coming back are each logged once, and counted
(docs/metrics.md). Debits that could not be sent are kept and sent when Redis answers again,
unless they are older than a bucket's minute by then; those are counted as dropped. A call that
timed out may still have been applied by Redis: its debits are sent again all the same, so a
debit can count twice (a limit stricter for a minute), never zero times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from metering.metrics import RateLimitMetrics

log = logging.getLogger(__name__)

RETRY_INTERVAL_S = 1.0  # how often a replica without Redis asks whether it answers again
# A bucket refills completely within a minute: a debit held back longer than that would
# charge a later minute for tokens whose own minute is over.
DEBIT_MAX_AGE_S = 60.0
# A debit waits this long for the next admission to carry it to Redis in the same round trip;
# only then is it sent alone. Other replicas see a debit at most this much later.
DEBIT_DELAY_S = 0.02


class StoreUnavailable(Exception):
    """The store did not answer within its timeout, or answered with an error."""


@dataclass(frozen=True, slots=True)
class Take:
    """One bucket's part in a request: admitted if it holds ``need`` (0: no check), then
    ``take`` is taken. A bucket holds ``capacity`` units and refills at capacity per minute."""

    key: str
    capacity: float
    need: float
    take: float


class BucketStore(Protocol):
    """Where shared buckets live (redis_buckets.RedisBuckets); every call may raise
    StoreUnavailable."""

    where: str  # for logs, without credentials

    async def take(self, takes: Sequence[Take]) -> tuple[float, list[float]]:
        """Seconds to wait (0: every ``take`` was taken, atomically), each level after. A take
        of need 0 is a debit: taken whatever the level, and whatever the others."""
        ...

    async def load(self) -> None:
        """Ready the store for ``take``; answers whether it is reachable."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Debit:
    capacity: float
    tokens: int
    since: float  # monotonic time of the oldest debit folded in


class SharedBuckets:
    def __init__(
        self,
        store: BucketStore,
        metrics: RateLimitMetrics,
        *,
        retry_interval_s: float = RETRY_INTERVAL_S,
        debit_delay_s: float = DEBIT_DELAY_S,
        debit_max_age_s: float = DEBIT_MAX_AGE_S,
    ) -> None:
        self._store = store
        self._debit_max_age_s = debit_max_age_s
        self._retry_interval_s = retry_interval_s
        self._debit_delay_s = debit_delay_s
        self._metrics = metrics
        self.up = True
        metrics.store_up.set(1)
        self._pending: dict[str, _Debit] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        try:
            await self._store.load()
        except StoreUnavailable as exc:
            self._lost(exc)

    async def stop(self) -> None:
        self._closing = True
        for task in (self._probe, self._flushing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.up and self._pending:
            await self._send_pending()
        left = sum(d.tokens for d in self._pending.values())
        if left:
            log.warning("rate limits: %d tokens not debited in Redis at shutdown", left)
            self._metrics.dropped_tokens.inc(left)
        await self._store.close()

    async def take(self, takes: Sequence[Take]) -> tuple[float, list[float]] | None:
        """Redis's answer (seconds to wait, levels after), or None: decide locally. The
        pending debits go along in the same round trip."""
        if self.up:
            carried = self._drop_stale(self._pending) if self._pending else {}
            self._pending = {}
            try:
                wait, levels = await self._store.take([*takes, *_debits(carried)])
            except asyncio.CancelledError:  # the client hung up: the debits are still due
                self._hold(carried)
                raise
            except StoreUnavailable as exc:
                self._hold_back(carried)
                self._lost(exc)
            else:
                return wait, levels[: len(takes)]
        self._metrics.fallbacks.labels("admit").inc()
        return None

    def debit(self, key: str, *, capacity: float, tokens: int) -> None:
        """Take ``tokens`` from the bucket ``key`` soon, without waiting for Redis."""
        self._hold({key: _Debit(capacity, tokens, time.monotonic())})
        if not self.up:
            self._metrics.fallbacks.labels("debit").inc()
        self._schedule_flush()

    def _hold(self, batch: dict[str, _Debit]) -> None:
        for key, debit in batch.items():
            found = self._pending.get(key)
            if found is None:
                self._pending[key] = debit
            else:
                found.capacity = debit.capacity
                found.tokens += debit.tokens
                found.since = min(found.since, debit.since)

    def _schedule_flush(self) -> None:
        if self._closing or not (self.up and self._pending):
            return
        if self._flushing is not None and not self._flushing.done():
            return
        with contextlib.suppress(RuntimeError):  # no running loop: the next debit sends it
            loop = asyncio.get_running_loop()
            self._flushing = loop.create_task(self._flush(), name="tokenmeter-ratelimit-debits")

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(self._debit_delay_s)
            if self._closing or not (self.up and self._pending):
                return
            await self._send_pending()

    async def _send_pending(self) -> None:
        batch, self._pending = self._drop_stale(self._pending), {}
        if not batch:
            return
        try:
            await self._store.take(_debits(batch))
        except asyncio.CancelledError:
            self._hold(batch)  # sent by stop(), which cancelled this
            raise
        except StoreUnavailable as exc:
            self._hold_back(batch)
            self._lost(exc)

    def _hold_back(self, batch: dict[str, _Debit]) -> None:
        self._hold(batch)
        if batch:
            self._metrics.fallbacks.labels("debit").inc(len(batch))

    def _drop_stale(self, pending: dict[str, _Debit]) -> dict[str, _Debit]:
        oldest = time.monotonic() - self._debit_max_age_s
        fresh = {k: d for k, d in pending.items() if d.since >= oldest}
        stale = sum(d.tokens for d in pending.values() if d.since < oldest)
        if stale:
            log.warning(
                "rate limits: %d tokens were held back over %.0f s while Redis did not answer; "
                "not debited",
                stale,
                self._debit_max_age_s,
            )
            self._metrics.dropped_tokens.inc(stale)
        return fresh

    def _lost(self, exc: StoreUnavailable) -> None:
        if not self.up:
            return
        self.up = False
        self._metrics.store_up.set(0)
        log.warning(
            "rate limits: Redis at %s does not answer (%s); each replica enforces its share "
            "(limit / rate_limits.replicas) until it does",
            self._store.where,
            exc,
        )
        if self._closing:
            return
        self._probe = asyncio.get_running_loop().create_task(
            self._probe_until_up(), name="tokenmeter-ratelimit-probe"
        )

    async def _probe_until_up(self) -> None:
        while True:
            await asyncio.sleep(self._retry_interval_s)
            try:
                await self._store.load()
            except StoreUnavailable:
                continue
            self.up = True
            self._metrics.store_up.set(1)
            log.info("rate limits: Redis at %s answers again: limits shared", self._store.where)
            self._schedule_flush()
            return


def _debits(pending: dict[str, _Debit]) -> list[Take]:
    return [Take(key, d.capacity, 0.0, d.tokens) for key, d in pending.items()]
