"""Hosted API versus on-prem: monthly cost of each for the observed traffic, and where they meet.

tco.md §2.2 (hosted cost), §2.5 (break-even), §2.7 (negotiation target) and §2.8 (outputs); the
on-prem side (plan, sizing, monthly cost, crossover volume) is ``cost.capacity``.
``project_tco`` puts both together. Money is USD, prices are $ per million tokens ("$/M"),
volumes are org-wide tokens per month.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cost.capacity import (
    TOKENS_PER_M,
    Crossover,
    OnPremMonthlyCost,
    OnPremPlan,
    Sizing,
    capacity_tokens_per_month,
    ceil_whole,
    check_count,
    check_fields,
    check_number,
    deployed_gpu_count,
    find_crossover,
    onprem_monthly_cost,
    size_for_peak,
    utilization_for_volume,
)
from cost.prices import ModelPrice
from cost.usage import TokenUsage

TOKEN_CLASSES = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")


class NoTrafficError(ValueError):
    """The observed volume has no tokens, so there is nothing to project."""


@dataclass(frozen=True, slots=True)
class MonthlyTokens:
    """Tokens per month in the disjoint classes of tco.md §2.1.

    ``input_tokens`` is uncached input; the cache classes are reads and 5-minute and 1-hour
    writes; ``output_tokens`` includes reasoning.
    """

    input_tokens: float = 0.0
    cache_read_tokens: float = 0.0
    cache_write_5m_tokens: float = 0.0
    cache_write_1h_tokens: float = 0.0
    output_tokens: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self, tuple(f"{name}_tokens" for name in TOKEN_CLASSES))

    @classmethod
    def from_usage(cls, usage: TokenUsage, *, scale: float = 1.0) -> MonthlyTokens:
        """The disjoint classes of ``usage`` (all-input convention: summed rollups) × ``scale``.

        ``TokenUsage`` holds the one rule that splits input into uncached, cache-read and the two
        cache-write classes; every reader of rollup sums comes through here.
        """
        return cls(
            input_tokens=usage.uncached_input_tokens * scale,
            cache_read_tokens=usage.cache_read_tokens * scale,
            cache_write_5m_tokens=usage.cache_write_5m_tokens * scale,
            cache_write_1h_tokens=usage.cache_write_1h_tokens * scale,
            output_tokens=usage.output_tokens * scale,
        )

    def scaled(self, factor: float) -> MonthlyTokens:
        """Every class × ``factor`` (a window extrapolated to a month)."""
        return MonthlyTokens(*(count * factor for count in self.by_class().values()))

    @property
    def all_input_tokens(self) -> float:
        """Input of every class, cached or not: what an on-prem server prefills."""
        return self.total_tokens - self.output_tokens

    @property
    def total_tokens(self) -> float:
        return sum(self.by_class().values())

    def by_class(self) -> dict[str, float]:
        """Tokens per month keyed by ``TOKEN_CLASSES``."""
        return {name: getattr(self, f"{name}_tokens") for name in TOKEN_CLASSES}


@dataclass(frozen=True, slots=True)
class ObservedVolume:
    """Org-wide traffic per month by use case, its peak rates, and the measured on-prem load.

    Peaks are p95/p99 of 1–5-minute windows, tokens/s. ``measured_onprem_utilization`` is the
    busy share of the on-prem GPUs' time (tco.md §2.4 u_m), when an on-prem leg exists.
    No tokens at all raises ``NoTrafficError``: a projection of nothing has no blended price,
    per-token cost or negotiation target, and zeros would read as real answers.
    """

    tokens_by_use_case: Mapping[str, MonthlyTokens]
    peak_input_tokens_per_s: float
    peak_output_tokens_per_s: float
    measured_onprem_utilization: float | None = None

    def __post_init__(self) -> None:
        frozen = MappingProxyType(dict(self.tokens_by_use_case))
        object.__setattr__(self, "tokens_by_use_case", frozen)
        check_fields(self, ("peak_input_tokens_per_s", "peak_output_tokens_per_s"))
        if self.measured_onprem_utilization is not None:
            check_fields(self, ("measured_onprem_utilization",), maximum=1.0)
        if self.total.total_tokens == 0:
            raise NoTrafficError("ObservedVolume.tokens_by_use_case has no tokens: no traffic")

    @property
    def total(self) -> MonthlyTokens:
        """All use cases together."""
        sums = dict.fromkeys(TOKEN_CLASSES, 0.0)
        for tokens in self.tokens_by_use_case.values():
            for name, count in tokens.by_class().items():
                sums[name] += count
        return MonthlyTokens(**{f"{name}_tokens": count for name, count in sums.items()})


@dataclass(frozen=True, slots=True)
class HostedPricing:
    """One hosted model's prices, $/M per token class, and what discounts its bill.

    Cache prices left out cost the input price (providers without cache pricing, like Mistral);
    the 1-hour write defaults to the 5-minute write. ``batch_discount`` (0.5 for the Anthropic
    and Mistral batch APIs) applies to ``batch_share`` of the traffic, or to the use case's
    share in ``batch_share_by_use_case``. ``tokenizer_ratio`` (τ) converts observed tokens to
    this provider's tokens; 1 when the traffic was observed on it (tco.md §2.2).
    """

    name: str
    input_usd_per_m: float
    output_usd_per_m: float
    cache_read_usd_per_m: float | None = None
    cache_write_5m_usd_per_m: float | None = None
    cache_write_1h_usd_per_m: float | None = None
    batch_discount: float = 0.0
    batch_share: float = 0.0
    batch_share_by_use_case: Mapping[str, float] = field(default_factory=dict)
    tokenizer_ratio: float = 1.0

    def __post_init__(self) -> None:
        check_fields(self, ("tokenizer_ratio",), positive=True)
        check_fields(self, ("input_usd_per_m", "output_usd_per_m"))
        check_fields(self, ("batch_discount", "batch_share"), maximum=1.0)
        for name in ("cache_read", "cache_write_5m", "cache_write_1h"):
            if getattr(self, f"{name}_usd_per_m") is not None:
                check_fields(self, (f"{name}_usd_per_m",))
        shares = MappingProxyType(dict(self.batch_share_by_use_case))
        for use_case, share in shares.items():
            check_number(f"HostedPricing.batch_share_by_use_case[{use_case!r}]", share, maximum=1)
        object.__setattr__(self, "batch_share_by_use_case", shares)

    def usd_per_m_by_class(self) -> dict[str, float]:
        """Price of each of ``TOKEN_CLASSES``, $/M, defaults filled in."""
        write_5m = _or(self.cache_write_5m_usd_per_m, self.input_usd_per_m)
        return {
            "input": self.input_usd_per_m,
            "cache_read": _or(self.cache_read_usd_per_m, self.input_usd_per_m),
            "cache_write_5m": write_5m,
            "cache_write_1h": _or(self.cache_write_1h_usd_per_m, write_5m),
            "output": self.output_usd_per_m,
        }

    @classmethod
    def blended(cls, name: str, usd_per_m: float) -> HostedPricing:
        """One price for every class, e.g. the seed's "$833 per million" or a flat quote."""
        return cls(name=name, input_usd_per_m=usd_per_m, output_usd_per_m=usd_per_m)

    @classmethod
    def from_model_price(
        cls, price: ModelPrice, *, batch_discount: float = 0.0, batch_share: float = 0.0
    ) -> HostedPricing:
        """From a price-map entry (USD per token, exact decimals) to $/M floats."""
        return cls(
            name=price.key,
            input_usd_per_m=float(price.input * TOKENS_PER_M),
            output_usd_per_m=float(price.output * TOKENS_PER_M),
            cache_read_usd_per_m=float(price.cache_read * TOKENS_PER_M),
            cache_write_5m_usd_per_m=float(price.cache_write_5m * TOKENS_PER_M),
            cache_write_1h_usd_per_m=float(price.cache_write_1h * TOKENS_PER_M),
            batch_discount=batch_discount,
            batch_share=batch_share,
        )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


