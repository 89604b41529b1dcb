"""Aggregations of the ledger for the admin API: exact integer sums."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from metering.tables import UsageEventRecord

GROUP_COLUMNS = ("user", "agent", "session", "use_case", "model", "backend", "deployment")
SUM_COLUMNS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_micro_usd",
)


def usage_summary(
    engine: Engine,
    *,
    group_by: Sequence[str],
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Requests, errors, tokens by type and cost per group, largest cost first.

    ``since`` is inclusive and ``until`` exclusive, both on the request's start time.
    """
    unknown = [g for g in group_by if g not in GROUP_COLUMNS]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}; choose from {GROUP_COLUMNS}")
    table = UsageEventRecord.__table__  # type: ignore[attr-defined]
    keys = [table.c[g] for g in group_by]
    sums = [func.coalesce(func.sum(table.c[c]), 0).label(c) for c in SUM_COLUMNS]
    errors = func.coalesce(func.sum((table.c.status != "ok").cast(table.c.http_status.type)), 0)
    stmt = select(*keys, func.count().label("requests"), errors.label("errors"), *sums)
    if since is not None:
        stmt = stmt.where(table.c.started_at >= since)
    if until is not None:
        stmt = stmt.where(table.c.started_at < until)
    if keys:
        stmt = stmt.group_by(*keys).order_by(func.sum(table.c.cost_micro_usd).desc(), *keys)
    with engine.connect() as conn:
        return [{k: _plain(v) for k, v in row._mapping.items()} for row in conn.execute(stmt)]


def _plain(value: Any) -> Any:
    # PostgreSQL returns Decimal for SUM(bigint); the API promises integers.
    return (
        int(value) if hasattr(value, "as_integer_ratio") and not isinstance(value, float) else value
    )
