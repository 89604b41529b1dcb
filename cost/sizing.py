"""One sizing behind every on-prem number: what carrying a monthly volume costs, sized for its peak.

tco.md §2.4 sizes the deployment for the peak; §2.6 says the crossover must use the same sizing,
with the peak scaled from the observed traffic shape: peak(V) = κ · V / 2,628,000 s per class,
κ the peak-to-average ratio of the window. ``onprem_cost_at`` is that function of V; the
crossover (§2.6), the break-even month by month (§2.5, with growth), the negotiation target
(§2.7) and the use-case ranking all call it, so they cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from cost.capacity import (
    SECONDS_PER_MONTH,
    CrossoverStatus,
    OnPremMonthlyCost,
    OnPremPlan,
    Sizing,
    capacity_tokens_per_month,
    check_number,
    deployed_gpu_count,
    gpus_per_replica,
    node_count,
    onprem_monthly_cost,
    size_for_peak,
)


@dataclass(frozen=True, slots=True)
class TrafficShape:
    """The observed peak-to-average ratios (κ) of input and output tokens/s, each ≥ 1, and the
    mix: ``input_share`` is all input (cached or not) over all tokens."""

    peak_to_average_input: float
    peak_to_average_output: float
    input_share: float

    def __post_init__(self) -> None:
        check_number("TrafficShape.peak_to_average_input", self.peak_to_average_input, minimum=1)
        check_number("TrafficShape.peak_to_average_output", self.peak_to_average_output, minimum=1)
        check_number("TrafficShape.input_share", self.input_share, maximum=1)

    def peak_tokens_per_s(self, tokens_per_month: float) -> tuple[float, float]:
        """Peak input and output tokens/s of ``tokens_per_month`` with this shape."""
        per_s = tokens_per_month / SECONDS_PER_MONTH
        return (
            self.peak_to_average_input * per_s * self.input_share,
            self.peak_to_average_output * per_s * (1 - self.input_share),
        )


@dataclass(frozen=True, slots=True)
class SizedCost:
    """What carrying ``tokens_per_month`` costs on-prem: the peak, the sizing, the bill.

    ``utilization`` is the busy share of the deployed GPUs at the average rate; energy is drawn
    at it (tco.md §2.3, P_max · (0.3 + 0.7·u)).
    """

    tokens_per_month: float
    peak_input_tokens_per_s: float
    peak_output_tokens_per_s: float
    sizing: Sizing
    onprem: OnPremMonthlyCost
    utilization: float

    @property
    def usd_per_m(self) -> float:
        """On-prem $ per million tokens of this volume; infinite for no volume."""
        if self.tokens_per_month == 0:
            return math.inf
        return self.onprem.total_usd_per_month / self.tokens_per_month * 1e6


def onprem_cost_at(plan: OnPremPlan, shape: TrafficShape, tokens_per_month: float) -> SizedCost:
    """C_onprem(V): GPUs sized for peak(V) (§2.4), energy at u(V) = V / Cap_1 (§2.6)."""
    check_number("tokens_per_month", tokens_per_month)
    peak_in, peak_out = shape.peak_tokens_per_s(tokens_per_month)
    sizing = size_for_peak(plan, peak_input_tokens_per_s=peak_in, peak_output_tokens_per_s=peak_out)
    gpus = deployed_gpu_count(plan, sizing.gpus_needed)
    cap_1 = capacity_tokens_per_month(plan, gpu_count=gpus, input_share=shape.input_share)
    utilization = min(1.0, tokens_per_month / cap_1) if math.isfinite(cap_1) else 0.0
    return SizedCost(
        tokens_per_month=tokens_per_month,
        peak_input_tokens_per_s=peak_in,
        peak_output_tokens_per_s=peak_out,
        sizing=sizing,
        onprem=onprem_monthly_cost(plan, gpu_count=gpus, utilization=utilization),
        utilization=utilization,
    )


@dataclass(frozen=True, slots=True)
class SizedCrossover:
    """The smallest monthly volume at which on-prem, sized for its peak, costs no more than
    hosted at ``usd_per_m`` (tco.md §2.6).

    ``tokens_per_month`` is V* (None when never); ``gpus`` the deployment at V*.
    ``hosted_cheaper_again_from`` is where a later sizing step pushes on-prem above hosted
    again (a crossover band, not one number), None when no step up to ``max_nodes`` does.
    """

    status: CrossoverStatus
    usd_per_m: float
    tokens_per_month: float | None
    gpus: int | None
    hosted_cheaper_again_from: float | None


@dataclass(frozen=True, slots=True)
class _Step:
    """One GPU count on the search: volumes (lo, hi] it carries, cost C = fixed + var · V."""

    lo: float
    hi: float
    gpus: int
    fixed_usd: float
    var_usd_per_token: float

    def cost(self, tokens_per_month: float) -> float:
        return self.fixed_usd + self.var_usd_per_token * tokens_per_month


def _steps(plan: OnPremPlan, shape: TrafficShape) -> list[_Step]:
    """Every deployment the sizing can choose for growing V, up to ``max_nodes``."""
    per_token = size_for_peak(
        plan,
        peak_input_tokens_per_s=shape.peak_tokens_per_s(1.0)[0],
        peak_output_tokens_per_s=shape.peak_tokens_per_s(1.0)[1],
    ).gpu_seconds_per_s  # G for V = 1 token/month; G is linear in V
    width = gpus_per_replica(plan)
    per_replica = plan.target_utilization * width / per_token if per_token > 0 else math.inf
    steps: list[_Step] = []
    replicas, lo = plan.min_replicas, 0.0
    while True:
        hi = replicas * per_replica
        gpus = deployed_gpu_count(plan, replicas * width)
        if plan.gpu_count is not None:  # a fixed deployment carries what fits it, no more
            hi = (plan.gpu_count // width) * per_replica
        if node_count(plan, gpus) > plan.max_nodes or hi <= lo:
            return steps
        idle = onprem_monthly_cost(plan, gpu_count=gpus, utilization=0.0).total_usd_per_month
        full = onprem_monthly_cost(plan, gpu_count=gpus, utilization=1.0).total_usd_per_month
        cap_1 = capacity_tokens_per_month(plan, gpu_count=gpus, input_share=shape.input_share)
        var = (full - idle) / cap_1 if math.isfinite(cap_1) else 0.0
        steps.append(_Step(lo, hi, gpus, idle, var))
        if plan.gpu_count is not None or math.isinf(hi):
            return steps
        replicas, lo = replicas + 1, hi


def sized_crossover(plan: OnPremPlan, shape: TrafficShape, usd_per_m: float) -> SizedCrossover:
    """V* = min{V : C_onprem(V) ≤ V · p}: within one step C_onprem is affine in V, so each
    step's crossing is closed-form and the first feasible one wins."""
    check_number("usd_per_m", usd_per_m)
    price = usd_per_m / 1e6
    steps = _steps(plan, shape)
    never = CrossoverStatus.NEVER_CAPACITY
    if steps and price <= steps[0].var_usd_per_token:
        never = CrossoverStatus.NEVER_PRICE
    for i, step in enumerate(steps):
        if price <= step.var_usd_per_token:
            continue
        volume = max(step.lo, step.fixed_usd / (price - step.var_usd_per_token))
        if volume <= step.hi:
            again = next(
                (s.lo for s in steps[i + 1 :] if s.cost(s.lo) > price * s.lo * (1 + 1e-12)),
                None,
            )
            return SizedCrossover(CrossoverStatus.FEASIBLE, usd_per_m, volume, step.gpus, again)
    return SizedCrossover(never, usd_per_m, None, None, None)


