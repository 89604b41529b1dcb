"""The live TCO projection: the ledger's observed traffic, projected onto the migration plan.

The window is the trailing ``window_days`` (or since the first request, when that is shorter).
Hosted today is the window's metered bill per (use case, hosted model), extrapolated to a month,
and the same tokens at list price. The traffic shape is the p95 of 5-minute token rates over
the window against the window's mean (κ, tco.md §2.6), from the per-minute rollups. A window
shorter than ``min_window_s`` or with fewer than ``min_requests`` is "not enough traffic yet":
a month is never projected from a minute. The result is a frozen ``LiveProjection``; it
becomes JSON only at the edges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any

from sqlalchemy import Engine

from cost.capacity import (
    OnPremPlan,
    capacity_tokens_per_month,
    gpus_per_replica,
    onprem_monthly_cost,
    utilization_for_volume,
)
from cost.migration import HostedSlice, MigrationTarget, PlanProjection, project_plan
from cost.prices import ModelPrice
from cost.pricing import MICRO_USD_PER_USD, price_usage
from cost.tco import MonthlyTokens
from cost.usage import TokenUsage
from metering.tco_window import (
    CELL_KEYS,
    PEAK_BUCKET_S,
    PEAK_QUANTILE,
    SECONDS_PER_MONTH,
    Peaks,
    RollupRow,
    Window,
    read_window,
    rollup_row,
    traffic_peaks,
    window_from_rollups,
)

__all__ = [
    "CELL_KEYS",
    "SECONDS_PER_MONTH",
    "LiveProjection",
    "Peaks",
    "ProjectionStatus",
    "RollupRow",
    "TcoInputs",
    "Window",
    "project_live",
    "project_window",
    "read_window",
    "rollup_row",
    "traffic_peaks",
    "window_from_rollups",
]


@dataclass(frozen=True, slots=True)
class TcoInputs:
    """What the observed traffic is projected onto, and how much of it is needed first.

    ``targets`` is the migration plan; ``plan`` the on-prem hardware the on-prem leg (the
    pilot) runs on, for its measured cost. ``list_prices`` maps deployment names to their
    list price (None: unpriced). ``warnings`` name missing or deprecated price keys.
    """

    plan: OnPremPlan
    targets: tuple[MigrationTarget, ...]
    scenario: str
    list_prices: Mapping[str, ModelPrice | None]
    pilot_plans: Mapping[str, OnPremPlan] = field(default_factory=dict)
    price_source: str = ""
    growth_per_month: float = 0.0
    min_window_s: float = 3_600.0
    min_requests: int = 1_000
    warnings: tuple[str, ...] = ()


def hosted_slices(window: Window, inputs: TcoInputs) -> tuple[HostedSlice, ...]:
    """The window's hosted traffic per (use case, model), scaled to a month, billed and at list.

    A deployment without a list price (gone from the config, or unpriced) counts at its
    metered cost, and a warning says so.
    """
    scale = window.extrapolation_factor
    sums: dict[tuple[str, str], list[float]] = {}
    usages: dict[tuple[str, str], list[int]] = {}
    for row in window.hosted_rows:
        key = (row.use_case, row.model)
        price = inputs.list_prices.get(row.deployment)
        at_list = row.cost_micro_usd if price is None else _at_base_tier(row.usage, price)
        acc = sums.setdefault(key, [0.0, 0.0])
        acc[0] += row.cost_micro_usd
        acc[1] += at_list
        u = usages.setdefault(key, [0] * 5)
        r = row.usage
        parts = (r.input_tokens, r.cache_read_tokens, r.cache_write_tokens, r.cache_write_1h_tokens)
        for i, value in enumerate((*parts, r.output_tokens)):
            u[i] += value
    return tuple(
        HostedSlice(
            use_case=use_case,
            model=model,
            tokens=MonthlyTokens.from_usage(TokenUsage(*usages[(use_case, model)]), scale=scale),
            bill_usd_per_month=bill / MICRO_USD_PER_USD * scale,
            list_usd_per_month=at_list / MICRO_USD_PER_USD * scale,
        )
        for (use_case, model), (bill, at_list) in sorted(sums.items())
        if sum(usages[(use_case, model)]) > 0
    )


def _at_base_tier(usage: TokenUsage, price: ModelPrice) -> int:
    """Summed tokens at list, micro-USD: the long-context tier is per request, and a window's sum
    of requests is not one long request (the metered bill already carries the tier)."""
    return price_usage(
        usage,
        replace(
            price,
            input_above_200k=None,
            output_above_200k=None,
            cache_read_above_200k=None,
            cache_write_5m_above_200k=None,
            cache_write_1h_above_200k=None,
        ),
    )


def unpriced_deployments(window: Window, inputs: TcoInputs) -> tuple[str, ...]:
    return tuple(
        sorted(
            {
                r.deployment
                for r in window.hosted_rows
                if inputs.list_prices.get(r.deployment) is None
            }
        )
    )


@dataclass(frozen=True, slots=True)
class PilotCost:
    """The on-prem leg's cost per M tokens on the plan's hardware (one replica), at the
    utilization measured and at the plan's target utilization."""

    utilization_measured: float
    usd_per_m_measured: float | None
    usd_per_m_target: float


