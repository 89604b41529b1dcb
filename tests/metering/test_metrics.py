"""Metric values and the cardinality policy."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry

from cost.usage import TokenUsage
from metering.metrics import OTHER, LabelCap, UsageMetrics
from tests.metering.factories import make_event


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_label_cap_folds_values_past_the_cap_but_keeps_allowed_ones():
    cap = LabelCap(2, allowed=["coding"])
    assert [cap(v) for v in ["a", "b", "c", "coding", "a"]] == ["a", "b", OTHER, "coding", "a"]


def test_tokens_by_disjoint_type_sum_to_all_tokens():
    registry = CollectorRegistry()
    metrics = UsageMetrics(registry)
    usage = TokenUsage(
        input_tokens=100,
        cache_read_tokens=60,
        cache_write_tokens=30,
        cache_write_1h_tokens=10,
        output_tokens=40,
        reasoning_tokens=5,
    )
    metrics.observe(make_event(usage=usage, cost_micro_usd=2_500_000))
    by_type = {
        t: value(registry, "tokenmeter_tokens_total", token_type=t)
        for t in ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")
    }
    assert by_type == {
        "input": 10,
        "cache_read": 60,
        "cache_write_5m": 20,
        "cache_write_1h": 10,
        "output": 40,
    }
    assert value(registry, "tokenmeter_cost_usd_total") == 2.5
    assert value(registry, "tokenmeter_reasoning_tokens_total") == 5


def test_user_and_agent_labels_are_off_by_default():
    registry = CollectorRegistry()
    UsageMetrics(registry).observe(make_event())
    labels = {k for m in registry.collect() for s in m.samples for k in s.labels}
    assert not labels & {"user", "agent", "key_id", "session", "id"}


def test_opt_in_user_label_is_capped_and_totals_stay_exact():
    registry = CollectorRegistry()
    metrics = UsageMetrics(registry, user_label=True, max_label_values=3)
    rng = random.Random(1)
    events = [make_event(rng, user=f"user-{i}") for i in range(10)]
    for e in events:
        metrics.observe(e)
    users = {
        s.labels["user"]
        for m in registry.collect()
        for s in m.samples
        if s.name == "tokenmeter_requests_total"
    }
    assert users == {"user-0", "user-1", "user-2", OTHER}
    assert value(registry, "tokenmeter_requests_total") == 10
    assert value(registry, "tokenmeter_tokens_total", token_type="output") == sum(
        e.usage.output_tokens for e in events
    )


def test_unknown_use_cases_fold_into_other_past_the_cap():
    registry = CollectorRegistry()
    metrics = UsageMetrics(registry, use_cases=["coding"], max_use_cases=1)
    for use_case in ["coding", "rag", "chat", "search"]:
        metrics.observe(make_event(use_case=use_case))
    seen = {
        s.labels["use_case"]
        for m in registry.collect()
        for s in m.samples
        if s.name == "tokenmeter_requests_total"
    }
    assert seen == {"coding", "rag", OTHER}
