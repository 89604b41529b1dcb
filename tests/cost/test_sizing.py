"""One sizing behind crossover, break-even and negotiation (tco.md §2.4–2.7), as properties.

The property of §2.6: at the reported crossover on-prem (sized for its peak) and hosted agree
within one sizing step, below it hosted is cheaper, above it on-prem is cheaper or equal until a
new step (the reported band end) pushes on-prem above again.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cost.capacity import CrossoverStatus, gpus_per_replica, onprem_monthly_cost
from cost.presets import GPUS, MODELS, target_scenario
from cost.scenarios import SCENARIOS, get_scenario
from cost.sizing import (
    TrafficShape,
    break_even_by_month,
    onprem_cost_at,
    sized_crossover,
)
from cost.tco import break_even

PROPERTY = settings(max_examples=150, deadline=None)
TARGETS = [
    target_scenario(gpu=g, model=m, acquire=a)
    for g in ("h200-node", "b200-node")
    for m in MODELS
    for a in ("buy", "rent")
] + [target_scenario(gpu="h100-node", model="devstral-2"), *SCENARIOS.values()]

plans = st.builds(
    lambda scenario, staff: replace(scenario.plan, staff_fte_fraction=staff),
    st.sampled_from(TARGETS),
    st.floats(0, 1),
)
shapes = st.builds(TrafficShape, st.floats(1, 20), st.floats(1, 20), st.floats(0.05, 0.95))


def gap(plan, shape, usd_per_m: float, volume: float) -> float:
    """On-prem minus hosted, USD/month, at ``volume``."""
    return onprem_cost_at(plan, shape, volume).onprem.total_usd_per_month - volume * usd_per_m / 1e6


@PROPERTY
@given(plans, shapes, st.floats(0.05, 50), st.floats(0.001, 0.999))
def test_hosted_is_cheaper_below_the_crossover(plan, shape, usd_per_m, fraction):
    found = sized_crossover(plan, shape, usd_per_m)
    assume(found.tokens_per_month is not None)
    assert gap(plan, shape, usd_per_m, found.tokens_per_month * fraction) > 0


@PROPERTY
@given(plans, shapes, st.floats(0.05, 50))
def test_at_the_crossover_they_agree_within_one_sizing_step(plan, shape, usd_per_m):
    found = sized_crossover(plan, shape, usd_per_m)
    assume(found.tokens_per_month is not None)
    volume = found.tokens_per_month
    at = onprem_cost_at(plan, shape, volume)
    assert at.onprem.gpu_count == found.gpus
    # Within the step, the sized cost equals the hosted bill; when V* is where a step starts,
    # on-prem is at or below hosted there and the step before was dearer.
    assert gap(plan, shape, usd_per_m, volume) <= 1e-6 * max(1.0, volume * usd_per_m / 1e6)
    one_step = onprem_monthly_cost(plan, gpu_count=plan.gpus_per_node).total_usd_per_month
    assert abs(gap(plan, shape, usd_per_m, volume)) <= one_step


@PROPERTY
@given(plans, shapes, st.floats(0.05, 50), st.floats(1.0001, 50))
def test_on_prem_is_cheaper_above_the_crossover_until_the_band_ends(plan, shape, usd_per_m, factor):
    found = sized_crossover(plan, shape, usd_per_m)
    assume(found.tokens_per_month is not None)
    volume = found.tokens_per_month * factor
    end = found.hosted_cheaper_again_from
    assume(end is None or volume < end)
    assume(onprem_cost_at(plan, shape, volume).sizing.nodes_needed <= plan.max_nodes)
    assert gap(plan, shape, usd_per_m, volume) <= 1e-6 * volume * usd_per_m / 1e6


def test_a_peakier_shape_needs_more_volume_to_cross():
    """The flat form (κ = 1) is a lower bound: sized for a peak 3× or 8× the mean, the same
    price crosses later or, past the throughput-bound steps, never."""
    plan = target_scenario(gpu="h200-node", model="devstral-2").plan
    flat = sized_crossover(plan, TrafficShape(1, 1, 0.75), 3.0)
    peak_3 = sized_crossover(plan, TrafficShape(3, 3, 0.75), 3.0)
    peak_5 = sized_crossover(plan, TrafficShape(5, 5, 0.75), 3.0)
    peak_8 = sized_crossover(plan, TrafficShape(8, 8, 0.75), 3.0)
    assert flat.tokens_per_month == pytest.approx(5.5413e9, rel=1e-4)  # one node, HA-bound
    assert flat.hosted_cheaper_again_from is None
    # κ = 3 crosses on the same node, but the next node pushes on-prem above hosted: a band
    assert peak_3.tokens_per_month == flat.tokens_per_month
    assert peak_3.hosted_cheaper_again_from == pytest.approx(7.535e9, rel=1e-3)
    assert peak_5.tokens_per_month is not None and peak_5.tokens_per_month > 2 * 5.5413e9
    assert peak_8.status is CrossoverStatus.NEVER_CAPACITY


def test_a_price_below_the_energy_per_token_never_crosses():
    plan = get_scenario("enterprise-hgx-colo").plan
    found = sized_crossover(plan, TrafficShape(1, 1, 0.75), 1e-6)
    assert found.status is CrossoverStatus.NEVER_PRICE and found.tokens_per_month is None


@pytest.mark.parametrize("scenario", ["enterprise-h100", "enterprise-hgx-colo"])
def test_constant_volume_break_even_is_the_closed_form(scenario):
    """With no growth the month-by-month solution is tco.md §2.5's capex / (hosted − opex)."""
    plan, shape, volume = get_scenario(scenario).plan, TrafficShape(3, 3, 0.75), 3e9
    sized = onprem_cost_at(plan, shape, volume)
    hosted_per_token = 10e-6
    closed = break_even(
        capex_usd=sized.onprem.capex_usd,
        hosted_usd_per_month=volume * hosted_per_token,
        opex_usd_per_month=sized.onprem.opex_usd_per_month,
        horizon_months=plan.horizon_months,
    )
    monthly = break_even_by_month(
        plan, shape, tokens_per_month=volume, hosted_usd_per_token=hosted_per_token
    )
    assert monthly.month == closed.month
    assert monthly.months_fractional == pytest.approx(closed.months_fractional, rel=1e-9)


