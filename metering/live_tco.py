"""The live TCO projection: the ledger's observed traffic, projected by the cost module.

Monthly volume by token class and use case is extrapolated from the rollups of the observed
window (``window_days``, or since the first request when that is shorter); peak rates are the
busiest minute of the last ``peak_window_s`` (per-minute rollups); on-prem utilization is
measured from the on-prem deployments' traffic against one replica of the plan (the pilot's
hardware). The result is a frozen ``LiveProjection``; it becomes JSON only at the edges.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any

from sqlalchemy import Engine, Table, func, select

from cost.capacity import OnPremPlan, gpus_per_replica, utilization_for_volume
from cost.tco import (
    HostedPricing,
    MonthlyTokens,
    NoTrafficError,
    ObservedVolume,
    TcoProjection,
    project_tco,
)
from cost.usage import TokenUsage
from metering.tables import UsageEventRecord, UsageMinuteRecord, UsageRollupRecord

SECONDS_PER_MONTH = 365.25 / 12 * 86_400
MIN_WINDOW_S = 60.0  # a shorter window would extrapolate a single request into a month
_ROLLUPS: Table = UsageRollupRecord.__table__  # type: ignore[attr-defined]
_EVENTS: Table = UsageEventRecord.__table__  # type: ignore[attr-defined]
_MINUTES: Table = UsageMinuteRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class TcoInputs:
    """The on-prem plan and the hosted option the observed traffic is projected onto."""

    plan: OnPremPlan
    hosted: HostedPricing
    scenario: str


@dataclass(frozen=True, slots=True)
class RollupRow:
    """Rollup sums of one (use case, on_prem) cell: tokens in the all-input convention."""

    use_case: str
    on_prem: bool
    usage: TokenUsage
    requests: int
    cost_micro_usd: int


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
    peak_input_tokens_per_s: float
    peak_output_tokens_per_s: float

    @property
    def seconds(self) -> float:
        return max(MIN_WINDOW_S, (self.end - self.start).total_seconds())

    @property
    def extrapolation_factor(self) -> float:
        """Months per window: what scales the window's counts to a month."""
        return SECONDS_PER_MONTH / self.seconds


def window_from_rollups(
    rows: Iterable[RollupRow],
    *,
    start: datetime,
    end: datetime,
    peak_input_tokens_per_s: float,
    peak_output_tokens_per_s: float,
) -> Window:
    """Rollup rows → window: tokens per use case, the on-prem leg's tokens, the hosted bill."""
    sums: dict[str, list[int]] = {}
    requests = onprem_in = onprem_out = hosted_cost = 0
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
        peak_input_tokens_per_s=peak_input_tokens_per_s,
        peak_output_tokens_per_s=peak_output_tokens_per_s,
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


def read_window(
    engine: Engine, *, now: datetime, window_days: float, peak_window_s: float = 86_400
) -> Window | None:
    """What the ledger saw in the window; None when it saw no request at all."""
    since = now - timedelta(days=window_days)
    hour_since = since.replace(minute=0, second=0, microsecond=0)
    r = _ROLLUPS.c
    sums = [func.coalesce(func.sum(r[c]), 0) for c in _SUMMED]
    with engine.connect() as conn:
        first = conn.execute(
            select(func.min(_EVENTS.c.started_at)).where(_EVENTS.c.started_at >= since)
        ).scalar_one()
        rows = conn.execute(
            select(r.use_case, r.on_prem, *sums)
            .where(r.hour >= hour_since)
            .group_by(r.use_case, r.on_prem)
        ).all()
        peaks = busiest_minute(conn, since=max(since, now - timedelta(seconds=peak_window_s)))
    if not rows or sum(int(row[7]) for row in rows) == 0:
        return None
    return window_from_rollups(
        (_rollup_row(uc, bool(on_prem), [int(v) for v in values]) for uc, on_prem, *values in rows),
        start=_aware(first) if first is not None else hour_since,
        end=now,
        peak_input_tokens_per_s=peaks[0],
        peak_output_tokens_per_s=peaks[1],
    )


def _rollup_row(use_case: str, on_prem: bool, values: list[int]) -> RollupRow:
    inp, read, write, write_1h, out, requests, cost = values
    return RollupRow(use_case, on_prem, TokenUsage(inp, read, write, write_1h, out), requests, cost)


