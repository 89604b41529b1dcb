"""Hourly rollups: sums per hour, use case, user, agent, key, model, backend, deployment and
on_prem."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from metering.tables import ROLLUP_KEYS, ROLLUP_SUMS, UsageRollupRecord

ROLLUPS: Table = UsageRollupRecord.__table__  # type: ignore[attr-defined]


def rollup_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Sum event rows (as written to the events table) into rollup rows, sorted by key so that
    concurrent writers lock rollup rows in one order (no deadlocks between replicas)."""
    sums: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        started: datetime = row["started_at"]
        hour = started.replace(minute=0, second=0, microsecond=0)
        key = (hour, *(row[k] for k in ROLLUP_KEYS[1:]))
        acc = sums.get(key)
        if acc is None:
            acc = sums[key] = dict(zip(ROLLUP_KEYS, key, strict=True))
            acc.update(dict.fromkeys(ROLLUP_SUMS, 0))
        acc["requests"] += 1
        acc["errors"] += row["status"] != "ok"
        acc["unpriced_requests"] += row["cost_micro_usd"] is None
        for col in ROLLUP_SUMS[3:]:
            acc[col] += row[col] or 0
    return [sums[k] for k in sorted(sums, key=_sort_key)]


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return (key[0].isoformat(), *key[1:])


def add_to_rollups(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(ROLLUPS)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(ROLLUP_KEYS),
        set_={c: ROLLUPS.c[c] + stmt.excluded[c] for c in ROLLUP_SUMS},
    )
    conn.execute(stmt, rows)
