"""The TCO projection's window: what the ledger saw in a span, read from the rollups.

Hosted and on-prem tokens and the hosted bill per (use case, model, deployment) from the hourly
rollups; the traffic shape from the per-minute rollups, as the p95 of 5-minute token rates
(empty 5 minutes count as 0) against the span's mean (κ, tco.md §2.6). The live projection reads
a trailing window; the month's export reads a calendar month.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Engine, Float, Integer, Table, cast, func, literal, select

from cost.sizing import TrafficShape
from cost.tco import MonthlyTokens
from cost.usage import TokenUsage
from metering.spans import rollup_rows
from metering.tables import UsageEventRecord, UsageMinuteRecord

SECONDS_PER_MONTH = 365.25 / 12 * 86_400
MIN_WINDOW_S = 60.0  # floor of the divisor; the real guard is TcoInputs.min_window_s
PEAK_BUCKET_S = 300  # p95 of 5-minute windows (tco.md §2.6)
PEAK_QUANTILE = 0.95
_EVENTS: Table = UsageEventRecord.__table__  # type: ignore[attr-defined]
_MINUTES: Table = UsageMinuteRecord.__table__  # type: ignore[attr-defined]


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
    onprem_by_deployment: Mapping[str, tuple[int, int]] = field(default_factory=dict)

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
    by_deployment: dict[str, tuple[int, int]] = {}
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
            seen = by_deployment.get(row.deployment, (0, 0))
            by_deployment[row.deployment] = (seen[0] + u.input_tokens, seen[1] + u.output_tokens)
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
        onprem_by_deployment=by_deployment,
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
    r = rollup_rows(hour_since, None).c
    keys = [r[k] for k in CELL_KEYS]
    sums = [func.coalesce(func.sum(r[c]), 0) for c in _SUMMED]
    with engine.connect() as conn:
        first = conn.execute(
            select(func.min(_EVENTS.c.started_at)).where(_EVENTS.c.started_at >= since)
        ).scalar_one()
        rows = conn.execute(select(*keys, *sums).group_by(*keys)).all()
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
    bucket = _bucket(conn.dialect.name, m.minute, start)
    rows = conn.execute(
        select(bucket, func.sum(m.input_tokens), func.sum(m.output_tokens))
        .where(m.minute >= start.replace(second=0, microsecond=0), m.minute < end)
        .group_by(bucket)
    ).all()
    seconds = max(MIN_WINDOW_S, (end - start).total_seconds())
    buckets = max(1, math.ceil(seconds / PEAK_BUCKET_S))
    sums: dict[int, list[int]] = {}
    for index, inp, out in rows:
        acc = sums.setdefault(max(0, min(int(index), buckets - 1)), [0, 0])
        acc[0], acc[1] = acc[0] + int(inp), acc[1] + int(out)
    total_in = sum(v[0] for v in sums.values())
    total_out = sum(v[1] for v in sums.values())
    return Peaks(
        input_tokens_per_s=_p95([v[0] for v in sums.values()], buckets) / PEAK_BUCKET_S,
        output_tokens_per_s=_p95([v[1] for v in sums.values()], buckets) / PEAK_BUCKET_S,
        mean_input_tokens_per_s=total_in / seconds,
        mean_output_tokens_per_s=total_out / seconds,
    )


def _bucket(dialect: str, minute: Any, start: datetime) -> Any:
    """The 5-minute bucket (from ``start``) of a per-minute row, cut in SQL: a month's 43,200
    minutes come back as at most 8,640 sums. Negative (the minute ``start`` falls in) counts
    as bucket 0, as does anything below 0."""
    if dialect == "postgresql":
        # date_part: double precision (EXTRACT answers numeric, ~2x slower to divide and group)
        elapsed = func.date_part("epoch", minute - literal(start, DateTime(timezone=True)))
        return func.floor(elapsed / PEAK_BUCKET_S)
    # SQLite keeps the minute as UTC text; strftime('%s') reads it as whole seconds
    since = cast(func.strftime("%s", minute), Integer) - literal(start.timestamp(), Float)
    return cast(since / PEAK_BUCKET_S, Integer)  # truncates: floor for elapsed >= 0


def _p95(values: list[int], buckets: int) -> float:
    """Nearest-rank p95 over ``buckets`` values, the ones not given being 0."""
    ranked = sorted(values, reverse=True)
    rank_from_top = buckets - math.ceil(PEAK_QUANTILE * buckets)  # how many lie above the p95
    return float(ranked[rank_from_top]) if rank_from_top < len(ranked) else 0.0


def _aware(value: datetime | str) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
