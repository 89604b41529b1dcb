"""The export's views over time: per day, month over month per use case and per team, and the
line items.

All of them are folds of the month's hourly rollup cells (and the previous month's, for the
comparison), so they cost as much as the rollups, not the requests. Every amount is an integer
sum; USD columns are allotted in cents that add up (``views.settle_cents``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Any

from metering.export.cents import cents
from metering.export.views import (
    METRIC_NAMES,
    METRICS,
    SHARES,
    Column,
    Sums,
    View,
    add_into,
    cost_micro,
    metric_values,
    share,
    total_tokens,
    zero_sums,
)

# The line items' keys, coarsest first (after the day).
LINE_KEYS = ("team", "use_case", "user", "agent", "model", "backend", "on_prem")
LINE_DOCS = {
    "team": "the team (cost centre) of the key that paid",
    "use_case": "the use case",
    "user": "the user",
    "agent": "the agent",
    "model": "the model alias the client asked for",
    "backend": "the backend that served it",
    "on_prem": "true when the backend is on-prem (its cost is the TCO model's, 0 here)",
}
Cell = tuple[Mapping[str, Any], Sums]  # the labels of one cell of the month (its day included)


def days_view(cells: Iterable[Cell], *, first: date, last: date) -> View:
    """One row per day from ``first`` to ``last`` (inclusive), days without requests as zeros."""
    by_day: dict[date, Sums] = {}
    total = zero_sums()
    for labels, sums in cells:
        add_into(by_day.setdefault(_day(labels["day"]), zero_sums()), sums)
        add_into(total, sums)
    days = [first + timedelta(d) for d in range((last - first).days + 1)]
    rows = [
        (
            day,
            *metric_values(s := by_day.get(day, zero_sums())),
            share(total_tokens(s), total_tokens(total)),
            share(cost_micro(s), cost_micro(total)),
        )
        for day in days
    ]
    columns = (
        Column("day", "date", "the day (UTC)"),
        *METRICS,
        Column("token_share", "share", "share of the month's total_tokens"),
        Column("cost_share", "share", "share of the month's cost"),
    )
    return View("days", "per day (UTC)", columns, rows, summed=(*METRIC_NAMES, *SHARES))


def line_items_view(cells: Iterable[Cell]) -> View:
    """One row per day x use case x user x agent x model x backend: the grain for pivots and
    warehouse loads."""
    items: dict[tuple[Any, ...], Sums] = {}
    for labels, sums in cells:
        key = (_day(labels["day"]), *(labels[k] for k in LINE_KEYS))
        add_into(items.setdefault(key, zero_sums()), sums)
    ordered = sorted(items.items(), key=lambda kv: (kv[0][0], -cost_micro(kv[1]), kv[0][1:]))
    rows = [(*key, *metric_values(s)) for key, s in ordered]
    columns = (
        Column("day", "date", "the day (UTC)"),
        *(Column(k, "bool" if k == "on_prem" else "str", LINE_DOCS[k]) for k in LINE_KEYS),
        *METRICS,
    )
    doc = "line items: day x use case x user x agent x model x backend"
    return View("line_items", doc, columns, rows, summed=METRIC_NAMES)


MOM_KEYS = {  # the month-over-month views: name -> key
    "use_cases_mom": "use_case",
    "teams_mom": "team",
}


def mom_columns(key: str) -> tuple[Column, ...]:
    """The month-over-month columns of a view keyed by ``key`` (use_case, team)."""
    label = key.replace("_", " ")
    return (
        Column(key, "str", f"the {label} (also those with requests last month only)"),
        Column("requests", "int", "requests this month"),
        Column("requests_previous", "int", "requests in the previous month"),
        Column("total_tokens", "int", "tokens this month"),
        Column("total_tokens_previous", "int", "tokens in the previous month"),
        Column("token_change", "share", "tokens this month / previous month - 1 (empty: none)"),
        Column("cost_micro_usd", "int", "cost this month in micro-dollars, exact"),
        Column("cost_previous_micro_usd", "int", "cost in the previous month in micro-dollars"),
        Column("cost_usd", "usd", "cost this month in USD"),
        Column("cost_previous_usd", "usd", "cost in the previous month in USD"),
        Column("cost_change_usd", "usd", "cost_usd - cost_previous_usd"),
        Column("cost_change", "share", "cost this month / previous month - 1 (empty: none)"),
    )


def month_over_month_view(
    name: str, current: Mapping[str, Sums], previous: Mapping[str, Sums], *, previous_month: str
) -> View:
    """Each key of view ``name`` (MOM_KEYS) this month against the previous month, largest cost
    first."""
    key = MOM_KEYS[name]
    names = sorted(
        set(current) | set(previous),
        key=lambda k: (-cost_micro(current.get(k, zero_sums())), k),
    )
    now = [current.get(k, zero_sums()) for k in names]
    before = [previous.get(k, zero_sums()) for k in names]
    usd_now = cents([cost_micro(s) for s in now])
    usd_before = cents([cost_micro(s) for s in before])
    rows = [
        (
            k,
            n[0],
            b[0],
            total_tokens(n),
            total_tokens(b),
            change(total_tokens(n), total_tokens(b)),
            cost_micro(n),
            cost_micro(b),
            un,
            ub,
            un - ub,
            change(cost_micro(n), cost_micro(b)),
        )
        for k, n, b, un, ub in zip(names, now, before, usd_now, usd_before, strict=True)
    ]
    columns = mom_columns(key)
    summed = tuple(c.name for c in columns if c.kind in ("int", "usd"))
    doc = f"per {key.replace('_', ' ')}, this month against {previous_month}"
    return View(name, doc, columns, rows, summed=summed)


def change(now: int, before: int) -> float | None:
    """The relative change; None when there was nothing before (no percentage of zero)."""
    return now / before - 1 if before else None


def _day(day: date | str) -> date:
    # SQLite's date() answers text; PostgreSQL a date.
    return date.fromisoformat(day) if isinstance(day, str) else day