@dataclass(frozen=True, slots=True)
class MonthlyBreakEven:
    """The first month whose cumulative on-prem cash is at or below cumulative hosted spend.

    Solved month by month (tco.md §2.5): month m carries V₀ · (1 + growth)^(m−1), sized for its
    peak; capex is paid when GPUs are added, opex each month. ``month`` is None when it does
    not happen within ``horizon_months``; ``months_fractional`` interpolates within the month
    (= capex / (hosted − opex) at constant volume), infinite when never.
    """

    month: int | None
    months_fractional: float
    horizon_months: int
    growth_per_month: float


def break_even_by_month(
    plan: OnPremPlan,
    shape: TrafficShape,
    *,
    tokens_per_month: float,
    hosted_usd_per_token: float,
    growth_per_month: float = 0.0,
    without_staff: bool = False,
) -> MonthlyBreakEven:
    """Break-even of moving ``tokens_per_month`` (growing) from a hosted bill per token."""
    check_number("growth_per_month", growth_per_month, minimum=-0.99)
    if without_staff:
        plan = replace(plan, staff_fte_fraction=0.0)
    capex_paid = cash_gap = 0.0
    for month in range(1, plan.horizon_months + 1):
        volume = tokens_per_month * (1 + growth_per_month) ** (month - 1)
        sized = onprem_cost_at(plan, shape, volume)
        new_capex = max(0.0, sized.onprem.capex_usd - capex_paid)
        capex_paid += new_capex
        before = cash_gap - new_capex  # capex goes out at the start of the month
        cash_gap = before + volume * hosted_usd_per_token - sized.onprem.opex_usd_per_month
        if cash_gap >= -1e-9 * max(1.0, capex_paid):
            within = -before / (cash_gap - before) if cash_gap > before else 1.0
            return MonthlyBreakEven(
                month, month - 1 + min(1.0, max(0.0, within)), plan.horizon_months, growth_per_month
            )
    return MonthlyBreakEven(None, math.inf, plan.horizon_months, growth_per_month)