def pilot_cost(window: Window, plan: OnPremPlan) -> PilotCost | None:
    """The whole on-prem leg on ``plan``; None without an on-prem leg in the window."""
    tokens = (window.onprem_input_tokens, window.onprem_output_tokens)
    return _pilot(tokens, window.extrapolation_factor, plan)


def pilot_costs(window: Window, inputs: TcoInputs) -> dict[str, PilotCost]:
    """Each on-prem deployment on the plan of the target it pilots (``inputs.pilot_plans``),
    else on ``inputs.plan``: a TGI Mistral Small is not measured with Large 2 figures."""
    scale = window.extrapolation_factor
    costs = {
        name: _pilot(tokens, scale, inputs.pilot_plans.get(name, inputs.plan))
        for name, tokens in window.onprem_by_deployment.items()
    }
    return {name: cost for name, cost in costs.items() if cost is not None}


def _pilot(tokens: tuple[int, int], scale: float, plan: OnPremPlan) -> PilotCost | None:
    tokens_in, tokens_out = tokens
    if not tokens_in + tokens_out:
        return None
    gpus = gpus_per_replica(plan)
    measured = min(
        1.0,
        utilization_for_volume(
            plan,
            gpu_count=gpus,
            input_tokens_per_month=tokens_in * scale,
            output_tokens_per_month=tokens_out * scale,
        ),
    )
    monthly = onprem_monthly_cost(plan, gpu_count=gpus).total_usd_per_month
    share = tokens_in / (tokens_in + tokens_out)
    cap_1 = capacity_tokens_per_month(plan, gpu_count=gpus, input_share=share)
    return PilotCost(
        utilization_measured=measured,
        usd_per_m_measured=monthly / (cap_1 * measured) * 1e6 if measured > 0 else None,
        usd_per_m_target=monthly / (cap_1 * plan.target_utilization) * 1e6,
    )


class ProjectionStatus(StrEnum):
    OK = "ok"
    NO_TRAFFIC = "no_traffic"
    NOT_ENOUGH_TRAFFIC = "not_enough_traffic"


@dataclass(frozen=True, slots=True)
class LiveProjection:
    """A projection of one window with what it was projected onto; ``projection`` is set
    exactly when ``status`` is ``ok``, ``message`` says why otherwise (and what was seen)."""

    as_of: datetime
    inputs: TcoInputs
    status: ProjectionStatus
    message: str = ""
    window: Window | None = None
    projection: PlanProjection | None = None
    pilot: PilotCost | None = None
    pilots: Mapping[str, PilotCost] = field(default_factory=dict)

    @property
    def scenario(self) -> str:
        return self.inputs.scenario

    @property
    def verdict(self) -> str:
        """One sentence: the plan's verdict, or why there is none yet."""
        return self.message if self.projection is None else self.projection.verdict

    def to_json(self) -> dict[str, Any]:
        """The HTTP / CLI answer: every input with its provenance, the window, the result."""
        i = self.inputs
        out: dict[str, Any] = {
            "as_of": self.as_of.isoformat(),
            "scenario": i.scenario,
            "status": self.status.value,
            "verdict": self.verdict,
            "price_map": i.price_source,
            "warnings": list(i.warnings),
            "inputs": {
                "growth_per_month": i.growth_per_month,
                "min_window_s": i.min_window_s,
                "min_requests": i.min_requests,
                "targets": [_target_json(t) for t in i.targets],
            },
        }
        if self.message:
            out["message"] = self.message
        if self.window is not None:
            out["window"] = _window_json(self.window)
        if self.projection is not None:
            out["projection"] = to_json(self.projection)
            for target in out["projection"]["targets"]:
                target.pop("target", None)  # its inputs are under inputs.targets
        out["pilot"] = to_json(self.pilot)
        out["pilots"] = to_json(self.pilots)
        return out


