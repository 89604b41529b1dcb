"""The ledger's front door: price an event at ingestion and hand it to the writer."""

from __future__ import annotations

from cost.prices import PriceTable
from cost.pricing import price_usage
from metering.events import UsageEvent
from metering.writer import BatchWriter


class Ledger:
    """Records usage events; ``record`` never blocks and never touches the database itself."""

    def __init__(
        self, *, writer: BatchWriter, prices: PriceTable, reject_unjournaled: bool
    ) -> None:
        self._writer = writer
        self._prices = prices
        self._reject = reject_unjournaled

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
    def journal_failed(self) -> bool:
        return self._writer.journal_failed

    @property
    def accepting(self) -> bool:
        """False while the journal is unwritable and the policy is to refuse unmetered traffic."""
        return not (self._reject and self._writer.journal_failed)

    def record(self, event: UsageEvent) -> bool:
        """Price and journal the event. False when it could not be journaled and the policy is
        to reject: the caller should answer 503 if it still can (the event is kept in memory)."""
        price = None if event.on_prem else self._prices.lookup(event.upstream_model, event.backend)
        event.cost_micro_usd = price_usage(event.usage, price)
        return self._writer.submit(event) or not self._reject

    async def flush(self) -> None:
        await self._writer.flush()
