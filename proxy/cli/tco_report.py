"""The projection as a short, readable report for the terminal."""

from __future__ import annotations

from cost.tco import BreakEven
from metering.live_tco import LiveProjection


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def _tokens(value: float | None) -> str:
    if value is None:
        return "never"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:,.2f}{unit}"
    return f"{value:,.0f}"


def render_tco(result: LiveProjection) -> str:
    when = result.as_of.isoformat()
    head = f"TCO projection ({result.scenario} vs. {result.hosted_model}), {when}"
    p, w = result.projection, result.window
    if p is None or w is None:
        return f"{head}\n{result.message}"
    sizing = p.sizing
    monthly_tokens = sum(u.tokens_per_month for u in p.use_cases)
    lines = [
        head,
        f"observed: {w.requests:,} requests over {_duration(w.seconds)}, "
        f"extrapolated x{w.extrapolation_factor:,.1f} to {_tokens(monthly_tokens)} tokens/month",
        f"hosted  monthly cost: {_usd(p.hosted.total_usd_per_month)}",
        f"on-prem monthly cost: {_usd(p.onprem.total_usd_per_month)} "
        f"({sizing.gpus_needed} GPUs needed, {p.onprem.gpu_count} deployed; "
        f"binding constraint: {sizing.binding.value})",
        f"break-even: {_months(p.break_even)} "
        f"(without staff: {_months(p.break_even_without_staff)})",
        f"crossover volume: {_tokens(p.crossover.tokens_per_month)} tokens/month",
        f"negotiation target: {_usd(p.negotiation.target_usd_per_m)} per M tokens (blended)",
        f"on-prem utilization: observed {_pct(p.utilization_observed)}, measured "
        f"{_pct(p.utilization_measured)}, target {_pct(p.utilization_target)}",
        "use cases to move on-prem first (savings per month):",
    ]
    for uc in p.use_cases[:5]:
        lines.append(
            f"  {uc.use_case:<24} {_usd(uc.savings_usd_per_month):>14}  "
            f"({_tokens(uc.tokens_per_month)} tokens/month)"
        )
    return "\n".join(lines)


def _months(be: BreakEven) -> str:
    if be.month is None:
        return "never within the horizon"
    return f"month {be.month} ({be.months_fractional:.2f})"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"
