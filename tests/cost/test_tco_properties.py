"""Properties of the TCO model over generated plans, volumes and prices (tco.md §2.5–2.7)."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cost.capacity import (
    OnPremPlan,
    capacity_tokens_per_month,
    find_crossover,
    onprem_monthly_cost,
)
from cost.scenarios import SCENARIOS
from cost.tco import (
    TOKEN_CLASSES,
    HostedPricing,
    MonthlyTokens,
    ObservedVolume,
    break_even,
    hosted_monthly_cost,
    project_tco,
)

CENT = 0.01
PROPERTY = settings(max_examples=200, deadline=None)

plans = st.builds(
    lambda scenario, **fields: replace(scenario.plan, **fields),
    st.sampled_from(list(SCENARIOS.values())),
    capex_usd_per_gpu=st.floats(0, 100_000),
    amortization_months=st.floats(1, 120),
    staff_loaded_usd_per_year=st.floats(0, 500_000),
    usd_per_kwh=st.floats(0, 0.5),
    prefill_tokens_per_s_per_gpu=st.floats(100, 50_000),
    decode_tokens_per_s_per_gpu=st.floats(10, 10_000),
    target_utilization=st.floats(0.05, 1.0),
)
token_counts = st.floats(0, 1e10, allow_subnormal=False)
monthly_tokens = st.builds(
    MonthlyTokens,
    input_tokens=token_counts,
    cache_read_tokens=token_counts,
    cache_write_5m_tokens=token_counts,
    cache_write_1h_tokens=token_counts,
    output_tokens=token_counts,
).filter(lambda tokens: tokens.total_tokens > 1_000)
volumes = st.builds(
    lambda by_use_case, peak_in, peak_out: ObservedVolume(
        by_use_case, peak_input_tokens_per_s=peak_in, peak_output_tokens_per_s=peak_out
    ),
    st.dictionaries(st.sampled_from(["coding", "rag", "chat"]), monthly_tokens, min_size=1),
    st.floats(0, 10_000),
    st.floats(0, 10_000),
)
optional_prices = st.none() | st.just(0.0) | st.floats(1e-3, 100)
pricings = st.builds(
    HostedPricing,
    name=st.just("hosted"),
    input_usd_per_m=st.floats(0.01, 100),
    output_usd_per_m=st.just(0.0) | st.floats(1e-3, 200),
    cache_read_usd_per_m=optional_prices,
    cache_write_5m_usd_per_m=optional_prices,
    cache_write_1h_usd_per_m=optional_prices,
    batch_discount=st.floats(0, 0.5),
    batch_share=st.floats(0, 1),
    tokenizer_ratio=st.floats(0.5, 2),
)


def scaled(volume: ObservedVolume, factor: float) -> ObservedVolume:
    """``volume`` with every class of every use case times ``factor``; same peaks."""
    by_use_case = {
        use_case: MonthlyTokens(
            **{f"{name}_tokens": count * factor for name, count in tokens.by_class().items()}
        )
        for use_case, tokens in volume.tokens_by_use_case.items()
    }
    return replace(volume, tokens_by_use_case=by_use_case)


def with_total(volume: ObservedVolume, tokens_per_month: float) -> ObservedVolume:
    return scaled(volume, tokens_per_month / volume.total.total_tokens)


def months_or_never(month: int | None) -> float:
    return math.inf if month is None else month


@PROPERTY
@given(plans, volumes, pricings, st.floats(1, 1_000))
def test_more_volume_never_delays_break_even(
    plan: OnPremPlan, volume: ObservedVolume, pricing: HostedPricing, factor: float
) -> None:
    assume(hosted_monthly_cost(volume, pricing).blended_usd_per_m > 0)  # project_tco precondition
    before = project_tco(volume=volume, hosted=pricing, plan=plan).break_even
    after = project_tco(volume=scaled(volume, factor), hosted=pricing, plan=plan).break_even
    assert after.months_fractional <= before.months_fractional
    assert months_or_never(after.month) <= months_or_never(before.month)


@PROPERTY
@given(plans, volumes, pricings)
def test_monthly_costs_agree_at_the_crossover_volume(
    plan: OnPremPlan, volume: ObservedVolume, pricing: HostedPricing
) -> None:
    assume(hosted_monthly_cost(volume, pricing).blended_usd_per_m > 0)  # project_tco precondition
    crossover = project_tco(volume=volume, hosted=pricing, plan=plan).crossover
    assume(crossover.chosen is not None)
    assert crossover.chosen is not None
    at_crossover = with_total(volume, crossover.chosen.simple_tokens_per_month)
    hosted_usd = hosted_monthly_cost(at_crossover, pricing).total_usd_per_month
    assert hosted_usd == pytest.approx(crossover.chosen.onprem.total_usd_per_month, abs=CENT)


@PROPERTY
@given(plans, volumes, pricings)
def test_exact_crossover_prices_energy_at_the_load_it_brings(
    plan: OnPremPlan, volume: ObservedVolume, pricing: HostedPricing
) -> None:
    blended = hosted_monthly_cost(volume, pricing).blended_usd_per_m
    assume(
        blended > 0
    )  # a price that underflows to 0 has no crossover (project_tco's precondition)
    input_share = volume.total.all_input_tokens / volume.total.total_tokens
    first = find_crossover(plan, hosted_usd_per_m=blended, input_share=input_share).first
    assume(math.isfinite(first.exact_tokens_per_month))
    gpus = first.onprem.gpu_count
    capacity = capacity_tokens_per_month(plan, gpu_count=gpus, input_share=input_share)
    assume(first.exact_tokens_per_month <= capacity)
    at_crossover = with_total(volume, first.exact_tokens_per_month)
    onprem = onprem_monthly_cost(
        plan, gpu_count=gpus, utilization=first.exact_tokens_per_month / capacity
    )
    hosted_usd = hosted_monthly_cost(at_crossover, pricing).total_usd_per_month
    assert hosted_usd == pytest.approx(onprem.total_usd_per_month, abs=CENT)


@PROPERTY
@given(plans, volumes, pricings)
def test_negotiation_prices_make_hosted_and_onprem_equal(
    plan: OnPremPlan, volume: ObservedVolume, pricing: HostedPricing
) -> None:
    assume(hosted_monthly_cost(volume, pricing).blended_usd_per_m > 0)  # project_tco precondition
    projection = project_tco(volume=volume, hosted=pricing, plan=plan)
    target = projection.negotiation.target_usd_per_m_by_class
    negotiated = replace(
        pricing,
        **{f"{name}_usd_per_m": target[name] for name in TOKEN_CLASSES},  # type: ignore[arg-type]
    )
    hosted_usd = hosted_monthly_cost(volume, negotiated).total_usd_per_month
    assert hosted_usd == pytest.approx(projection.onprem.total_usd_per_month, abs=CENT)


@PROPERTY
@given(plans, volumes, pricings)
def test_blended_negotiation_target_times_volume_is_the_onprem_cost(
    plan: OnPremPlan, volume: ObservedVolume, pricing: HostedPricing
) -> None:
    assume(hosted_monthly_cost(volume, pricing).blended_usd_per_m > 0)  # project_tco precondition
    projection = project_tco(volume=volume, hosted=pricing, plan=plan)
    usd = projection.negotiation.target_usd_per_m * volume.total.total_tokens / 1e6
    assert usd == pytest.approx(projection.onprem.total_usd_per_month, abs=CENT)


# Absurd inputs raise ValueError naming the field.

ABSURD = [math.nan, math.inf, -math.inf, -1.0]
NUMERIC_PLAN_FIELDS = [
    "capex_usd_per_gpu",
    "capex_usd_per_node",
    "amortization_months",
    "power_kw_per_gpu",
    "prefill_tokens_per_s_per_gpu",
    "decode_tokens_per_s_per_gpu",
    "vram_gb_per_gpu",
    "model_memory_gb",
    "residual_fraction",
    "interest_rate_per_year",
    "pue",
    "usd_per_kwh",
    "energy_usd_per_gpu_month",
    "colo_usd_per_kw_month",
    "facility_usd_per_month",
    "staff_fte_fraction",
    "staff_loaded_usd_per_year",
    "software_usd_per_month",
    "support_rate_per_year",
    "vram_headroom",
    "target_utilization",
]
ZERO_IS_ABSURD = [
    "amortization_months",
    "power_kw_per_gpu",
    "prefill_tokens_per_s_per_gpu",
    "decode_tokens_per_s_per_gpu",
    "vram_gb_per_gpu",
    "model_memory_gb",
    "vram_headroom",
    "target_utilization",
    "pue",
]
WHOLE_PLAN_FIELDS = ["horizon_months", "gpus_per_node", "max_nodes", "min_replicas", "gpu_count"]
BASE_PLAN = SCENARIOS["enterprise-h100"].plan


def absurd(field: str, value: object) -> dict[str, Any]:
    return {field: value}


@settings(deadline=None)
@given(st.sampled_from(NUMERIC_PLAN_FIELDS), st.sampled_from(ABSURD))
def test_absurd_plan_number_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=re.escape(f"OnPremPlan.{field}")):
        replace(BASE_PLAN, **absurd(field, value))


@pytest.mark.parametrize("field", ZERO_IS_ABSURD)
def test_zero_where_meaningless_names_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"OnPremPlan.{field}")):
        replace(BASE_PLAN, **absurd(field, 0.0))


@pytest.mark.parametrize("field", WHOLE_PLAN_FIELDS)
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_absurd_count_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=re.escape(f"OnPremPlan.{field}")):
        replace(BASE_PLAN, **absurd(field, value))


@settings(deadline=None)
@given(
    st.sampled_from(["input_usd_per_m", "output_usd_per_m", "cache_read_usd_per_m"]),
    st.sampled_from(ABSURD),
)
def test_absurd_price_names_the_field(field: str, value: float) -> None:
    prices: dict[str, Any] = {"input_usd_per_m": 1.0, "output_usd_per_m": 1.0, field: value}
    with pytest.raises(ValueError, match=re.escape(f"HostedPricing.{field}")):
        HostedPricing("x", **prices)


@settings(deadline=None)
@given(st.sampled_from([f"{name}_tokens" for name in TOKEN_CLASSES]), st.sampled_from(ABSURD))
def test_absurd_volume_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=re.escape(f"MonthlyTokens.{field}")):
        MonthlyTokens(**{field: value})


@pytest.mark.parametrize("field", ["peak_input_tokens_per_s", "peak_output_tokens_per_s"])
@pytest.mark.parametrize("value", ABSURD)
def test_absurd_peak_names_the_field(field: str, value: float) -> None:
    rates = {"peak_input_tokens_per_s": 1.0, "peak_output_tokens_per_s": 1.0, field: value}
    with pytest.raises(ValueError, match=re.escape(f"ObservedVolume.{field}")):
        ObservedVolume({"all": MonthlyTokens(input_tokens=1.0)}, **rates)


def test_zero_horizon_is_refused() -> None:
    with pytest.raises(ValueError, match="horizon_months"):
        break_even(capex_usd=1, hosted_usd_per_month=2, opex_usd_per_month=1, horizon_months=0)


def test_a_free_hosted_bill_is_refused_by_the_projection() -> None:
    free = HostedPricing("free", input_usd_per_m=0.0, output_usd_per_m=0.0)
    volume = ObservedVolume({"all": MonthlyTokens(input_tokens=1e6)}, 1.0, 0.0)
    with pytest.raises(ValueError, match="prices the observed volume at \\$0"):
        project_tco(volume=volume, hosted=free, plan=BASE_PLAN)