@dataclass(frozen=True, slots=True)
class HostedCost:
    """The monthly hosted bill for the observed volume, USD, by token class and by use case.

    C = Σ_u Σ_k T_k[u] · τ · price_k · (1 − d_batch · b[u]) (tco.md §2.2). ``blended_usd_per_m``
    is the bill per observed token, $/M: the effective p_blend of the observed mix.
    """

    pricing_name: str
    usd_per_month_by_class: Mapping[str, float]
    usd_per_month_by_use_case: Mapping[str, float]
    tokens_per_month: float

    @property
    def total_usd_per_month(self) -> float:
        return sum(self.usd_per_month_by_use_case.values())

    @property
    def blended_usd_per_m(self) -> float:
        return self.total_usd_per_month / self.tokens_per_month * TOKENS_PER_M


def hosted_monthly_cost(volume: ObservedVolume, pricing: HostedPricing) -> HostedCost:
    """What ``volume`` costs a month at ``pricing``."""
    prices = pricing.usd_per_m_by_class()
    by_class = dict.fromkeys(TOKEN_CLASSES, 0.0)
    by_use_case: dict[str, float] = {}
    for use_case, tokens in volume.tokens_by_use_case.items():
        batch_share = pricing.batch_share_by_use_case.get(use_case, pricing.batch_share)
        factor = pricing.tokenizer_ratio * (1 - pricing.batch_discount * batch_share)
        by_use_case[use_case] = 0.0
        for name, count in tokens.by_class().items():
            usd = count * prices[name] * factor / TOKENS_PER_M
            by_class[name] += usd
            by_use_case[use_case] += usd
    return HostedCost(
        pricing_name=pricing.name,
        usd_per_month_by_class=MappingProxyType(by_class),
        usd_per_month_by_use_case=MappingProxyType(by_use_case),
        tokens_per_month=volume.total.total_tokens,
    )