def _target_json(target: MigrationTarget) -> dict[str, Any]:
    return {
        "name": target.name,
        "models": list(target.models),
        "use_cases": list(target.use_cases),
        "plan": to_json(target.plan),
        "provenance": {
            name: {"kind": p.kind, "note": p.note, "sources": list(p.urls)}
            for name, p in target.provenance.items()
        },
    }


def _window_json(w: Window) -> dict[str, Any]:
    return {
        "start": w.start.isoformat(),
        "end": w.end.isoformat(),
        "seconds": w.seconds,
        "requests": w.requests,
        "hosted_cost_usd": w.hosted_cost_micro_usd / MICRO_USD_PER_USD,
        "extrapolation_factor": w.extrapolation_factor,
        "peak_input_tokens_per_s": w.peaks.input_tokens_per_s,
        "peak_output_tokens_per_s": w.peaks.output_tokens_per_s,
        "mean_input_tokens_per_s": w.peaks.mean_input_tokens_per_s,
        "mean_output_tokens_per_s": w.peaks.mean_output_tokens_per_s,
        "peak_basis": f"p{PEAK_QUANTILE * 100:.0f} of {PEAK_BUCKET_S // 60}-minute windows",
    }


def project_window(
    window: Window | None, inputs: TcoInputs, *, as_of: datetime, empty: str
) -> LiveProjection:
    """``window`` projected onto the migration plan, or why not (``empty``: no request)."""

    def answer(status: ProjectionStatus, message: str = "", **result: Any) -> LiveProjection:
        return LiveProjection(as_of=as_of, inputs=inputs, status=status, message=message, **result)

    if window is None:
        return answer(ProjectionStatus.NO_TRAFFIC, empty)
    pilot, pilots = pilot_cost(window, inputs.plan), pilot_costs(window, inputs)
    span_s = (window.end - window.start).total_seconds()
    seen = f"{window.requests:,} requests over {_duration(span_s)}"
    if span_s < inputs.min_window_s or (window.requests < inputs.min_requests):
        need = f"at least {_duration(inputs.min_window_s)} and {inputs.min_requests:,} requests"
        message = f"not enough traffic yet: {seen} seen; a projection needs {need}"
        return answer(
            ProjectionStatus.NOT_ENOUGH_TRAFFIC, message, window=window, pilot=pilot, pilots=pilots
        )
    slices = hosted_slices(window, inputs)
    total = sum(s.tokens.total_tokens for s in slices)
    if total == 0:
        message = f"no hosted traffic to move: {seen}, none of it on a hosted model"
        return answer(
            ProjectionStatus.NO_TRAFFIC, message, window=window, pilot=pilot, pilots=pilots
        )
    share = sum(s.tokens.all_input_tokens for s in slices) / total
    missing = unpriced_deployments(window, inputs)
    notes = tuple(f"no list price for deployment {d!r}: shown at its metered cost" for d in missing)
    projection = project_plan(
        slices,
        inputs.targets,
        shape=window.peaks.shape(share),
        growth_per_month=inputs.growth_per_month,
        warnings=inputs.warnings + notes,
    )
    return answer(
        ProjectionStatus.OK, window=window, projection=projection, pilot=pilot, pilots=pilots
    )


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


NO_TRAFFIC = (
    "no traffic recorded yet: send requests through the gateway, the projection follows "
    "within one projector interval"
)


def project_live(
    engine: Engine, inputs: TcoInputs, *, window_days: float, now: datetime
) -> LiveProjection:
    """The projection of the trailing window, or an answer saying why there is none yet."""
    return project_window(
        read_window(engine, now=now, window_days=window_days),
        inputs,
        as_of=now,
        empty=NO_TRAFFIC,
    )


_DERIVED = (
    "total_usd_per_month",
    "opex_usd_per_month",
    "opex_without_staff_usd_per_month",
    "gpu_seconds_per_s",
    "usd_per_m",
    "tokens_per_month",
    "total_tokens",
    "hosted_usd_per_month",
    "hosted_list_usd_per_month",
    "onprem_usd_per_month",
    "savings_usd_per_month",
    "staying_usd_per_month",
    "bill_usd_per_m",
    "list_usd_per_m",
    "lever",
    "discount_needed",
    "discount_needed_vs_list",
    "pays_off",
    "verdict",
)


def to_json(value: Any) -> Any:
    """Frozen results to plain JSON: derived properties included, enums by value, inf and NaN
    as null."""
    if is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_json(getattr(value, f.name)) for f in fields(value)}
        for name in _DERIVED:
            if name not in out and isinstance(getattr(type(value), name, None), property):
                out[name] = to_json(getattr(value, name))
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value
