"""The ledger's front door: price an event at ingestion and hand it to the writer."""

from __future__ import annotations

from cost.prices import PriceTable
from cost.pricing import price_usage
from metering.events import UsageEvent
from metering.writer import BatchWriter


class Ledger:
    """Records usage events; ``record`` never blocks and never touches the database itself."""

    def __init__(self, *, writer: BatchWriter, prices: PriceTable) -> None:
        self._writer = writer
        self._prices = prices

    @property
    def backlog(self) -> int:
        return self._writer.backlog

    def record(self, event: UsageEvent) -> None:
        price = None if event.on_prem else self._prices.lookup(event.upstream_model, event.backend)
        event.cost_micro_usd = price_usage(event.usage, price)
        self._writer.submit(event)

    async def flush(self) -> None:
        await self._writer.flush()
