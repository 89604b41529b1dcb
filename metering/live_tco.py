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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any

from sqlalchemy import Engine, Table, func, select

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
from cost.sizing import TrafficShape
from cost.tco import MonthlyTokens
from cost.usage import TokenUsage
from metering.tables import UsageEventRecord, UsageMinuteRecord, UsageRollupRecord

SECONDS_PER_MONTH = 365.25 / 12 * 86_400
MIN_WINDOW_S = 60.0  # floor of the divisor; the real guard is TcoInputs.min_window_s
PEAK_BUCKET_S = 300  # p95 of 5-minute windows (tco.md §2.6)
PEAK_QUANTILE = 0.95
_ROLLUPS: Table = UsageRollupRecord.__table__  # type: ignore[attr-defined]
_EVENTS: Table = UsageEventRecord.__table__  # type: ignore[attr-defined]
_MINUTES: Table = UsageMinuteRecord.__table__  # type: ignore[attr-defined]


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
    price_source: str = ""
    growth_per_month: float = 0.0
    min_window_s: float = 3_600.0
    min_requests: int = 1_000
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RollupRow:
    """Rollup sums of one (use case, model, deployment, on_prem) cell, all-input convention."""

    use_case: str
    on_prem: bool
    usage: TokenUsage
    requests: int
    cost_micro_usd: int
    model: str = ""
    deployment: str = ""


@dataclass(frozen=True, slots=True)
class Peaks:
    """p95 of the window's 5-minute token rates and the window's mean rate, tokens/s."""

    input_tokens_per_s: float = 0.0
    output_tokens_per_s: float = 0.0
    mean_input_tokens_per_s: float = 0.0
    mean_output_tokens_per_s: float = 0.0

    def shape(self, input_share: float) -> TrafficShape:
        """κ = p95 / mean, at least 1: traffic too sparse for a p95 still peaks at its mean."""
        return TrafficShape(
            _ratio(self.input_tokens_per_s, self.mean_input_tokens_per_s),
            _ratio(self.output_tokens_per_s, self.mean_output_tokens_per_s),
            input_share,
        )


def _ratio(peak: float, mean: float) -> float:
    return max(1.0, peak / mean) if mean > 0 else 1.0


@dataclass(frozen=True, slots=True)
class Window:
    """Raw counts observed between ``start`` and ``end`` (not yet per month)."""

    start: datetime
    end: datetime
    requests: int
    tokens_by_use_case: Mapping[str, MonthlyTokens]
    onprem_input_tokens: int
    onprem_output_tokens: int
    hosted_cost_micro_usd: int
    peaks: Peaks
    hosted_rows: tuple[RollupRow, ...] = ()

    @property
    def seconds(self) -> float:
        return max(MIN_WINDOW_S, (self.end - self.start).total_seconds())

    @property
    def extrapolation_factor(self) -> float:
        """Months per window: what scales the window's counts to a month."""
        return SECONDS_PER_MONTH / self.seconds


def window_from_rollups(
    rows: Iterable[RollupRow], *, start: datetime, end: datetime, peaks: Peaks
) -> Window:
    """Rollup rows → window: tokens per use case, the on-prem leg's tokens, the hosted bill."""
    sums: dict[str, list[int]] = {}
    requests = onprem_in = onprem_out = hosted_cost = 0
    hosted: list[RollupRow] = []
    for row in rows:
        u = row.usage
        acc = sums.setdefault(row.use_case, [0] * 5)
        parts = (u.input_tokens, u.cache_read_tokens, u.cache_write_tokens)
        for i, value in enumerate((*parts, u.cache_write_1h_tokens, u.output_tokens)):
            acc[i] += value
        requests += row.requests
        if row.on_prem:
            onprem_in, onprem_out = onprem_in + u.input_tokens, onprem_out + u.output_tokens
        else:
            hosted_cost += row.cost_micro_usd
            hosted.append(row)
    return Window(
        start=start,
        end=end,
        requests=requests,
        tokens_by_use_case={
            uc: MonthlyTokens.from_usage(TokenUsage(i, r, w, w1h, o))
            for uc, (i, r, w, w1h, o) in sums.items()
        },
        onprem_input_tokens=onprem_in,
        onprem_output_tokens=onprem_out,
        hosted_cost_micro_usd=hosted_cost,
        peaks=peaks,
        hosted_rows=tuple(hosted),
    )


_SUMMED = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "requests",
    "cost_micro_usd",
)
CELL_KEYS = ("use_case", "model", "deployment", "on_prem")


