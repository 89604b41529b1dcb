"""Every Prometheus metric tokenmeter exports, declared in one place (docs/metrics.md).

Names follow Prometheus conventions (base units, ``_total`` on counters, one ``tokenmeter_``
prefix); histogram buckets follow the OpenTelemetry GenAI conventions. Labels come only from
small sets: backend, model alias, deployment, use case, status, token type. User and agent labels
exist only when the operator enables them, and every free-form label is capped: values past the
cap are folded into ``other``, so totals stay exact while the series count stays bounded.

With several uvicorn workers the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start;
prometheus_client then keeps each worker's values in shared files and ``/metrics`` merges them,
so every request is counted once whichever worker answers the scrape.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from cost.capacity import BindingConstraint
from metering.events import UsageEvent

if TYPE_CHECKING:
    from metering.live_tco import LiveProjection

# gen_ai.client.operation.duration / gen_ai.server.request.duration boundaries (seconds)
DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
# gen_ai.server.time_to_first_token boundaries (seconds)
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
# The proxy's own time per request: OTel defines none; sub-millisecond resolution is the point.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
OTHER = "other"
TOKEN_TYPES = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")


class LabelCap:
    """Keeps at most ``limit`` distinct values (the ``allowed`` ones always), the rest ``other``."""

    def __init__(self, limit: int, allowed: Sequence[str] = ()) -> None:
        self._limit = limit
        self._seen = set(allowed)
        self._allowed = frozenset(allowed)

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) - len(self._allowed) < self._limit:
            self._seen.add(value)
            return value
        return OTHER


class UsageMetrics:
    """Counters and histograms fed by every recorded usage event."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        use_cases: Sequence[str] = (),
        max_use_cases: int = 50,
        user_label: bool = False,
        agent_label: bool = False,
        max_label_values: int = 100,
    ) -> None:
        self._use_case = LabelCap(max_use_cases, use_cases)
        self._user = LabelCap(max_label_values) if user_label else None
        self._agent = LabelCap(max_label_values) if agent_label else None
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        base = ["backend", "model", "deployment", "use_case"]
        base += ["user"] if user_label else []
        base += ["agent"] if agent_label else []
        route = ["backend", "model", "deployment"]
        r = registry
        self.requests = Counter(
            "tokenmeter_requests", "Requests by outcome.", [*base, "status"], registry=r
        )
        self.tokens = Counter(
            "tokenmeter_tokens",
            "Tokens by disjoint type (sum = all tokens).",
            [*base, "token_type"],
            registry=r,
        )
        self.reasoning = Counter(
            "tokenmeter_reasoning_tokens",
            "Output tokens spent on hidden reasoning (part of output).",
            base,
            registry=r,
        )
        self.cost = Counter(
            "tokenmeter_cost_usd", "Hosted cost at ingestion prices, USD.", base, registry=r
        )
        self.unpriced = Counter(
            "tokenmeter_unpriced_requests",
            "Requests whose model has no known price.",
            base,
            registry=r,
        )
        self.internal_errors = Counter(
            "tokenmeter_internal_errors",
            "Requests the gateway failed on itself (answered 500, recorded internal_error), by "
            "exception class.",
            ["exception"],
            registry=r,
        )
        self.quarantined = quarantined_counter(r)
        self.duration = Histogram(
            "tokenmeter_request_duration_seconds",
            "Request duration, first byte in to last byte out.",
            [*route, "stream"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tokenmeter_time_to_first_token_seconds",
            "Time to the first streamed content chunk.",
            route,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "tokenmeter_overhead_seconds",
            "Time per request not spent waiting on the upstream.",
            route,
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )

    def observe(self, event: UsageEvent) -> None:
        labels = [event.backend, event.model, event.deployment, self._use_case(event.use_case)]
        if self._user is not None:
            labels.append(self._user(event.user))
        if self._agent is not None:
            labels.append(self._agent(event.agent))
        base = tuple(labels)
        route = (event.backend, event.model, event.deployment)
        child = self._child
        child(self.requests, (*base, event.status)).inc()
        u = event.usage
        for token_type, count in zip(
            TOKEN_TYPES,
            (
                u.uncached_input_tokens,
                u.cache_read_tokens,
                u.cache_write_5m_tokens,
                u.cache_write_1h_tokens,
                u.output_tokens,
            ),
            strict=True,
        ):
            if count:
                child(self.tokens, (*base, token_type)).inc(count)
        if u.reasoning_tokens:
            child(self.reasoning, base).inc(u.reasoning_tokens)
        if event.cost_micro_usd is None:
            child(self.unpriced, base).inc()
        elif event.cost_micro_usd:
            child(self.cost, base).inc(event.cost_micro_usd / 1_000_000)
        stream = "true" if event.stream else "false"
        child(self.duration, (*route, stream)).observe(event.latency_s)
        if event.ttft_s is not None:
            child(self.ttft, route).observe(event.ttft_s)
        child(self.overhead, route).observe(event.overhead_s)

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        """``metric.labels(*labels)``, remembered: the label sets are capped, so is this."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


class IdentityMetrics:
    """How often a client's own identity value (``metadata.user_id``, body ``user``, a peer's
    header) was bounded instead of kept as sent. ``field`` and ``reason`` come from small fixed
    sets: the body fields and header names read for attribution; too_long, non_printable,
    not_a_string."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.normalized = Counter(
            "tokenmeter_identity_normalized",
            "Client-sent identity values kept in bounded form, by field and reason.",
            ["field", "reason"],
            registry=registry,
        )

    def count(self, field: str, reason: str) -> None:
        self.normalized.labels(field, reason).inc()