@dataclass(frozen=True, slots=True)
class BreakEven:
    """When cumulative on-prem cash (capex up front, then opex) falls to cumulative hosted spend.

    ``months_fractional`` = capex / (hosted − opex), infinite when hosted ≤ opex (tco.md §2.5).
    ``month`` is the first whole month where it holds, None when that is past ``horizon_months``.
    """

    months_fractional: float
    month: int | None
    horizon_months: int


def break_even(
    *,
    capex_usd: float,
    hosted_usd_per_month: float,
    opex_usd_per_month: float,
    horizon_months: int,
) -> BreakEven:
    """Break-even at constant monthly volume: m* = CapEx_0 / (C_hosted − opex), months."""
    check_number("capex_usd", capex_usd)
    check_number("hosted_usd_per_month", hosted_usd_per_month)
    check_number("opex_usd_per_month", opex_usd_per_month)
    check_count("horizon_months", horizon_months)
    margin = hosted_usd_per_month - opex_usd_per_month
    months = capex_usd / margin if margin > 0 else math.inf
    if math.isinf(months):
        return BreakEven(months_fractional=math.inf, month=None, horizon_months=horizon_months)
    whole = max(1, ceil_whole(months))
    return BreakEven(
        months_fractional=months,
        month=whole if whole <= horizon_months else None,
        horizon_months=horizon_months,
    )


@dataclass(frozen=True, slots=True)
class Negotiation:
    """The hosted price at which hosted and on-prem cost the same for the observed volume.

    p_target = C_onprem / V (tco.md §2.7). ``discount_needed`` = 1 − p_target / p_blend: above 0
    on-prem is cheaper at today's price and that discount is the lever; at or below 0 hosted is
    already cheaper. Per-class targets keep the vendor's ratios between classes.
    ``cash_target_usd_per_m`` = (capex + H · opex) / (H · V), cash over the horizon H.
    """

    target_usd_per_m: float
    discount_needed: float
    target_usd_per_m_by_class: Mapping[str, float]
    cash_target_usd_per_m: float


def negotiation_target(
    *, hosted: HostedCost, pricing: HostedPricing, onprem: OnPremMonthlyCost, horizon_months: int
) -> Negotiation:
    """Negotiation target for the volume and mix ``hosted`` was computed on (a non-zero bill)."""
    check_number("HostedCost.blended_usd_per_m", hosted.blended_usd_per_m, positive=True)
    volume_m = hosted.tokens_per_month / TOKENS_PER_M
    target = onprem.total_usd_per_month / volume_m
    ratio = target / hosted.blended_usd_per_m
    cash = onprem.capex_usd + horizon_months * onprem.opex_usd_per_month
    by_class = {name: usd * ratio for name, usd in pricing.usd_per_m_by_class().items()}
    return Negotiation(
        target_usd_per_m=target,
        discount_needed=1 - ratio,
        target_usd_per_m_by_class=MappingProxyType(by_class),
        cash_target_usd_per_m=cash / (horizon_months * volume_m),
    )


@dataclass(frozen=True, slots=True)
class UseCaseSaving:
    """What moving one use case on-prem saves a month, USD.

    The use case carries the share of on-prem cost equal to its share of GPU time
    (input / R_pre + output / R_dec), so the savings of all use cases add up to hosted − on-prem.
    """

    use_case: str
    tokens_per_month: float
    hosted_usd_per_month: float
    onprem_usd_per_month: float

    @property
    def savings_usd_per_month(self) -> float:
        return self.hosted_usd_per_month - self.onprem_usd_per_month


def rank_use_cases(
    *, volume: ObservedVolume, hosted: HostedCost, plan: OnPremPlan, onprem_usd_per_month: float
) -> tuple[UseCaseSaving, ...]:
    """Use cases by savings, largest first: the ones to move on-prem first."""
    gpu_time = {
        use_case: utilization_for_volume(
            plan,
            gpu_count=1,
            input_tokens_per_month=tokens.all_input_tokens,
            output_tokens_per_month=tokens.output_tokens,
        )
        for use_case, tokens in volume.tokens_by_use_case.items()
    }
    all_gpu_time = sum(gpu_time.values()) or 1.0  # 0: output-only basis, input-only traffic
    savings = [
        UseCaseSaving(
            use_case=use_case,
            tokens_per_month=tokens.total_tokens,
            hosted_usd_per_month=hosted.usd_per_month_by_use_case[use_case],
            onprem_usd_per_month=onprem_usd_per_month * gpu_time[use_case] / all_gpu_time,
        )
        for use_case, tokens in volume.tokens_by_use_case.items()
    ]
    return tuple(sorted(savings, key=lambda s: (-s.savings_usd_per_month, s.use_case)))


