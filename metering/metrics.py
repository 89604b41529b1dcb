"""Prometheus metrics of the ledger. Each app owns its registry: nothing global."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

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


class TcoCollector(Collector):
    """The live projection's headline numbers; absent until there is traffic to project.

    Every replica computes the same projection from the shared database: aggregate these
    across replicas with ``max`` (or ``avg``), never ``sum``.
    """

    def __init__(self, latest: Callable[[], dict[str, Any] | None]) -> None:
        self._latest = latest

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._latest()
        if not state or state.get("status") != "ok":
            return
        p = state["projection"]
        option = GaugeMetricFamily(
            "tokenmeter_tco_monthly_cost_usd",
            "Projected monthly cost of serving the observed volume, per option.",
            labels=["option"],
        )
        option.add_metric(["hosted"], p["hosted"]["total_usd_per_month"])
        option.add_metric(["onprem"], p["onprem"]["total_usd_per_month"])
        yield option
        for name, doc, value in (
            (
                "tokenmeter_tco_break_even_months",
                "Months until on-prem capex is recovered (absent when never).",
                p["break_even"]["months_fractional"],
            ),
            (
                "tokenmeter_tco_crossover_tokens_per_month",
                "Monthly volume at which hosted and on-prem cost the same (absent when never).",
                p["crossover"]["tokens_per_month"],
            ),
            (
                "tokenmeter_tco_gpus_needed",
                "GPUs needed for the observed peak.",
                p["sizing"]["gpus_needed"],
            ),
            (
                "tokenmeter_tco_negotiation_target_usd_per_mtok",
                "Blended hosted price at which hosted costs what on-prem does.",
                p["negotiation"]["target_usd_per_m"],
            ),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)
        util = GaugeMetricFamily(
            "tokenmeter_tco_onprem_utilization_ratio", "On-prem GPU busy share.", labels=["kind"]
        )
        for kind in ("observed", "measured", "target"):
            value = p[f"utilization_{kind}"]
            if value is not None:
                util.add_metric([kind], value)
        yield util


def ledger_registry(
    ledger: Ledger, *, tco: Callable[[], dict[str, Any] | None] | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(LedgerCollector(ledger))
    if tco is not None:
        registry.register(TcoCollector(tco))
    return registry