def read_window(engine: Engine, *, now: datetime, window_days: float) -> Window | None:
    """What the ledger saw in the trailing window; None when it saw no request at all."""
    since = now - timedelta(days=window_days)
    hour_since = since.replace(minute=0, second=0, microsecond=0)
    r = _ROLLUPS.c
    keys = [r[k] for k in CELL_KEYS]
    sums = [func.coalesce(func.sum(r[c]), 0) for c in _SUMMED]
    with engine.connect() as conn:
        first = conn.execute(
            select(func.min(_EVENTS.c.started_at)).where(_EVENTS.c.started_at >= since)
        ).scalar_one()
        rows = conn.execute(select(*keys, *sums).where(r.hour >= hour_since).group_by(*keys)).all()
        start = _aware(first) if first is not None else hour_since
        peaks = traffic_peaks(conn, start=start, end=now)
    if not rows or sum(int(row[len(CELL_KEYS) + 5]) for row in rows) == 0:
        return None
    return window_from_rollups(
        (rollup_row(dict(zip(CELL_KEYS, row[:4], strict=True)), row[4:]) for row in rows),
        start=start,
        end=now,
        peaks=peaks,
    )


def rollup_row(cell: Mapping[str, Any], values: Iterable[Any]) -> RollupRow:
    """One cell's summed columns (``_SUMMED`` order) as a ``RollupRow``."""
    inp, read, write, write_1h, out, requests, cost = (int(v) for v in values)
    return RollupRow(
        use_case=str(cell["use_case"]),
        on_prem=bool(cell["on_prem"]),
        usage=TokenUsage(inp, read, write, write_1h, out),
        requests=requests,
        cost_micro_usd=cost,
        model=str(cell.get("model", "")),
        deployment=str(cell.get("deployment", "")),
    )


def traffic_peaks(conn: Any, *, start: datetime, end: datetime) -> Peaks:
    """p95 of the 5-minute token rates in [start, end), empty 5 minutes counted, and the mean."""
    m = _MINUTES.c
    rows = conn.execute(
        select(m.minute, m.input_tokens, m.output_tokens).where(
            m.minute >= start.replace(second=0, microsecond=0), m.minute < end
        )
    ).all()
    seconds = max(MIN_WINDOW_S, (end - start).total_seconds())
    buckets = max(1, math.ceil(seconds / PEAK_BUCKET_S))
    sums: dict[int, list[int]] = {}
    for minute, inp, out in rows:
        index = int((_aware(minute) - start).total_seconds() // PEAK_BUCKET_S)
        acc = sums.setdefault(max(0, min(index, buckets - 1)), [0, 0])
        acc[0], acc[1] = acc[0] + int(inp), acc[1] + int(out)
    total_in = sum(v[0] for v in sums.values())
    total_out = sum(v[1] for v in sums.values())
    return Peaks(
        input_tokens_per_s=_p95([v[0] for v in sums.values()], buckets) / PEAK_BUCKET_S,
        output_tokens_per_s=_p95([v[1] for v in sums.values()], buckets) / PEAK_BUCKET_S,
        mean_input_tokens_per_s=total_in / seconds,
        mean_output_tokens_per_s=total_out / seconds,
    )


def _p95(values: list[int], buckets: int) -> float:
    """Nearest-rank p95 over ``buckets`` values, the ones not given being 0."""
    ranked = sorted(values, reverse=True)
    rank_from_top = buckets - math.ceil(PEAK_QUANTILE * buckets)  # how many lie above the p95
    return float(ranked[rank_from_top]) if rank_from_top < len(ranked) else 0.0


def _aware(value: datetime | str) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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
        at_list = price_usage(row.usage, price) if price is not None else row.cost_micro_usd
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
    """None without an on-prem leg in the window."""
    tokens_in, tokens_out = window.onprem_input_tokens, window.onprem_output_tokens
    if not tokens_in + tokens_out:
        return None
    scale, gpus = window.extrapolation_factor, gpus_per_replica(plan)
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
    pilot = pilot_cost(window, inputs.plan)
    span_s = (window.end - window.start).total_seconds()
    seen = f"{window.requests:,} requests over {_duration(span_s)}"
    if span_s < inputs.min_window_s or (window.requests < inputs.min_requests):
        need = f"at least {_duration(inputs.min_window_s)} and {inputs.min_requests:,} requests"
        message = f"not enough traffic yet: {seen} seen; a projection needs {need}"
        return answer(ProjectionStatus.NOT_ENOUGH_TRAFFIC, message, window=window, pilot=pilot)
    slices = hosted_slices(window, inputs)
    total = sum(s.tokens.total_tokens for s in slices)
    if total == 0:
        message = f"no hosted traffic to move: {seen}, none of it on a hosted model"
        return answer(ProjectionStatus.NO_TRAFFIC, message, window=window, pilot=pilot)
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
    return answer(ProjectionStatus.OK, window=window, projection=projection, pilot=pilot)


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


def project_live(
    engine: Engine, inputs: TcoInputs, *, window_days: float, now: datetime
) -> LiveProjection:
    """The projection of the trailing window, or an answer saying why there is none yet."""
    return project_window(
        read_window(engine, now=now, window_days=window_days),
        inputs,
        as_of=now,
        empty="no traffic recorded yet: send requests through the gateway, the "
        "projection follows within one projector interval",
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