@dataclass(frozen=True, slots=True)
class TcoProjection:
    """One hosted option against one on-prem plan for the observed volume (tco.md §2.8).

    On-prem cost draws energy at full power (u = 1), as tco.md's worked tables do. The
    utilizations are busy shares of the deployed GPUs' time: ``utilization_observed`` if all
    the observed traffic ran on them, ``utilization_measured`` from the on-prem leg (None
    without one), ``utilization_target`` the plan's. ``onprem_usd_per_m_*`` is on-prem cost per
    million tokens of the observed mix at that utilization (÷ 1,000 for $ per 1k tokens).
    """

    hosted: HostedCost
    onprem: OnPremMonthlyCost
    sizing: Sizing
    utilization_observed: float
    utilization_measured: float | None
    utilization_target: float
    onprem_usd_per_m_measured: float | None
    onprem_usd_per_m_target: float
    break_even: BreakEven
    break_even_without_staff: BreakEven
    crossover: Crossover
    negotiation: Negotiation
    use_cases: tuple[UseCaseSaving, ...]

    @property
    def meets_peak(self) -> bool:
        """The deployed GPUs cover what the observed peak needs (False: fixed count too small)."""
        return self.onprem.gpu_count >= self.sizing.gpus_needed


def project_tco(
    *, volume: ObservedVolume, hosted: HostedPricing, plan: OnPremPlan
) -> TcoProjection:
    """Project the observed volume onto ``hosted`` and onto ``plan``, sized for the peak.

    Raises ``ValueError`` when the hosted bill for the volume is zero (no price to compare).
    """
    hosted_cost = hosted_monthly_cost(volume, hosted)
    if not hosted_cost.blended_usd_per_m > 0:
        raise ValueError(f"HostedPricing {hosted.name!r} prices the observed volume at $0")
    sizing = size_for_peak(
        plan,
        peak_input_tokens_per_s=volume.peak_input_tokens_per_s,
        peak_output_tokens_per_s=volume.peak_output_tokens_per_s,
    )
    onprem = onprem_monthly_cost(plan, gpu_count=deployed_gpu_count(plan, sizing.gpus_needed))
    total = volume.total
    input_share = _input_share(total)
    cap_1 = capacity_tokens_per_month(plan, gpu_count=onprem.gpu_count, input_share=input_share)
    measured = volume.measured_onprem_utilization
    return TcoProjection(
        hosted=hosted_cost,
        onprem=onprem,
        sizing=sizing,
        utilization_observed=utilization_for_volume(
            plan,
            gpu_count=onprem.gpu_count,
            input_tokens_per_month=total.all_input_tokens,
            output_tokens_per_month=total.output_tokens,
        ),
        utilization_measured=measured,
        utilization_target=plan.target_utilization,
        onprem_usd_per_m_measured=None
        if measured is None
        else _usd_per_m(onprem, cap_1 * measured),
        onprem_usd_per_m_target=_usd_per_m(onprem, cap_1 * plan.target_utilization),
        break_even=_break_even(onprem, hosted_cost, onprem.opex_usd_per_month, plan),
        break_even_without_staff=_break_even(
            onprem, hosted_cost, onprem.opex_without_staff_usd_per_month, plan
        ),
        crossover=find_crossover(
            plan, hosted_usd_per_m=hosted_cost.blended_usd_per_m, input_share=input_share
        ),
        negotiation=negotiation_target(
            hosted=hosted_cost, pricing=hosted, onprem=onprem, horizon_months=plan.horizon_months
        ),
        use_cases=rank_use_cases(
            volume=volume,
            hosted=hosted_cost,
            plan=plan,
            onprem_usd_per_month=onprem.total_usd_per_month,
        ),
    )


def _break_even(
    onprem: OnPremMonthlyCost, hosted: HostedCost, opex_usd_per_month: float, plan: OnPremPlan
) -> BreakEven:
    return break_even(
        capex_usd=onprem.capex_usd,
        hosted_usd_per_month=hosted.total_usd_per_month,
        opex_usd_per_month=opex_usd_per_month,
        horizon_months=plan.horizon_months,
    )


def _usd_per_m(onprem: OnPremMonthlyCost, tokens_per_month: float) -> float:
    """On-prem $/M when the deployment serves ``tokens_per_month``; infinite when idle."""
    if tokens_per_month == 0:
        return math.inf
    return onprem.total_usd_per_month / tokens_per_month * TOKENS_PER_M


def _input_share(tokens: MonthlyTokens) -> float:
    return tokens.all_input_tokens / tokens.total_tokens
