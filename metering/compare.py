"""The side-by-side pilot report: per deployment of a model alias, how it served its traffic."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, select

from metering.tables import UsageEventRecord

_EVENTS: Table = UsageEventRecord.__table__  # type: ignore[attr-defined]
_COLUMNS = (
    "deployment",
    "backend",
    "on_prem",
    "status",
    "latency_s",
    "ttft_s",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "cost_micro_usd",
)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def compare_deployments(
    engine: Engine, *, model: str | None, since: datetime | None, until: datetime | None
) -> list[dict[str, Any]]:
    """Requests, error rate, latency and time-to-first-token percentiles, output tokens/s,
    tokens by type and hosted cost per 1k tokens, per deployment (busiest first).

    Latency percentiles cover successful requests; the error rate covers all of them.
    """
    stmt = select(*(_EVENTS.c[c] for c in _COLUMNS))
    if model is not None:
        stmt = stmt.where(_EVENTS.c.model == model)
    if since is not None:
        stmt = stmt.where(_EVENTS.c.started_at >= since)
    if until is not None:
        stmt = stmt.where(_EVENTS.c.started_at < until)
    groups: dict[str, list[Any]] = {}
    with engine.connect() as conn:
        for row in conn.execute(stmt):
            groups.setdefault(row.deployment, []).append(row)
    report = [_summarise(name, rows) for name, rows in groups.items()]
    return sorted(report, key=lambda r: (-r["requests"], r["deployment"]))


def _summarise(name: str, rows: list[Any]) -> dict[str, Any]:
    ok = [r for r in rows if r.status == "ok"]
    latencies = [r.latency_s for r in ok]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    rates = [
        r.output_tokens / (r.latency_s - (r.ttft_s or 0.0))
        for r in ok
        if r.output_tokens and r.latency_s > (r.ttft_s or 0.0)
    ]
    tokens = {c: sum(r[i] for r in rows) for i, c in enumerate(_COLUMNS) if c.endswith("_tokens")}
    priced = [r for r in rows if r.cost_micro_usd is not None]
    priced_tokens = sum(r.input_tokens + r.output_tokens for r in priced)
    cost_micro = sum(r.cost_micro_usd for r in priced)
    return {
        "deployment": name,
        "backend": rows[0].backend,
        "on_prem": bool(rows[0].on_prem),
        "requests": len(rows),
        "errors": len(rows) - len(ok),
        "error_rate": (len(rows) - len(ok)) / len(rows),
        "latency_s": {f"p{q}": percentile(latencies, q) for q in (50, 95, 99)},
        "ttft_s": {f"p{q}": percentile(ttfts, q) for q in (50, 95)},
        "output_tokens_per_s": statistics.median(rates) if rates else None,
        "tokens": tokens,
        "cost_usd": cost_micro / 1_000_000,
        "hosted_usd_per_1k_tokens": (
            None
            if rows[0].on_prem or not priced_tokens
            else cost_micro / 1_000_000 / priced_tokens * 1000
        ),
    }