def test_growth_brings_break_even_forward_and_buys_gpus_as_it_goes():
    plan, shape = get_scenario("enterprise-hgx-colo").plan, TrafficShape(3, 3, 0.75)
    flat = break_even_by_month(plan, shape, tokens_per_month=2e9, hosted_usd_per_token=6e-6)
    growing = break_even_by_month(
        plan, shape, tokens_per_month=2e9, hosted_usd_per_token=6e-6, growth_per_month=0.1
    )
    assert growing.month is not None
    assert flat.month is None or growing.month < flat.month
    month_36 = onprem_cost_at(plan, shape, 2e9 * 1.1**35)
    assert month_36.onprem.gpu_count > onprem_cost_at(plan, shape, 2e9).onprem.gpu_count


def test_never_within_the_horizon_is_infinite_not_a_number_of_months():
    plan = get_scenario("enterprise-hgx-colo").plan
    result = break_even_by_month(
        plan, TrafficShape(3, 3, 0.75), tokens_per_month=1e8, hosted_usd_per_token=1e-6
    )
    assert result.month is None and math.isinf(result.months_fractional)


def test_every_gpu_and_model_preset_has_provenance_for_each_figure():
    for gpu in GPUS.values():
        assert set(gpu.provenance) == {"vram", "power", "price", "rent", "speed"}
    for model in MODELS.values():
        assert set(model.provenance) == {"memory", "headroom", "prefill", "decode"}
    scenario = target_scenario(gpu="b200-node", model="mistral-large-3")
    assert scenario.provenance["decode_tokens_per_s_per_gpu"].kind == "est."
    assert all(url.startswith("http") for url in scenario.provenance["vram_gb_per_gpu"].urls)


def test_mistral_large_3_does_not_fit_an_h100_node_and_says_so():
    with pytest.raises(ValueError, match=r"877\.5 GB does not fit the widest replica"):
        target_scenario(gpu="h100-node", model="mistral-large-3")


def test_rented_gpus_cost_their_hourly_rate_and_no_capex():
    plan = target_scenario(gpu="h200-node", model="mistral-small", acquire="rent").plan
    cost = onprem_monthly_cost(plan, gpu_count=3)
    assert cost.capex_usd == 0 and cost.energy_usd_per_month == 0
    assert cost.rent_usd_per_month == pytest.approx(3 * 3.59 * 730)
    assert cost.opex_usd_per_month == pytest.approx(
        cost.rent_usd_per_month + cost.staff_usd_per_month
    )


def test_mistral_small_fits_one_l40s_and_devstral_2_needs_eight():
    small = target_scenario(gpu="l40s-node", model="mistral-small").plan
    devstral = target_scenario(gpu="l40s-node", model="devstral-2").plan
    assert gpus_per_replica(small) == 1  # 24 GB × 2 = 48 GB, exactly one card
    assert gpus_per_replica(devstral) == 8  # 246 GB on 48 GB cards
    assert small.decode_tokens_per_s_per_gpu == pytest.approx(2_500 * 0.26)


def test_unknown_presets_name_the_choices():
    with pytest.raises(ValueError, match="h200-node"):
        target_scenario(gpu="h300-node", model="mistral-small")
    with pytest.raises(ValueError, match="devstral-2"):
        target_scenario(gpu="h200-node", model="mistral-huge")
