"""The live TCO projection: the ledger's observed traffic, projected by the cost module.

Monthly volume by token class and use case is extrapolated from the rollups of the observed
window (``window_days``, or since the first request when that is shorter); peak rates are the
busiest minute of the last ``peak_window_s`` (per-minute rollups); on-prem utilization is
measured from the on-prem deployments' traffic against one replica of the plan (the pilot's
hardware).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import Engine, Table, func, select

from cost.capacity import OnPremPlan, gpus_per_replica, utilization_for_volume
from cost.tco import (
    HostedPricing,
    MonthlyTokens,
    NoTrafficError,
    ObservedVolume,
    project_tco,
)
from metering.tables import UsageEventRecord, UsageMinuteRecord, UsageRollupRecord

SECONDS_PER_MONTH = 365.25 / 12 * 86_400
MIN_WINDOW_S = 60.0  # a shorter window would extrapolate a single request into a month
_ROLLUPS: Table = UsageRollupRecord.__table__  # type: ignore[attr-defined]
_EVENTS: Table = UsageEventRecord.__table__  # type: ignore[attr-defined]
_MINUTES: Table = UsageMinuteRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Window:
    """Raw counts observed between ``start`` and ``end`` (not yet per month)."""

    start: datetime
    end: datetime
    requests: int
    tokens_by_use_case: dict[str, MonthlyTokens]
    onprem_input_tokens: int
    onprem_output_tokens: int
    hosted_cost_micro_usd: int
    peak_input_tokens_per_s: float
    peak_output_tokens_per_s: float

    @property
    def seconds(self) -> float:
        return max(MIN_WINDOW_S, (self.end - self.start).total_seconds())


def read_window(
    engine: Engine, *, now: datetime, window_days: float, peak_window_s: float = 86_400
) -> Window | None:
    """What the ledger saw in the window; None when it saw no request at all."""
    since = now - timedelta(days=window_days)
    hour_since = since.replace(minute=0, second=0, microsecond=0)
    r = _ROLLUPS.c
    sums = [
        func.coalesce(func.sum(r[c]), 0)
        for c in (
            "input_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "output_tokens",
            "requests",
            "cost_micro_usd",
        )
    ]
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
    by_use_case: dict[str, list[int]] = {}
    onprem_in = onprem_out = cost = requests = 0
    for use_case, on_prem, inp, read, write, write_1h, out, reqs, cost_micro in rows:
        acc = by_use_case.setdefault(use_case, [0, 0, 0, 0, 0])
        for i, value in enumerate(
            (
                int(inp) - int(read) - int(write),
                int(read),
                int(write) - int(write_1h),
                int(write_1h),
                int(out),
            )
        ):
            acc[i] += value
        requests += int(reqs)
        if on_prem:
            onprem_in, onprem_out = onprem_in + int(inp), onprem_out + int(out)
        else:
            cost += int(cost_micro)
    start = _aware(first) if first is not None else hour_since
    return Window(
        start=start,
        end=now,
        requests=requests,
        tokens_by_use_case={uc: MonthlyTokens(*map(float, v)) for uc, v in by_use_case.items()},
        onprem_input_tokens=onprem_in,
        onprem_output_tokens=onprem_out,
        hosted_cost_micro_usd=cost,
        peak_input_tokens_per_s=peaks[0],
        peak_output_tokens_per_s=peaks[1],
    )


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
    scale = SECONDS_PER_MONTH / window.seconds
    monthly = {
        uc: MonthlyTokens(*(v * scale for v in t.by_class().values()))
        for uc, t in window.tokens_by_use_case.items()
    }
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


def project_live(
    engine: Engine,
    *,
    plan: OnPremPlan,
    hosted: HostedPricing,
    scenario: str,
    window_days: float,
    now: datetime,
) -> dict[str, Any]:
    """The projection as a JSON-ready dict, or ``{"status": "no_traffic", ...}``."""
    window = read_window(engine, now=now, window_days=window_days)
    base: dict[str, Any] = {
        "as_of": now.isoformat(),
        "scenario": scenario,
        "hosted_model": hosted.name,
    }
    if window is None:
        return {
            **base,
            "status": "no_traffic",
            "message": "no traffic recorded yet: send requests through the gateway, the "
            "projection follows within one projector interval",
        }
    try:
        projection = project_tco(volume=observed_volume(window, plan), hosted=hosted, plan=plan)
    except NoTrafficError:
        return {**base, "status": "no_traffic", "message": "requests recorded, but no tokens"}
    return {
        **base,
        "status": "ok",
        "window": _window_json(window),
        "projection": to_json(projection),
    }


def _window_json(window: Window) -> dict[str, Any]:
    return {
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "seconds": window.seconds,
        "requests": window.requests,
        "hosted_cost_usd": window.hosted_cost_micro_usd / 1_000_000,
        "extrapolation_factor": SECONDS_PER_MONTH / window.seconds,
    }


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
