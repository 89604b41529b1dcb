"""Aggregations of the ledger for the admin API: exact integer sums.

Answers come from the rollups whenever the grouping and the time window allow it (no session
or error detail, window on whole hours: the daily rollups for whole UTC days, the hourly ones for
the hours at the edges, see ``metering.spans``), and from the raw events otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Subquery, Table, case, func, select

from metering.spans import rollup_rows
from metering.tables import UsageEventRecord

GROUP_COLUMNS = (
    "user",
    "team",
    "key_id",
    "end_user",
    "agent",
    "session",
    "use_case",
    "model",
    "backend",
    "deployment",
    "error_code",
    "error_detail",
)
# Kept on the events only: a key of the hourly rollups per session or exception class would
# multiply their rows for a grouping few reports need.
EVENT_ONLY_COLUMNS = frozenset({"session", "error_detail"})
SUM_COLUMNS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_micro_usd",
)
_EVENTS: Table = UsageEventRecord.__table__  # type: ignore[attr-defined]


def usage_summary(
    engine: Engine,
    *,
    group_by: Sequence[str],
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Requests, errors, tokens by type and cost per group, largest cost first.

    ``since`` is inclusive and ``until`` exclusive, both on the request's start time. Returns the
    source used (``rollups`` or ``events``) and the rows.
    """
    unknown = [g for g in group_by if g not in GROUP_COLUMNS]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}; choose from {GROUP_COLUMNS}")
    window: tuple[datetime | None, datetime | None] = (since, until)
    table: Table | Subquery
    if EVENT_ONLY_COLUMNS.isdisjoint(group_by) and _on_the_hour(since) and _on_the_hour(until):
        table, window = rollup_rows(since, until), (None, None)
        requests: ColumnElement[Any] = func.sum(table.c.requests)
        errors: ColumnElement[Any] = func.sum(table.c.errors)
        unpriced: ColumnElement[Any] = func.sum(table.c.unpriced_requests)
        source = "rollups"
    else:
        table = _EVENTS
        requests = func.count()
        errors = func.sum((table.c.status != "ok").cast(table.c.http_status.type))
        spent = (table.c.input_tokens + table.c.output_tokens) > 0
        unpriced = func.sum(case((table.c.cost_micro_usd.is_(None) & spent, 1), else_=0))
        source = "events"
    keys = [table.c[g] for g in group_by]
    sums = [func.coalesce(func.sum(table.c[c]), 0).label(c) for c in SUM_COLUMNS]
    stmt = select(
        *keys,
        func.coalesce(requests, 0).label("requests"),
        func.coalesce(errors, 0).label("errors"),
        func.coalesce(unpriced, 0).label("unpriced_requests"),
        *sums,
    )
    if window[0] is not None:
        stmt = stmt.where(_EVENTS.c.started_at >= window[0])
    if window[1] is not None:
        stmt = stmt.where(_EVENTS.c.started_at < window[1])
    if keys:
        stmt = stmt.group_by(*keys).order_by(func.sum(table.c.cost_micro_usd).desc(), *keys)
    with engine.connect() as conn:
        rows = [{k: _plain(v) for k, v in row._mapping.items()} for row in conn.execute(stmt)]
    return source, rows


def _on_the_hour(value: datetime | None) -> bool:
    return value is None or (value.minute == value.second == value.microsecond == 0)


def _plain(value: Any) -> Any:
    # PostgreSQL returns Decimal for SUM(bigint); the API promises integers.
    if hasattr(value, "as_integer_ratio") and not isinstance(value, float | bool):
        return int(value)
    return value