def busiest_minute(
    conn: Any, *, since: datetime, until: datetime | None = None
) -> tuple[float, float]:
    """Input and output tokens per second of the busiest minute in [since, until)."""
    m = _MINUTES.c
    stmt = select(func.max(m.input_tokens), func.max(m.output_tokens)).where(m.minute >= since)
    if until is not None:
        stmt = stmt.where(m.minute < until)
    row = conn.execute(stmt).one()
    return (float(row[0] or 0) / 60, float(row[1] or 0) / 60)


def _aware(value: datetime | str) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def observed_volume(window: Window, plan: OnPremPlan) -> ObservedVolume:
    """The window scaled to a month (peaks are rates already, so they are kept)."""
    scale = window.extrapolation_factor
    monthly = {uc: t.scaled(scale) for uc, t in window.tokens_by_use_case.items()}
    measured = None
    if window.onprem_input_tokens or window.onprem_output_tokens:
        measured = min(
            1.0,
            utilization_for_volume(
                plan,
                gpu_count=gpus_per_replica(plan),
                input_tokens_per_month=window.onprem_input_tokens * scale,
                output_tokens_per_month=window.onprem_output_tokens * scale,
            ),
        )
    return ObservedVolume(
        monthly,
        peak_input_tokens_per_s=window.peak_input_tokens_per_s,
        peak_output_tokens_per_s=window.peak_output_tokens_per_s,
        measured_onprem_utilization=measured,
    )


class ProjectionStatus(StrEnum):
    OK = "ok"
    NO_TRAFFIC = "no_traffic"


@dataclass(frozen=True, slots=True)
class LiveProjection:
    """A projection of one window with what it was projected onto; ``projection`` and
    ``window`` are set exactly when ``status`` is ``ok``, ``message`` says why otherwise."""

    as_of: datetime
    scenario: str
    hosted_model: str
    status: ProjectionStatus
    message: str = ""
    window: Window | None = None
    projection: TcoProjection | None = None

    def to_json(self) -> dict[str, Any]:
        """The HTTP / CLI / export answer."""
        base: dict[str, Any] = {
            "as_of": self.as_of.isoformat(),
            "scenario": self.scenario,
            "hosted_model": self.hosted_model,
            "status": self.status.value,
        }
        if self.window is None or self.projection is None:
            return {**base, "message": self.message}
        w = self.window
        window = {
            "start": w.start.isoformat(),
            "end": w.end.isoformat(),
            "seconds": w.seconds,
            "requests": w.requests,
            "hosted_cost_usd": w.hosted_cost_micro_usd / 1_000_000,
            "extrapolation_factor": w.extrapolation_factor,
            "peak_input_tokens_per_s": w.peak_input_tokens_per_s,
            "peak_output_tokens_per_s": w.peak_output_tokens_per_s,
        }
        return {**base, "window": window, "projection": to_json(self.projection)}


def project_window(
    window: Window | None, inputs: TcoInputs, *, as_of: datetime, empty: str, no_tokens: str
) -> LiveProjection:
    """``window`` projected onto ``inputs``; ``empty`` / ``no_tokens`` say why not."""

    def answer(status: ProjectionStatus, message: str = "", **result: Any) -> LiveProjection:
        return LiveProjection(
            as_of=as_of,
            scenario=inputs.scenario,
            hosted_model=inputs.hosted.name,
            status=status,
            message=message,
            **result,
        )

    if window is None:
        return answer(ProjectionStatus.NO_TRAFFIC, empty)
    try:
        volume = observed_volume(window, inputs.plan)
        projection = project_tco(volume=volume, hosted=inputs.hosted, plan=inputs.plan)
    except NoTrafficError:
        return answer(ProjectionStatus.NO_TRAFFIC, no_tokens)
    return answer(ProjectionStatus.OK, window=window, projection=projection)


def project_live(
    engine: Engine, inputs: TcoInputs, *, window_days: float, now: datetime
) -> LiveProjection:
    """The projection of the trailing window, or a ``no_traffic`` answer saying why."""
    return project_window(
        read_window(engine, now=now, window_days=window_days),
        inputs,
        as_of=now,
        empty="no traffic recorded yet: send requests through the gateway, the "
        "projection follows within one projector interval",
        no_tokens="requests recorded, but no tokens",
    )


_DERIVED = (
    "total_usd_per_month",
    "opex_usd_per_month",
    "opex_without_staff_usd_per_month",
    "savings_usd_per_month",
    "tokens_per_month",
    "meets_peak",
    "total_tokens",
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
