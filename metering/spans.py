"""Which rollup rows answer a window on whole hours: the daily rollups for its whole UTC days,
the hourly ones for the hours at either edge. A month then reads ~30 rows per combination of
labels instead of ~720."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, Subquery, Table, select, union_all

from metering.tables import DAILY, ROLLUP_KEYS, ROLLUP_SUMS, ROLLUPS

_DAY = timedelta(days=1)


def rollup_rows(since: datetime | None, until: datetime | None) -> Subquery:
    """Rollup rows covering [since, until) (``None``: unbounded), as one subquery with the
    columns ``at`` (the row's hour or day), the rollup keys and sums. ``since`` and ``until``
    must be on the hour."""
    day_from = _next_midnight(since) if since is not None else None
    day_to = _midnight(until) if until is not None else None
    if day_from is not None and day_to is not None and day_from >= day_to:
        return _part(ROLLUPS, ROLLUPS.c.hour, since, until).subquery("rollup_rows")
    parts = [_part(DAILY, DAILY.c.day, day_from, day_to)]
    if since is not None and day_from is not None and since < day_from:
        parts.append(_part(ROLLUPS, ROLLUPS.c.hour, since, day_from))
    if until is not None and day_to is not None and day_to < until:
        parts.append(_part(ROLLUPS, ROLLUPS.c.hour, day_to, until))
    return union_all(*parts).subquery("rollup_rows")


def _part(
    table: Table, at: ColumnElement[datetime], lo: datetime | None, hi: datetime | None
) -> Select[Any]:
    stmt = select(at.label("at"), *(table.c[c] for c in (*ROLLUP_KEYS[1:], *ROLLUP_SUMS)))
    if lo is not None:
        stmt = stmt.where(at >= lo)
    if hi is not None:
        stmt = stmt.where(at < hi)
    return stmt


def _midnight(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _next_midnight(t: datetime) -> datetime:
    day = _midnight(t)
    return day if day == t else day + _DAY
