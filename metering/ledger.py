"""The ledger's front door: price an event at ingestion and hand it to the writer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from cost.pricebook import Pricebook
from metering.events import UsageEvent
from metering.metrics import UsageMetrics

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where recorded events go: ``metering.appender.JournalAppender`` (the ledger process
    takes them from the journal) or ``metering.writer.BatchWriter`` (inline, in this process)."""

    journal_failed: bool

    def submit(self, event: UsageEvent) -> bool: ...
    @property
    def backlog_events(self) -> int: ...
    @property
    def backlog_bytes(self) -> int: ...
    @property
    def db_ok(self) -> bool: ...
    @property
    def stalled(self) -> str | None: ...


class Ledger:
    """Records usage events; ``record`` never blocks and never touches the database itself."""

    def __init__(
        self,
        *,
        writer: Sink,
        prices: Pricebook,
        reject_unjournaled: bool,
        metrics: UsageMetrics | None = None,
    ) -> None:
        self._writer = writer
        self._metrics = metrics
        self._prices = prices
        self._reject = reject_unjournaled
        self._unpriced: set[tuple[str, str]] = set()
        # Called with every priced event, e.g. to count spend against budgets and rate limits.
        self.listeners: list[Callable[[UsageEvent], None]] = []

    @property
    def backlog_events(self) -> int:
        return self._writer.backlog_events

    @property
    def backlog_bytes(self) -> int:
        return self._writer.backlog_bytes

    @property
    def database_ok(self) -> bool:
        return self._writer.db_ok

    @property
    def writer_stalled(self) -> str | None:
        """Why the writer cannot write although the database answers; None when it can."""
        return self._writer.stalled

    @property
    def journal_failed(self) -> bool:
        return self._writer.journal_failed

    @property
    def accepting(self) -> bool:
        """False while the journal is unwritable and the policy is to refuse unmetered traffic."""
        return not (self._reject and self._writer.journal_failed)

    def record(self, event: UsageEvent) -> bool:
        """Price and journal the event. False when it could not be journaled and the policy is
        to reject: the caller should answer 503 if it still can (the event is kept in memory)."""
        # A request that spent no tokens (refused, failed before the upstream counted) costs
        # nothing, whether or not its model has a price: it is not an unpriced request.
        try:
            event.cost_micro_usd = (
                self._prices.price(
                    event.usage,
                    model=event.upstream_model,
                    backend=event.backend,
                    on_prem=event.on_prem,
                    at=event.started_at,
                )
                if event.usage.total_tokens
                else 0
            )
        except Exception:  # a bug of ours in pricing must not lose the event: cost unknown
            log.exception(
                "pricing failed for model %r; its cost is recorded as unknown", event.model
            )
            event.cost_micro_usd = None
        if event.cost_micro_usd is None and event.backend != "none":
            self._warn_unpriced(event.upstream_model, event.backend)
        journaled = self._writer.submit(event)
        for listener in self.listeners:
            listener(event)
        if self._metrics is not None:
            self._metrics.observe(event)
        return journaled or not self._reject

    def count_internal_error(self, exception: str) -> None:
        """One request failed on a bug of ours (its event says internal_error)."""
        if self._metrics is not None:
            self._metrics.internal_errors.labels(exception).inc()

    def _warn_unpriced(self, model: str, backend: str) -> None:
        if (model, backend) not in self._unpriced:
            self._unpriced.add((model, backend))
            log.warning(
                "no price for model %r on backend %r: its cost is recorded as unknown; add a "
                "pricing rule or a price_key (see `tokenmeter prices`)",
                model,
                backend,
            )
