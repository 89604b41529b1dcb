"""The projection as a short, readable report for the terminal: the verdict first."""

from __future__ import annotations

from cost.migration import TargetProjection
from cost.sizing import MonthlyBreakEven, SizedCrossover
from metering.live_tco import LiveProjection
from proxy.cli.common import wrap


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
    lines = [
        f"TCO projection ({result.scenario}), {result.as_of:%Y-%m-%d %H:%M} UTC, "
        f"prices: {result.inputs.price_source}",
        result.verdict,
    ]
    lines += [f"warning: {w}" for w in _warnings(result)]
    w, p = result.window, result.projection
    if w is not None:
        lines.append(
            f"window: {w.requests:,} requests over {_duration(w.seconds)}, extrapolated "
            f"x{w.extrapolation_factor:,.1f} to a month; peaks (p95 of 5 min) "
            f"{w.peaks.input_tokens_per_s:,.1f} in / {w.peaks.output_tokens_per_s:,.1f} out "
            "tokens/s"
        )
    if p is None:
        return _fit(lines, keep=result.verdict)
    lines.append(
        f"hosted today: {_usd(p.hosted_usd_per_month)}/month metered "
        f"({_usd(p.hosted_list_usd_per_month)} at list); "
        f"staying hosted: {_usd(p.staying_usd_per_month)}/month"
    )
    for m in p.hosted_models:
        lines.append(
            f"  {m.model:<24} {_tokens(m.tokens_per_month)} tokens/month, "
            f"{_usd(m.bill_usd_per_m)}/M billed, {_usd(m.list_usd_per_m)}/M list"
        )
    for t in p.targets:
        lines += _target_lines(t)
    return _fit(lines, keep=result.verdict)


def _fit(lines: list[str], *, keep: str) -> str:
    """Each line wrapped at 80 columns, continuation lines indented under it; ``keep`` (the
    verdict, the same sentence everywhere it is shown, e.g. for a search or a copy) whole."""
    return "\n".join(
        line if line == keep else wrap(line.lstrip(), indent=line[: len(line) - len(line.lstrip())])
        for line in lines
    )


def _warnings(result: LiveProjection) -> tuple[str, ...]:
    return result.projection.warnings if result.projection else result.inputs.warnings


def _target_lines(t: TargetProjection) -> list[str]:
    sized, neg = t.sized, t.negotiation
    lines = [
        f"target {t.target.name} ({t.target.plan.gpu_name}): {_tokens(t.tokens_per_month)} "
        f"tokens/month, hosted {_usd(t.hosted_usd_per_month)}/month against on-prem "
        f"{_usd(t.onprem_usd_per_month)}/month",
        f"  sizing: {sized.sizing.gpus_needed} GPUs needed, {sized.onprem.gpu_count} deployed "
        f"(binding: {sized.sizing.binding.value}) for peaks {sized.peak_input_tokens_per_s:,.1f} "
        f"in / {sized.peak_output_tokens_per_s:,.1f} out tokens/s",
        f"  break-even: {_months(t.break_even)} "
        f"(without staff: {_months(t.break_even_without_staff)})",
        f"  crossover: {_crossover(t.crossover)}",
        "  negotiation: "
        + (
            f"target {_usd(neg.target_usd_per_m)} per M tokens "
            f"({neg.discount_needed:.1%} off today's {_usd(neg.bill_usd_per_m)})"
            if neg.lever
            else "hosted is already cheaper: no lever"
        ),
    ]
    if t.use_cases:
        lines.append("  use cases to move on-prem first (savings per month):")
        lines += [
            f"    {u.use_case:<24} {_usd(u.savings_usd_per_month):>14}  "
            f"({_tokens(u.tokens_per_month)} tokens/month)"
            for u in t.use_cases[:5]
        ]
    else:
        lines.append("  no use case saves money moved on its own")
    return lines


def _months(be: MonthlyBreakEven) -> str:
    if be.month is None:
        return f"never within {be.horizon_months} months"
    return f"month {be.month} ({be.months_fractional:.2f})"


def _crossover(c: SizedCrossover) -> str:
    if c.tokens_per_month is None:
        return f"never ({c.status.value.removeprefix('never_')})"
    band = ""
    if c.hosted_cheaper_again_from is not None:
        band = f", hosted cheaper again from {_tokens(c.hosted_cheaper_again_from)}"
    return f"{_tokens(c.tokens_per_month)} tokens/month on {c.gpus} GPUs{band}"


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"
