"""Rollups kept in the events' transaction, summed in one pass over a batch of event rows.

- hourly: sums per hour, use case, user, agent, key, team, end user, error code, model, backend,
  deployment and on_prem; daily: the same per UTC day (what windows of weeks and months read);
- per minute: requests and input/output tokens (the peaks the TCO projection sizes for);
- per session and UTC month: totals, first/last start, min/max of the labels (export views).

Rows are the events' flat form (``UsageEvent.flat()``, timestamps in Unix seconds). Every list
comes back sorted by its key, so concurrent writers lock rollup rows in one order (no deadlocks
between replicas). Times come back as aware UTC datetimes, rounded as the events' own columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from metering.tables import ROLLUP_KEYS, ROLLUP_SUMS

MINUTE_SUMS = ("requests", "input_tokens", "output_tokens")
SESSION_SUMS = ("requests", "total_tokens", "cost_micro_usd")
LABELS = ("user", "agent", "use_case")
_TOKEN_SUMS = ROLLUP_SUMS[3:]


@dataclass(slots=True)
class Rollups:
    hourly: list[dict[str, Any]]
    daily: list[dict[str, Any]]
    minutes: list[dict[str, Any]]
    sessions: list[dict[str, Any]]


def summarize(rows: Iterable[Mapping[str, Any]]) -> Rollups:
    """The three rollups of ``rows``, each sorted by key."""
    hourly: dict[tuple[Any, ...], dict[str, Any]] = {}
    minutes: dict[datetime, dict[str, Any]] = {}
    sessions: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        started = datetime.fromtimestamp(row["started_at"], UTC)
        minute = started.replace(second=0, microsecond=0)
        _add_hourly(hourly, row, minute.replace(minute=0))
        acc = minutes.get(minute)
        if acc is None:
            acc = minutes[minute] = {"minute": minute, **dict.fromkeys(MINUTE_SUMS, 0)}
        acc["requests"] += 1
        acc["input_tokens"] += row["input_tokens"]
        acc["output_tokens"] += row["output_tokens"]
        _add_session(sessions, row, started)
    return Rollups(
        hourly=[hourly[k] for k in sorted(hourly, key=_hour_order)],
        daily=_daily(hourly),
        minutes=[minutes[k] for k in sorted(minutes)],
        sessions=[sessions[k] for k in sorted(sessions)],
    )


def _add_hourly(
    sums: dict[tuple[Any, ...], dict[str, Any]], row: Mapping[str, Any], hour: datetime
) -> None:
    key = (hour, *(row[k] for k in ROLLUP_KEYS[1:]))
    acc = sums.get(key)
    if acc is None:
        acc = sums[key] = dict(zip(ROLLUP_KEYS, key, strict=True))
        acc.update(dict.fromkeys(ROLLUP_SUMS, 0))
    acc["requests"] += 1
    acc["errors"] += row["status"] != "ok"
    # unpriced: spent tokens with no price known (a request that spent none cost nothing)
    spent = row["input_tokens"] or row["output_tokens"]
    acc["unpriced_requests"] += row["cost_micro_usd"] is None and bool(spent)
    for col in _TOKEN_SUMS:
        acc[col] += row[col] or 0


def _daily(hourly: dict[tuple[Any, ...], dict[str, Any]]) -> list[dict[str, Any]]:
    days: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, sums in hourly.items():
        day = (key[0].replace(hour=0), *key[1:])
        acc = days.get(day)
        if acc is None:
            acc = days[day] = {"day": day[0], **dict(zip(ROLLUP_KEYS[1:], key[1:], strict=True))}
            acc.update(dict.fromkeys(ROLLUP_SUMS, 0))
        for c in ROLLUP_SUMS:
            acc[c] += sums[c]
    return [days[k] for k in sorted(days, key=_hour_order)]


def _hour_order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return (key[0].isoformat(), *key[1:])


def _add_session(
    sums: dict[tuple[str, str], dict[str, Any]], row: Mapping[str, Any], started: datetime
) -> None:
    key = (f"{started.year:04d}-{started.month:02d}", row["session"])
    acc = sums.get(key)
    if acc is None:
        acc = sums[key] = {
            "month": key[0],
            "session": key[1],
            **dict.fromkeys(SESSION_SUMS, 0),
            "first_started_at": started,
            "last_started_at": started,
            **{f"{c}_{m}": row[c] for c in LABELS for m in ("min", "max")},
        }
    acc["requests"] += 1
    acc["total_tokens"] += row["input_tokens"] + row["output_tokens"]
    acc["cost_micro_usd"] += row["cost_micro_usd"] or 0
    acc["first_started_at"] = min(acc["first_started_at"], started)
    acc["last_started_at"] = max(acc["last_started_at"], started)
    for c in LABELS:
        acc[f"{c}_min"] = min(acc[f"{c}_min"], row[c])
        acc[f"{c}_max"] = max(acc[f"{c}_max"], row[c])
