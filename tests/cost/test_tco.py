"""The worked scenarios of reference/tco.md §7 (T1–T10), unrounded, at relative tolerance 1e-3.

Where tco.md prints a value rounded further than 1e-3 allows (a percentage, a 3-digit $/M), the
expected value is written as tco.md's own arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace

import pytest

from cost.capacity import (
    BindingConstraint,
    CapacityBasis,
    Crossover,
    CrossoverStatus,
    OnPremPlan,
    Sizing,
    capacity_tokens_per_month,
    find_crossover,
    onprem_monthly_cost,
    size_for_peak,
    utilization_for_volume,
)
from cost.scenarios import SCENARIOS, get_scenario, seed_volume
from cost.tco import (
    HostedPricing,
    MonthlyTokens,
    NoTrafficError,
    ObservedVolume,
    TcoProjection,
    break_even,
    hosted_monthly_cost,
    project_tco,
)

REL = 1e-3
B = 1e9
M = 1e6

# tco.md §6: list prices, $/M input and output.
HOSTED = {
    "haiku": HostedPricing("claude-haiku-4-5", 1.00, 5.00),
    "sonnet": HostedPricing("claude-sonnet-4-5", 3.00, 15.00),
    "opus": HostedPricing("claude-opus-4-5", 5.00, 25.00),
    "opus-4.1": HostedPricing("claude-opus-4-1", 15.00, 75.00),
    "az-large-3": HostedPricing("azure_ai/mistral-large-3", 0.50, 1.50),
    "az-large-2407": HostedPricing("azure_ai/mistral-large-2407", 2.00, 6.00),
    "az-medium-3": HostedPricing("azure_ai/mistral-medium-2505", 0.40, 2.00),
    "az-small-3.1": HostedPricing("azure_ai/mistral-small-2503", 0.10, 0.30),
}
BLENDED = {"sonnet": 6.00, "opus": 10.00, "haiku": 2.00, "az-large-2407": 3.00}  # §6.3, 75/25
BLENDED |= {"az-large-3": 0.75, "az-medium-3": 0.80, "az-small-3.1": 0.15}

ENTERPRISE = get_scenario("enterprise-h100")
HGX_COLO = get_scenario("enterprise-hgx-colo")
STAFF_50K = {"staff_loaded_usd_per_year": 250_000.0}  # 20 % of $250k = $50k/yr
STAFF_70K = {"staff_loaded_usd_per_year": 350_000.0}
COLO = {"pue": 1.0, "colo_usd_per_kw_month": 195.94}
OWN_DC = {"pue": 1.58, "colo_usd_per_kw_month": 0.0}
SMALL_24B_FP8 = {
    "prefill_tokens_per_s_per_gpu": 16_800.0,
    "decode_tokens_per_s_per_gpu": 2_500.0,
    "model_memory_gb": 23.6,
}

FOUR_H100_OWN_DC = ENTERPRISE.with_overrides(gpu_count=4, **STAFF_50K).plan
FOUR_H100_COLO = ENTERPRISE.with_overrides(gpu_count=4, **STAFF_70K, **COLO).plan
HGX_OWN_DC = HGX_COLO.with_overrides(**STAFF_50K, **OWN_DC).plan
HGX = HGX_COLO.with_overrides(**STAFF_70K).plan
HGX_SMALL_24B = HGX_COLO.with_overrides(**STAFF_70K, **SMALL_24B_FP8).plan
HGX_SMALL_24B_OWN_DC = HGX_COLO.with_overrides(**STAFF_50K, **OWN_DC, **SMALL_24B_FP8).plan


def rig(name: str, energy_usd_per_month: float) -> OnPremPlan:
    return get_scenario(name).with_overrides(energy_usd_per_gpu_month=energy_usd_per_month).plan


def simple_crossover(plan: OnPremPlan, usd_per_m: float) -> float:
    crossover = find_crossover(plan, hosted_usd_per_m=usd_per_m, input_share=0.75)
    return crossover.first.simple_tokens_per_month


# T1 — $1,400 RTX 3090 rig against $200/month of API spend.


def test_t1_seed_claim_rig_pays_for_itself_in_7_months_before_electricity() -> None:
    one_rig = get_scenario("small-team-rtx3090").with_overrides(
        energy_usd_per_gpu_month=0.0, gpu_count=1
    )
    volume = seed_volume(200 / 3.00 * M)  # $200/month at Azure Large 2407's $3.00/M blended
    projection = project_tco(volume=volume, hosted=HOSTED["az-large-2407"], plan=one_rig.plan)
    assert projection.break_even.month == 7


@pytest.mark.parametrize(
    ("energy_usd_per_month", "months"), [(0, 7.00), (15, 1_400 / 185), (25, 8.00)]
)
def test_t1_fractional_break_even(energy_usd_per_month: float, months: float) -> None:
    result = break_even(
        capex_usd=1_400,
        hosted_usd_per_month=200,
        opex_usd_per_month=energy_usd_per_month,
        horizon_months=24,
    )
    assert result.months_fractional == pytest.approx(months, rel=REL)


@pytest.mark.parametrize(("energy_usd_per_month", "month"), [(0, 7), (15, 8), (25, 8)])
def test_t1_whole_break_even_month(energy_usd_per_month: float, month: int) -> None:
    result = break_even(
        capex_usd=1_400,
        hosted_usd_per_month=200,
        opex_usd_per_month=energy_usd_per_month,
        horizon_months=24,
    )
    assert result.month == month


def test_t1_rig_amortization() -> None:
    cost = onprem_monthly_cost(rig("small-team-rtx3090", 0.0), gpu_count=1)
    assert cost.amortized_capex_usd_per_month == pytest.approx(58.33, rel=REL)


@pytest.mark.parametrize(
    ("energy_usd_per_month", "hosted", "tokens_per_month"),
    [
        (15, "az-large-2407", 24.44 * M),
        (25, "az-large-2407", 27.78 * M),
        (15, "sonnet", 12.22 * M),
        (25, "sonnet", 13.89 * M),
    ],
)
def test_t1_rig_crossover(
    energy_usd_per_month: float, hosted: str, tokens_per_month: float
) -> None:
    plan = rig("small-team-rtx3090", energy_usd_per_month)
    assert simple_crossover(plan, BLENDED[hosted]) == pytest.approx(tokens_per_month, rel=REL)


# T2 — $2,500 RTX 4090 rig, crossover volumes.


@pytest.mark.parametrize(("energy_usd_per_month", "usd"), [(15, 119.17), (25, 129.17)])
def test_t2_rig_monthly_cost(energy_usd_per_month: float, usd: float) -> None:
    cost = onprem_monthly_cost(rig("small-team-rtx4090", energy_usd_per_month), gpu_count=1)
    assert cost.total_usd_per_month == pytest.approx(usd, rel=REL)


@pytest.mark.parametrize(
    ("hosted", "at_15", "at_25"),
    [
        ("az-large-2407", 39.72 * M, 43.06 * M),
        ("az-large-3", 158.89 * M, 172.22 * M),
        ("sonnet", 19.86 * M, 21.53 * M),
        ("az-small-3.1", 794.44 * M, 861.11 * M),
    ],
)
def test_t2_rig_simple_crossover(hosted: str, at_15: float, at_25: float) -> None:
    volumes = [simple_crossover(rig("small-team-rtx4090", e), BLENDED[hosted]) for e in (15, 25)]
    assert volumes == pytest.approx([at_15, at_25], rel=REL)


@pytest.mark.parametrize(("utilization", "tokens"), [(1.0, 452.0 * M), (0.7, 316.4 * M)])
def test_t2_rig_capacity_is_output_bound(utilization: float, tokens: float) -> None:
    plan = rig("small-team-rtx4090", 15)
    capacity = capacity_tokens_per_month(
        plan, gpu_count=1, input_share=0.75, utilization=utilization
    )
    assert capacity == pytest.approx(tokens, rel=REL)


def test_t2_rig_never_crosses_small_3_1_for_capacity() -> None:
    plan = rig("small-team-rtx4090", 15)
    crossover = find_crossover(plan, hosted_usd_per_m=0.15, input_share=0.75)
    assert crossover.status is CrossoverStatus.NEVER_CAPACITY


def test_t2_rig_crosses_large_2407_on_one_rig() -> None:
    plan = rig("small-team-rtx4090", 15)
    crossover = find_crossover(plan, hosted_usd_per_m=3.00, input_share=0.75)
    assert crossover.chosen == crossover.first


# T3 — enterprise reading (a): 15M tokens/month org-wide on the seed's 4×H100.


def test_t3_onprem_components() -> None:
    cost = project_tco(volume=seed_volume(15 * M), hosted=HOSTED["sonnet"], plan=FOUR_H100_OWN_DC)
    components = (
        cost.onprem.amortized_capex_usd_per_month,
        cost.onprem.energy_usd_per_month,
        cost.onprem.facility_usd_per_month,
        cost.onprem.staff_usd_per_month,
        cost.onprem.total_usd_per_month,
        cost.onprem.opex_usd_per_month,
    )
    assert components == pytest.approx((3_333.33, 705.88, 0, 4_166.67, 8_205.88, 4_872.55), rel=REL)


T3_HOSTED = [
    ("haiku", 30.0),
    ("sonnet", 90.0),
    ("opus", 150.0),
    ("opus-4.1", 450.0),
    ("az-large-3", 11.25),
    ("az-large-2407", 45.0),
]


@pytest.mark.parametrize(("hosted", "usd"), T3_HOSTED)
def test_t3_hosted_monthly_cost(hosted: str, usd: float) -> None:
    cost = hosted_monthly_cost(seed_volume(15 * M), HOSTED[hosted])
    assert cost.total_usd_per_month == pytest.approx(usd, rel=REL)


@pytest.mark.parametrize(("hosted", "usd"), T3_HOSTED)
def test_t3_break_even_never(hosted: str, usd: float) -> None:
    projection = project_tco(
        volume=seed_volume(15 * M), hosted=HOSTED[hosted], plan=FOUR_H100_OWN_DC
    )
    assert (projection.break_even.month, projection.break_even.months_fractional) == (
        None,
        math.inf,
    )


def test_t3_negotiation_target() -> None:
    projection = project_tco(
        volume=seed_volume(15 * M), hosted=HOSTED["opus"], plan=FOUR_H100_OWN_DC
    )
    assert projection.negotiation.target_usd_per_m == pytest.approx(547.06, rel=REL)


@pytest.mark.parametrize("hosted", [name for name, _ in T3_HOSTED])
def test_t3_no_lever_because_every_list_price_is_lower(hosted: str) -> None:
    projection = project_tco(
        volume=seed_volume(15 * M), hosted=HOSTED[hosted], plan=FOUR_H100_OWN_DC
    )
    assert projection.negotiation.discount_needed < 0


# T4 — the seed's "8–10 months", reproduced with its unit error ($833–1,200/M).


@pytest.mark.parametrize(
    ("hosted_usd_per_month", "staff", "months"),
    [
        (12_500, None, 10.17),
        (18_000, None, 6.94),
        (18_000, STAFF_50K, 9.14),
        (12_500, STAFF_70K, 20.13),
    ],
)
def test_t4_seed_break_even_needs_the_unit_error(
    hosted_usd_per_month: float, staff: dict[str, float] | None, months: float
) -> None:
    plan = ENTERPRISE.with_overrides(gpu_count=4, **(staff or STAFF_50K)).plan
    hosted = HostedPricing.blended("seed", hosted_usd_per_month / 15)  # $/M × 15M tokens
    projection = project_tco(volume=seed_volume(15 * M), hosted=hosted, plan=plan)
    result = projection.break_even if staff else projection.break_even_without_staff
    assert result.months_fractional == pytest.approx(months, rel=REL)


# T5 — on-prem monthly components: A, E, F, S, C_onprem, opex.


@pytest.mark.parametrize(
    ("plan", "gpus", "expected"),
    [
        (FOUR_H100_OWN_DC, 4, (3_333.33, 705.88, 0, 4_166.67, 8_205.88, 4_872.55)),
        (FOUR_H100_COLO, 4, (3_333.33, 446.76, 999.29, 5_833.33, 10_612.72, 7_279.39)),
        (HGX_OWN_DC, 8, (8_805.56, 1_411.76, 0, 4_166.67, 14_383.98, 5_578.43)),
        (HGX, 8, (8_805.56, 893.52, 1_998.59, 5_833.33, 17_531.00, 8_725.44)),
    ],
    ids=["4xH100-own-dc", "4xH100-colo", "hgx-own-dc", "hgx-colo"],
)
def test_t5_onprem_components(plan: OnPremPlan, gpus: int, expected: tuple[float, ...]) -> None:
    cost = onprem_monthly_cost(plan, gpu_count=gpus)
    components = (
        cost.amortized_capex_usd_per_month,
        cost.energy_usd_per_month,
        cost.facility_usd_per_month,
        cost.staff_usd_per_month,
        cost.total_usd_per_month,
        cost.opex_usd_per_month,
    )
    assert components == pytest.approx(expected, rel=REL)


def test_t5_capital_recovery_factor_variant() -> None:
    plan = HGX_COLO.with_overrides(interest_rate_per_year=0.08).plan
    cost = onprem_monthly_cost(plan, gpu_count=8)
    assert cost.amortized_capex_usd_per_month == pytest.approx(10_250.55, rel=REL)


# T6 — enterprise reading (b): 3B tokens/month (15M per seat × 200), one HGX node in colo.


def t6_projection(hosted: str, plan: OnPremPlan = HGX_SMALL_24B) -> TcoProjection:
    return project_tco(volume=seed_volume(3 * B), hosted=HOSTED[hosted], plan=plan)


@pytest.mark.parametrize(
    ("hosted", "usd"),
    [
        ("opus", 30_000),
        ("sonnet", 18_000),
        ("haiku", 6_000),
        ("az-large-2407", 9_000),
        ("az-large-3", 2_250),
        ("az-small-3.1", 450),
    ],
)
def test_t6_hosted_monthly_cost(hosted: str, usd: float) -> None:
    assert t6_projection(hosted).hosted.total_usd_per_month == pytest.approx(usd, rel=REL)


def test_t6_one_node_is_ample() -> None:
    cost = t6_projection("sonnet").onprem
    assert (cost.node_count, cost.total_usd_per_month) == pytest.approx((1, 17_531.00), rel=REL)


@pytest.mark.parametrize(
    ("hosted", "months", "month"),
    [
        ("opus", 14.90, 15),
        ("sonnet", 34.18, 35),
        ("haiku", math.inf, None),
        ("az-large-2407", 1_154.58, None),
        ("az-large-3", math.inf, None),
        ("az-small-3.1", math.inf, None),
    ],
)
def test_t6_break_even(hosted: str, months: float, month: int | None) -> None:
    result = t6_projection(hosted).break_even
    assert result.month == month
    assert result.months_fractional == pytest.approx(months, rel=REL)


@pytest.mark.parametrize(
    ("plan", "target_usd_per_m"),
    [(HGX_SMALL_24B, 17_531.00 / 3_000), (HGX_SMALL_24B_OWN_DC, 14_383.98 / 3_000)],
    ids=["colo", "own-dc"],
)
def test_t6_negotiation_target(plan: OnPremPlan, target_usd_per_m: float) -> None:
    target = t6_projection("sonnet", plan).negotiation.target_usd_per_m
    assert target == pytest.approx(target_usd_per_m, rel=REL)


@pytest.mark.parametrize(
    ("plan", "hosted", "discount"),
    [
        (HGX_SMALL_24B, "sonnet", 1 - 17_531.00 / 3_000 / 6),  # 2.6 %
        (HGX_SMALL_24B, "opus", 1 - 17_531.00 / 3_000 / 10),  # 41.6 %
        (HGX_SMALL_24B, "haiku", 1 - 17_531.00 / 3_000 / 2),  # −192 %: no lever
        (HGX_SMALL_24B_OWN_DC, "sonnet", 1 - 14_383.98 / 3_000 / 6),  # 20.1 %
        (HGX_SMALL_24B_OWN_DC, "opus", 1 - 14_383.98 / 3_000 / 10),  # 52.1 %
    ],
)
def test_t6_discount_needed(plan: OnPremPlan, hosted: str, discount: float) -> None:
    result = t6_projection(hosted, plan).negotiation.discount_needed
    assert result == pytest.approx(discount, rel=REL)


# T7 — crossover volumes, simple form: C_onprem / p_blend.

T7_CONFIGS = [
    pytest.param(FOUR_H100_OWN_DC, 8_205.88, id="4xH100-own-dc"),
    pytest.param(FOUR_H100_COLO, 10_612.72, id="4xH100-colo"),
    pytest.param(HGX_OWN_DC, 14_383.98, id="8xH100-own-dc"),
    pytest.param(HGX, 17_531.00, id="8xH100-colo"),
]


@pytest.mark.parametrize(("plan", "onprem_usd"), T7_CONFIGS)
@pytest.mark.parametrize("hosted", sorted(BLENDED))
def test_t7_simple_crossover(plan: OnPremPlan, onprem_usd: float, hosted: str) -> None:
    expected = onprem_usd / BLENDED[hosted] * M  # e.g. 8,205.88 / $10/M = 0.821B
    assert simple_crossover(plan, BLENDED[hosted]) == pytest.approx(expected, rel=REL)


def test_t7_one_node_harmonic_capacity() -> None:
    capacity = capacity_tokens_per_month(HGX, gpu_count=8, input_share=0.75)
    assert capacity == pytest.approx(28.63 * B, rel=REL)


@pytest.mark.parametrize(
    ("plan", "basis", "capacity"),
    [
        (HGX_OWN_DC, CapacityBasis.HARMONIC, 28.63 * B),  # 67 %
        (HGX, CapacityBasis.HARMONIC, 28.63 * B),  # 82 %
        (HGX_OWN_DC, CapacityBasis.OUTPUT_ONLY, 4 * 10.512 * B),  # 46 %
        (HGX, CapacityBasis.OUTPUT_ONLY, 4 * 10.512 * B),  # 56 %
        (HGX_SMALL_24B_OWN_DC, CapacityBasis.HARMONIC, 145.35 * B),  # 66 %
        (HGX_SMALL_24B, CapacityBasis.HARMONIC, 145.35 * B),  # 80 %
    ],
)
def test_t7_like_for_like_utilization_at_crossover(
    plan: OnPremPlan, basis: CapacityBasis, capacity: float
) -> None:
    like_for_like = 0.75 if plan.decode_tokens_per_s_per_gpu == 500 else 0.15  # Large 3 / Small 3.1
    crossover = simple_crossover(plan, like_for_like)
    utilization = utilization_for_volume(
        replace(plan, capacity_basis=basis),
        gpu_count=8,
        input_tokens_per_month=0.75 * crossover,
        output_tokens_per_month=0.25 * crossover,
    )
    assert utilization == pytest.approx(crossover / capacity, rel=REL)


# T8 — sizing from the observed peak (3 × business-hours average, 75/25).

T8_ROWS = [
    pytest.param(
        15 * M, ENTERPRISE.plan, (1, 2, 8, 1, BindingConstraint.MIN_REPLICAS), id="15M-large2"
    ),
    pytest.param(3 * B, ENTERPRISE.plan, (4, 4, 16, 2, BindingConstraint.DECODE), id="3B-large2"),
    pytest.param(
        3 * B,
        ENTERPRISE.with_overrides(**SMALL_24B_FP8).plan,
        (3, 3, 3, 1, BindingConstraint.DECODE),
        id="3B-small24b",
    ),
]


def t8_sizing(tokens_per_month: float, plan: OnPremPlan) -> Sizing:
    volume = seed_volume(tokens_per_month)
    return size_for_peak(
        plan,
        peak_input_tokens_per_s=volume.peak_input_tokens_per_s,
        peak_output_tokens_per_s=volume.peak_output_tokens_per_s,
    )


@pytest.mark.parametrize(
    ("tokens_per_month", "peaks"), [(15 * M, (53.27, 17.76)), (3 * B, (10_653.4, 3_551.1))]
)
def test_t8_peak_is_three_times_the_business_hours_average(
    tokens_per_month: float, peaks: tuple[float, float]
) -> None:
    volume = seed_volume(tokens_per_month)
    rates = (volume.peak_input_tokens_per_s, volume.peak_output_tokens_per_s)
    assert rates == pytest.approx(peaks, rel=REL)


@pytest.mark.parametrize(
    ("tokens_per_month", "plan", "gpu_seconds_per_s"),
    [
        (15 * M, ENTERPRISE.plan, 0.0522),
        (3 * B, ENTERPRISE.plan, 10.43),
        (3 * B, ENTERPRISE.with_overrides(**SMALL_24B_FP8).plan, 2.055),
    ],
)
def test_t8_gpu_seconds_at_peak(
    tokens_per_month: float, plan: OnPremPlan, gpu_seconds_per_s: float
) -> None:
    sizing = t8_sizing(tokens_per_month, plan)
    assert sizing.gpu_seconds_per_s == pytest.approx(gpu_seconds_per_s, rel=2e-3)


@pytest.mark.parametrize(("tokens_per_month", "plan", "expected"), T8_ROWS)
def test_t8_sizing(tokens_per_month: float, plan: OnPremPlan, expected: tuple[object, ...]) -> None:
    sizing = t8_sizing(tokens_per_month, plan)
    assert (
        sizing.replicas_for_throughput,
        sizing.replicas,
        sizing.gpus_needed,
        sizing.nodes_needed,
        sizing.binding,
    ) == expected


@pytest.mark.parametrize(("plan", "width"), [(ENTERPRISE.plan, 4), (HGX_SMALL_24B, 1)])
def test_t8_memory_sets_the_replica_width(plan: OnPremPlan, width: int) -> None:
    assert t8_sizing(15 * M, plan).gpus_per_replica == width


@pytest.mark.parametrize(
    ("tokens_per_month", "plan", "utilization"),
    [
        (3 * B, HGX_SMALL_24B, (2.25e9 / 16_800 + 0.75e9 / 2_500) / (8 * 2_628_000)),  # 2.06 %
        (15 * M, HGX, (11.25e6 / 3_200 + 3.75e6 / 500) / (8 * 2_628_000)),  # 0.052 %
    ],
)
def test_t8_measured_utilization(
    tokens_per_month: float, plan: OnPremPlan, utilization: float
) -> None:
    result = utilization_for_volume(
        plan,
        gpu_count=8,
        input_tokens_per_month=0.75 * tokens_per_month,
        output_tokens_per_month=0.25 * tokens_per_month,
    )
    assert result == pytest.approx(utilization, rel=REL)


# T9 — utilization against effective cost on one 8×H100 node; all cost attributed to output.

T9_MODELS = [
    pytest.param(6_000.0, 126.14 * B, id="7b-bf16"),
    pytest.param(3_762.0, 79.09 * B, id="mixtral-fp8"),
    pytest.param(2_500.0, 52.56 * B, id="small24b-fp8"),
    pytest.param(500.0, 10.51 * B, id="large2-fp8"),
]


@pytest.mark.parametrize(("decode", "capacity"), T9_MODELS)
def test_t9_output_capacity_at_full_utilization(decode: float, capacity: float) -> None:
    plan = replace(HGX, decode_tokens_per_s_per_gpu=decode)
    result = capacity_tokens_per_month(plan, gpu_count=8, input_share=0.0)
    assert result == pytest.approx(capacity, rel=REL)


@pytest.mark.parametrize(("decode", "capacity"), T9_MODELS)
@pytest.mark.parametrize("utilization", [1.0, 0.3, 0.1])
@pytest.mark.parametrize(
    ("plan", "onprem_usd"), [(HGX_OWN_DC, 14_383.98), (HGX, 17_531.00)], ids=["own-dc", "colo"]
)
def test_t9_onprem_usd_per_m_at_target_utilization(
    decode: float, capacity: float, utilization: float, plan: OnPremPlan, onprem_usd: float
) -> None:
    plan = replace(plan, decode_tokens_per_s_per_gpu=decode, target_utilization=utilization)
    volume = ObservedVolume(
        {"all": MonthlyTokens(output_tokens=1 * B)},
        peak_input_tokens_per_s=0.0,
        peak_output_tokens_per_s=1.0,
    )
    projection = project_tco(volume=volume, hosted=HOSTED["sonnet"], plan=plan)
    expected = onprem_usd / (capacity * utilization) * M  # e.g. 14,383.98 / 126.14B = $0.114/M
    assert projection.onprem_usd_per_m_target == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize(("decode", "usd_per_m"), [(6_000, 0.0112), (500, 0.1343)])
def test_t9_energy_per_million_output_tokens(decode: float, usd_per_m: float) -> None:
    energy_usd_per_gpu_hour = (
        onprem_monthly_cost(HGX_OWN_DC, gpu_count=1).energy_usd_per_month / 730
    )
    assert energy_usd_per_gpu_hour / (decode * 3_600) * M == pytest.approx(usd_per_m, rel=REL)


def test_t9_energy_per_gpu_hour() -> None:
    energy_usd_per_month = onprem_monthly_cost(HGX_OWN_DC, gpu_count=1).energy_usd_per_month
    assert energy_usd_per_month / 730 == pytest.approx(0.2417, rel=REL)


# T10 — crossover as a step function, and simple against exact.


def t10_small_3_1() -> Crossover:
    return find_crossover(HGX_SMALL_24B, hosted_usd_per_m=0.15, input_share=0.75)


def test_t10a_one_node_is_infeasible() -> None:
    first = t10_small_3_1().first
    volumes = (first.simple_tokens_per_month, first.capacity_at_target_tokens_per_month)
    assert volumes == pytest.approx((116.87 * B, 101.75 * B), rel=REL)
    assert not first.feasible


def test_t10a_two_nodes_carry_the_crossover() -> None:
    crossover = t10_small_3_1()
    assert crossover.status is CrossoverStatus.FEASIBLE
    assert crossover.tokens_per_month == pytest.approx(194.86 * B, rel=REL)


def test_t10a_two_node_components() -> None:
    chosen = t10_small_3_1().chosen
    assert chosen is not None
    cost = chosen.onprem
    components = (
        cost.node_count,
        cost.amortized_capex_usd_per_month,
        cost.energy_usd_per_month,
        cost.facility_usd_per_month,
        cost.staff_usd_per_month,
        cost.total_usd_per_month,
        chosen.capacity_at_target_tokens_per_month,
    )
    expected = (2, 17_611.11, 1_787.04, 3_997.18, 5_833.33, 29_228.66, 203.49 * B)
    assert components == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize(("form", "tokens"), [("exact", 2.820 * B), ("simple", 2.922 * B)])
def test_t10b_exact_and_simple_crossover(form: str, tokens: float) -> None:
    first = find_crossover(HGX_SMALL_24B, hosted_usd_per_m=6.00, input_share=0.75).first
    assert getattr(first, f"{form}_tokens_per_month") == pytest.approx(tokens, rel=REL)


def test_t10c_two_node_large_2_costs() -> None:
    projection = project_tco(volume=seed_volume(3 * B), hosted=HOSTED["az-large-3"], plan=HGX)
    cost = projection.onprem
    assert (cost.node_count, cost.total_usd_per_month) == pytest.approx((2, 29_228.66), rel=REL)


def test_t10c_negotiation_target() -> None:
    projection = project_tco(volume=seed_volume(3 * B), hosted=HOSTED["az-large-3"], plan=HGX)
    assert projection.negotiation.target_usd_per_m == pytest.approx(9.74, rel=REL)


def test_t10c_hosted_large_3_is_cheaper_so_never_breaks_even() -> None:
    projection = project_tco(volume=seed_volume(3 * B), hosted=HOSTED["az-large-3"], plan=HGX)
    assert projection.break_even.month is None


# The blended prices of tco.md §6.3, and behaviour outside the worked scenarios.


@pytest.mark.parametrize(("hosted", "usd_per_m"), sorted(BLENDED.items()))
def test_blended_price_at_75_25(hosted: str, usd_per_m: float) -> None:
    cost = hosted_monthly_cost(seed_volume(3 * B), HOSTED[hosted])
    assert cost.blended_usd_per_m == pytest.approx(usd_per_m, rel=1e-9)


def test_no_traffic_is_refused_not_reported_as_zeros() -> None:
    with pytest.raises(NoTrafficError, match="no traffic"):
        ObservedVolume(
            {"coding": MonthlyTokens()}, peak_input_tokens_per_s=0, peak_output_tokens_per_s=0
        )


def test_use_cases_rank_by_savings() -> None:
    # Sonnet: rag $4,200 hosted, coding $9,000. GPU time: rag 93.6k s, coding 229.8k s of 323.3k,
    # so rag carries $5,073 of the $17,531 node and coding $12,458: rag loses less. Prefill is
    # cheap on-prem (tco.md §1.3, lesson 4), so input-heavy use cases move first.
    volume = ObservedVolume(
        {
            "rag": MonthlyTokens(input_tokens=900 * M, output_tokens=100 * M),
            "coding": MonthlyTokens(input_tokens=500 * M, output_tokens=500 * M),
        },
        peak_input_tokens_per_s=2_000,
        peak_output_tokens_per_s=800,
    )
    projection = project_tco(volume=volume, hosted=HOSTED["sonnet"], plan=HGX_SMALL_24B)
    assert [u.use_case for u in projection.use_cases] == ["rag", "coding"]


def test_use_case_savings_add_up_to_the_total() -> None:
    volume = ObservedVolume(
        {
            "a": MonthlyTokens(input_tokens=2 * B, output_tokens=B),
            "b": MonthlyTokens(output_tokens=B),
        },
        peak_input_tokens_per_s=2_000,
        peak_output_tokens_per_s=800,
    )
    projection = project_tco(volume=volume, hosted=HOSTED["opus"], plan=HGX_SMALL_24B)
    savings = sum(u.savings_usd_per_month for u in projection.use_cases)
    total = projection.hosted.total_usd_per_month - projection.onprem.total_usd_per_month
    assert savings == pytest.approx(total, rel=1e-9)


def test_batch_discount_applies_to_the_batch_share() -> None:
    pricing = replace(HOSTED["sonnet"], batch_discount=0.5, batch_share=0.4)
    cost = hosted_monthly_cost(seed_volume(15 * M), pricing)
    assert cost.total_usd_per_month == pytest.approx(90 * (1 - 0.5 * 0.4), rel=1e-9)


def test_cache_classes_default_to_the_input_price() -> None:
    volume = ObservedVolume(
        {"all": MonthlyTokens(cache_read_tokens=M, cache_write_1h_tokens=M)},
        peak_input_tokens_per_s=1,
        peak_output_tokens_per_s=0,
    )
    assert hosted_monthly_cost(volume, HOSTED["az-large-3"]).total_usd_per_month == 1.00


def test_fixed_gpu_count_below_the_need_is_reported() -> None:
    projection = project_tco(
        volume=seed_volume(3 * B), hosted=HOSTED["opus"], plan=FOUR_H100_OWN_DC
    )
    assert projection.meets_peak is False


def test_measured_utilization_prices_the_pilot() -> None:
    volume = replace(seed_volume(15 * M), measured_onprem_utilization=0.1)
    projection = project_tco(volume=volume, hosted=HOSTED["opus"], plan=HGX)
    measured = projection.onprem_usd_per_m_measured
    assert measured is not None
    ratio = measured / projection.onprem_usd_per_m_target
    assert ratio == pytest.approx(7.0, rel=1e-9)  # 0.7 target / 0.1 measured


# Presets.


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_preset_field_has_provenance(name: str) -> None:
    scenario = SCENARIOS[name]
    assert set(scenario.provenance) == {f.name for f in fields(OnPremPlan)}


def test_override_marks_provenance() -> None:
    scenario = ENTERPRISE.with_overrides(usd_per_kwh=0.2)
    assert (scenario.plan.usd_per_kwh, scenario.provenance["usd_per_kwh"].kind) == (0.2, "override")


def test_unknown_override_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"unknown OnPremPlan field.*usd_per_kw_hour"):
        ENTERPRISE.with_overrides(usd_per_kw_hour=0.2)


def test_unknown_scenario_lists_the_presets() -> None:
    with pytest.raises(ValueError, match="enterprise-h100"):
        get_scenario("enterprise")


def test_seed_2x_headroom_cannot_hold_on_a_rig() -> None:
    with pytest.raises(ValueError, match="model_memory_gb × vram_headroom"):
        get_scenario("small-team-rtx4090").with_overrides(vram_headroom=2.0)