class RateLimitMetrics:
    """The shared rate-limit store (Redis), present only when one is configured: whether it
    answers, and what this replica did alone while it did not."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.store_up = Gauge(
            "tokenmeter_rate_limit_store_up",
            "1 while the shared rate-limit store answers; 0 while this replica enforces its share.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.fallbacks = Counter(
            "tokenmeter_rate_limit_fallbacks",
            "Admissions decided by this replica's share of the limits (admit), and token debits "
            "held back to be sent later (debit), because the shared store did not answer.",
            ["operation"],
            registry=registry,
        )
        self.dropped_tokens = Counter(
            "tokenmeter_rate_limit_dropped_tokens",
            "Tokens never debited from the shared store: held back past a bucket's minute, or "
            "still unsent at shutdown.",
            registry=registry,
        )


class StateMetrics:
    """Gauges of the ledger's state and the live TCO projection, set by each process.

    Per process: the backlog sums over workers; health takes the worst worker; the projection
    (the same in every worker) takes the max. Aggregate across replicas the same way.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.backlog_events, self.backlog_bytes = backlog_gauges(r)
        self.database_up = Gauge(
            "tokenmeter_database_up",
            "1 if the database answers the ledger writer, else 0.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.writer_up = Gauge(
            "tokenmeter_ledger_writer_up",
            "0 while the database answers but the ledger writer cannot write (stalled), else 1.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.journal_writable = Gauge(
            "tokenmeter_journal_writable",
            "1 if the last journal append succeeded, else 0.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.budget_used = Gauge(
            "tokenmeter_budget_used_ratio",
            "Share of each budget used in its current period (1 = at the limit).",
            ["budget"],
            registry=r,
            multiprocess_mode="livemax",
        )

        def gauge(name: str, doc: str, labels: list[str]) -> Gauge:
            # Every TCO gauge has labels, so none exists before the first projection: a fresh
            # gateway shows no series instead of a misleading 0 (docs/metrics.md).
            return Gauge(name, doc, labels, registry=r, multiprocess_mode="livemax")

        self.tco_status = gauge(
            "tokenmeter_tco_status", "1 for the projection's status.", ["status"]
        )
        self.tco_verdict = gauge(
            "tokenmeter_tco_verdict_info", "The projection's verdict, as a label.", ["verdict"]
        )
        self.tco_cost = gauge(
            "tokenmeter_tco_monthly_cost_usd",
            "Monthly cost: hosted (the metered bill), hosted_list, plan (staying hosted + "
            "every target on-prem).",
            ["option"],
        )
        self.tco_target_cost = gauge(
            "tokenmeter_tco_target_monthly_cost_usd",
            "Monthly cost of one migration target's traffic, hosted (billed) or on-prem.",
            ["target", "option"],
        )
        self.tco_break_even = gauge(
            "tokenmeter_tco_break_even_months",
            "Months until on-prem cash falls to hosted spend (-1: not within the horizon).",
            ["target"],
        )
        self.tco_crossover = gauge(
            "tokenmeter_tco_crossover_tokens_per_month",
            "Monthly volume where on-prem, sized for its peak, costs what hosted does (-1: never).",
            ["target"],
        )
        self.tco_gpus = gauge(
            "tokenmeter_tco_gpus_needed", "GPUs the target's peak needs.", ["target"]
        )
        self.tco_target = gauge(
            "tokenmeter_tco_negotiation_target_usd_per_mtok",
            "Hosted price at which the target's bill equals its on-prem cost (-1: no lever).",
            ["target"],
        )
        self.tco_utilization = gauge(
            "tokenmeter_tco_onprem_utilization_ratio",
            "On-prem GPU busy share: planned per target; measured and target for the pilot.",
            ["kind", "target"],
        )
        self.tco_binding = gauge(
            "tokenmeter_tco_binding_constraint",
            "1 for the constraint that sizes the target's deployment.",
            ["target", "constraint"],
        )

    def set_ledger(
        self,
        *,
        backlog_events: int,
        backlog_bytes: int,
        database_ok: bool,
        journal_ok: bool,
        writer_ok: bool = True,
    ) -> None:
        self.backlog_events.set(backlog_events)
        self.backlog_bytes.set(backlog_bytes)
        self.database_up.set(1 if database_ok else 0)
        self.writer_up.set(1 if writer_ok else 0)
        self.journal_writable.set(1 if journal_ok else 0)

    def set_budgets(self, used: list[tuple[str, float]]) -> None:
        """Each budget's used share, by name (``team:platform:month``); a deleted budget's
        series goes away."""
        self.budget_used.clear()
        for name, ratio in used:
            self.budget_used.labels(name).set(ratio)

    def set_tco(self, state: LiveProjection | None) -> None:
        """Publish ``state``; before the first projection, nothing (no series at all)."""
        if state is None:
            return
        for g in self._tco_gauges():
            g.clear()
        self.tco_status.labels(state.status.value).set(1)
        self.tco_verdict.labels(state.verdict).set(1)
        if state.pilot is not None:
            self.tco_utilization.labels("measured", "pilot").set(state.pilot.utilization_measured)
            self.tco_utilization.labels("target", "pilot").set(state.inputs.plan.target_utilization)
        p = state.projection
        if p is None:
            return
        self.tco_cost.labels("hosted").set(p.hosted_usd_per_month)
        self.tco_cost.labels("hosted_list").set(p.hosted_list_usd_per_month)
        plan_cost = p.staying_usd_per_month + sum(t.onprem_usd_per_month for t in p.targets)
        self.tco_cost.labels("plan").set(plan_cost)
        for t in p.targets:
            name = t.target.name
            self.tco_target_cost.labels(name, "hosted").set(t.hosted_usd_per_month)
            self.tco_target_cost.labels(name, "onprem").set(t.onprem_usd_per_month)
            be = t.break_even
            self.tco_break_even.labels(name).set(-1 if be.month is None else be.months_fractional)
            self.tco_crossover.labels(name).set(_or_never(t.crossover.tokens_per_month))
            self.tco_gpus.labels(name).set(t.sized.sizing.gpus_needed)
            lever = t.negotiation.lever
            self.tco_target.labels(name).set(t.negotiation.target_usd_per_m if lever else -1)
            self.tco_utilization.labels("planned", name).set(t.sized.utilization)
            for constraint in BindingConstraint:
                self.tco_binding.labels(name, constraint.value).set(
                    1 if t.sized.sizing.binding is constraint else 0
                )

    def _tco_gauges(self) -> tuple[Gauge, ...]:
        return (
            self.tco_status,
            self.tco_verdict,
            self.tco_cost,
            self.tco_target_cost,
            self.tco_break_even,
            self.tco_crossover,
            self.tco_gpus,
            self.tco_target,
            self.tco_utilization,
            self.tco_binding,
        )


def _or_never(value: float | None) -> float:
    return -1.0 if value is None or math.isinf(value) else value


def backlog_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    """Summed over the processes that set them: each worker its own segments, and with several
    workers the ledger process the segments of processes gone that it replays."""
    return (
        Gauge(
            "tokenmeter_journal_backlog_events",
            "Usage events journaled but not yet in the database.",
            registry=registry,
            multiprocess_mode="livesum",
        ),
        Gauge(
            "tokenmeter_journal_backlog_bytes",
            "Bytes of journal past the database checkpoint.",
            registry=registry,
            multiprocess_mode="livesum",
        ),
    )


def quarantined_counter(registry: CollectorRegistry) -> Counter:
    """Kept by whoever writes the database: a serving process (inline ledger), or the ledger
    process (in the shared metrics directory, when serve runs several workers)."""
    return Counter(
        "tokenmeter_ledger_quarantined",
        "Events the database refused on their data, moved to the quarantine "
        "(`tokenmeter ledger quarantine list`).",
        registry=registry,
    )


def exposition(registry: CollectorRegistry) -> bytes:
    """The text to serve on /metrics: every worker's values when running multi-process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
    return generate_latest(registry)
