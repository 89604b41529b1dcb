"""Prometheus metrics of the ledger. Each app owns its registry: nothing global."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from metering.ledger import Ledger


class LedgerCollector(Collector):
    """Backlog gauges read at scrape time, so they are never stale."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "tokenmeter_journal_backlog_events",
            "Usage events journaled but not yet committed to the database.",
            value=self._ledger.backlog_events,
        )
        yield GaugeMetricFamily(
            "tokenmeter_journal_backlog_bytes",
            "Bytes of journal past the database checkpoint.",
            value=self._ledger.backlog_bytes,
        )
        yield GaugeMetricFamily(
            "tokenmeter_database_up",
            "1 if the last database write succeeded, else 0.",
            value=1 if self._ledger.database_ok else 0,
        )
        yield GaugeMetricFamily(
            "tokenmeter_journal_writable",
            "1 if the last journal append succeeded, else 0.",
            value=0 if self._ledger.journal_failed else 1,
        )


def ledger_registry(ledger: Ledger) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(LedgerCollector(ledger))
    return registry
