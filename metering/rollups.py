"""Hourly rollups: sums per hour, use case, user, agent, key, model, backend, deployment and
on_prem."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, func
from sqlalchemy.dialects import postgresql, sqlite

from metering.tables import (
    ROLLUP_KEYS,
    ROLLUP_SUMS,
    UsageMinuteRecord,
    UsageRollupRecord,
    UsageSessionMonthRecord,
)

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
    _upsert_sums(conn, ROLLUPS, list(ROLLUP_KEYS), rows, ROLLUP_SUMS)


MINUTES: Table = UsageMinuteRecord.__table__  # type: ignore[attr-defined]
SESSIONS: Table = UsageSessionMonthRecord.__table__  # type: ignore[attr-defined]
_LABELS = ("user", "agent", "use_case")


def minute_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Requests and input/output tokens per minute, in minute order."""
    sums: dict[datetime, dict[str, Any]] = {}
    for row in rows:
        minute = row["started_at"].replace(second=0, microsecond=0)
        acc = sums.setdefault(
            minute, {"minute": minute, "requests": 0, "input_tokens": 0, "output_tokens": 0}
        )
        acc["requests"] += 1
        acc["input_tokens"] += row["input_tokens"]
        acc["output_tokens"] += row["output_tokens"]
    return [sums[k] for k in sorted(sums)]


def session_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each session's totals per UTC month, in key order."""
    sums: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        started: datetime = row["started_at"]
        key = (started.astimezone(UTC).strftime("%Y-%m"), row["session"])
        acc = sums.get(key)
        if acc is None:
            acc = sums[key] = {
                "month": key[0],
                "session": key[1],
                "requests": 0,
                "total_tokens": 0,
                "cost_micro_usd": 0,
                "first_started_at": started,
                "last_started_at": started,
                **{f"{c}_{m}": row[c] for c in _LABELS for m in ("min", "max")},
            }
        acc["requests"] += 1
        acc["total_tokens"] += row["input_tokens"] + row["output_tokens"]
        acc["cost_micro_usd"] += row["cost_micro_usd"] or 0
        acc["first_started_at"] = min(acc["first_started_at"], started)
        acc["last_started_at"] = max(acc["last_started_at"], started)
        for c in _LABELS:
            acc[f"{c}_min"] = min(acc[f"{c}_min"], row[c])
            acc[f"{c}_max"] = max(acc[f"{c}_max"], row[c])
    return [sums[k] for k in sorted(sums)]


def add_to_minutes(conn: Connection, rows: list[dict[str, Any]]) -> None:
    _upsert_sums(conn, MINUTES, ["minute"], rows, ("requests", "input_tokens", "output_tokens"))


def add_to_sessions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    pg = conn.dialect.name == "postgresql"
    stmt = (postgresql if pg else sqlite).insert(SESSIONS)
    low, high = (func.least, func.greatest) if pg else (func.min, func.max)
    t, new = SESSIONS.c, stmt.excluded
    updates: dict[str, Any] = {
        c: t[c] + new[c] for c in ("requests", "total_tokens", "cost_micro_usd")
    }
    updates["first_started_at"] = low(t.first_started_at, new.first_started_at)
    updates["last_started_at"] = high(t.last_started_at, new.last_started_at)
    for c in _LABELS:
        updates[f"{c}_min"] = low(t[f"{c}_min"], new[f"{c}_min"])
        updates[f"{c}_max"] = high(t[f"{c}_max"], new[f"{c}_max"])
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["month", "session"], set_=updates), rows
    )


def _upsert_sums(
    conn: Connection,
    table: Table,
    keys: list[str],
    rows: list[dict[str, Any]],
    sums: tuple[str, ...],
) -> None:
    if not rows:
        return
    stmt = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={c: table.c[c] + stmt.excluded[c] for c in sums}
    )
    conn.execute(stmt, rows)
