"""The monthly finance export: where the tokens and dollars of one calendar month (UTC) went.

Every view but the sessions is built from the daily rollups, whose size depends on the number of
distinct (day, use case, user, agent, model, backend) combinations, not on the number of
requests; the session views read the per-session monthly rollup. Amounts are integer sums, so the
totals equal the raw events' to the token and the micro-dollar (``MonthExport.reconciled``).
Writers for CSV, XLSX and Parquet are in ``metering.export.files``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Date, Engine, Table, cast, func, select

from metering.budgets import Budget, list_budgets
from metering.export.pareto import ParetoSet, headline, smallest_set
from metering.export.periods import Cell, days_view, line_items_view, month_over_month_view
from metering.export.sessions import EventTotals, read_sessions, session_views
from metering.export.tco_sheet import TcoInputs, month_projection, tco_views
from metering.export.team_budgets import team_budgets_view
from metering.export.views import (
    Sums,
    View,
    add_into,
    cost_micro,
    group_view,
    pareto_view,
    settle_cents,
    summary_view,
    total_tokens,
    zero_sums,
)
from metering.live_tco import LiveProjection
from metering.spans import rollup_rows
from metering.tables import ROLLUP_SUMS, UsageRollupRecord
from metering.tco_window import CELL_KEYS

_ROLLUPS: Table = UsageRollupRecord.__table__  # type: ignore[attr-defined]
GROUPINGS = (
    ("use_cases", "use_case"),
    ("agents", "agent"),
    ("users", "user"),
    ("models", "model"),
    ("backends", "backend"),
    ("teams", "team"),  # the cost-centre view: who pays, by the key's team
)
_CELL_KEYS = (
    "day",
    "use_case",
    "user",
    "agent",
    "model",
    "backend",
    "deployment",
    "on_prem",
    "team",
)
STEPS = ("reading the month's rollups", "grouping the month's events by session", "TCO projection")
Progress = Callable[[str], None]
_DAY = timedelta(days=1)
# The totals rows of the views built elsewhere (the views of this module declare their own).
TOTALS = {
    "session_distribution": ("sessions", "session_share", "total_tokens", "token_share"),
    "top_sessions": ("requests", "total_tokens", "token_share", "cost_micro_usd", "cost_usd"),
    "tco_use_cases": (
        "tokens_per_month",
        "hosted_usd_per_month",
        "onprem_usd_per_month",
        "savings_usd_per_month",
    ),
}


class ExportError(Exception):
    """No export for this month; the message says why."""


class UnknownMonth(ExportError):
    """The month is not a calendar month written YYYY-MM."""


class EmptyMonth(ExportError):
    """The ledger recorded no request in the month."""


@dataclass(frozen=True, slots=True)
class Month:
    """A calendar month in UTC."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        match = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
        # up to 9998: the month's end (the next month's first instant) must still be a datetime
        year = int(match.group(1)) if match else 0
        if not match or not 1 <= int(match.group(2)) <= 12 or not 1970 <= year <= 9998:
            raise UnknownMonth(f"not a month: {text!r} (expected YYYY-MM, e.g. 2026-10)")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    @property
    def end(self) -> datetime:
        """The first instant of the next month (exclusive)."""
        year, month = divmod(self.year * 12 + self.month, 12)
        return datetime(year, month + 1, 1, tzinfo=UTC)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True, slots=True)
class MonthExport:
    """The month's views, its 80/20 sets and headlines, and both ways of counting its totals."""

    month: Month
    views: list[View]
    tokens: ParetoSet
    cost: ParetoSet
    totals: Sums
    events: EventTotals
    tco: LiveProjection | None
    by_scope: dict[str, Sums] = field(default_factory=dict)  # all, hosted, on_prem
    previous: dict[str, Sums] = field(default_factory=dict)  # the same, the month before
    invoice_note: str | None = None  # the reconciliation with the invoice, when given

    @property
    def headline(self) -> str:
        """ "N% of use cases carry M% of tokens"."""
        return headline(self.tokens, items="use cases", volume="tokens")

    @property
    def cost_headline(self) -> str:
        return headline(self.cost, items="use cases", volume="cost")

    @property
    def reconciled(self) -> bool:
        """True when the rollups' totals equal the raw events' (requests, tokens, cost)."""
        ev = self.events
        mine = (self.totals[0], total_tokens(self.totals), cost_micro(self.totals))
        return mine == (ev.requests, ev.total_tokens, ev.cost_micro_usd)

    def view(self, name: str) -> View:
        return next(v for v in self.views if v.name == name)


def build_month_export(
    engine: Engine,
    month: Month,
    *,
    tco: TcoInputs | None = None,
    config_budgets: Sequence[Budget] = (),
    now: datetime | None = None,
    progress: Progress | None = None,
) -> MonthExport:
    """All views of ``month``; EmptyMonth when the ledger has no request in it.

    ``config_budgets`` are the config file's budgets; the ledger's own (``/admin/budgets``,
    ``tokenmeter budgets``) are read here. Both are compared with the teams' spend.
    """
    step = progress or (lambda _: None)
    now = now or datetime.now(UTC)
    step(STEPS[0])
    cells = read_cells(engine, start=month.start, end=month.end)
    if not cells:
        raise EmptyMonth(_why_empty(engine, month, now))
    by_scope = _scopes(cells)
    groups: dict[str, dict[str, Sums]] = {name: {} for name, _ in GROUPINGS}
    by_cell: dict[tuple[Any, ...], Sums] = {}
    for labels, sums in cells:
        for name, key in GROUPINGS:
            add_into(groups[name].setdefault(labels[key], zero_sums()), sums)
        cell = tuple(labels[k] for k in CELL_KEYS)  # what the TCO projection tells apart
        add_into(by_cell.setdefault(cell, zero_sums()), sums)
    total = by_scope["all"]
    before = read_cells(engine, start=month.previous.start, end=month.previous.end)
    before_by: dict[str, dict[str, Sums]] = {"use_case": {}, "team": {}}
    for labels, sums in before:
        for key, acc in before_by.items():
            add_into(acc.setdefault(labels[key], zero_sums()), sums)
    # Every day of the month up to today (all of it once it is over), quiet days as zeros.
    last_day = min(month.end, max(now, month.start + _DAY)) - timedelta(microseconds=1)
    uc, teams, prior = groups["use_cases"], groups["teams"], str(month.previous)
    pareto = {
        "tokens": smallest_set((k, total_tokens(s)) for k, s in uc.items()),
        "cost": smallest_set((k, cost_micro(s)) for k, s in uc.items()),
    }
    views = [
        summary_view(str(month), by_scope),
        pareto_view({m: (p, headline(p, items="use cases", volume=m)) for m, p in pareto.items()}),
        *(group_view(name, key, groups[name], total) for name, key in GROUPINGS),
        days_view(cells, first=month.start.date(), last=last_day.date()),
        month_over_month_view("use_cases_mom", uc, before_by["use_case"], previous_month=prior),
        month_over_month_view("teams_mom", teams, before_by["team"], previous_month=prior),
        team_budgets_view(teams, [*config_budgets, *list_budgets(engine)]),
        line_items_view(cells),
    ]
    step(STEPS[1])
    sessions = read_sessions(engine, start=month.start, end=month.end)
    views += session_views(sessions, month_tokens=total_tokens(total))
    step(STEPS[2])
    result = None
    if tco is not None:
        end = min(month.end, max(now, month.start))
        result = month_projection(engine, tco, start=month.start, end=end, by_cell=by_cell)
        views += tco_views(result)
    return MonthExport(
        month,
        [_finish(v) for v in views],
        pareto["tokens"],
        pareto["cost"],
        total,
        sessions.events,
        result,
        by_scope=by_scope,
        previous=_scopes(before),
    )


def _finish(view: View) -> View:
    if view.name in TOTALS and not view.summed:
        view = replace(view, summed=TOTALS[view.name])
    # The summary's rows are not parts of one whole ("all" holds the others): it allots its own.
    return view if view.name == "summary" else settle_cents(view)


def _scopes(cells: list[Cell]) -> dict[str, Sums]:
    by_scope = {"all": zero_sums(), "hosted": zero_sums(), "on_prem": zero_sums()}
    for labels, sums in cells:
        add_into(by_scope["all"], sums)
        add_into(by_scope["on_prem" if labels["on_prem"] else "hosted"], sums)
    return by_scope


def read_cells(engine: Engine, *, start: datetime, end: datetime) -> list[Cell]:
    """Rollup sums of [start, end) per day (UTC), use case, user, agent, model, backend,
    deployment, on_prem and team: whole days come from the daily rollups (the hours at ragged
    edges from the hourly ones), so a month is read as one row per day and combination."""
    r = rollup_rows(start, end).c
    keys = [_utc_day(engine, r.at), *(r[k] for k in _CELL_KEYS[1:])]
    stmt = select(*keys, *(func.coalesce(func.sum(r[c]), 0) for c in ROLLUP_SUMS)).group_by(*keys)
    n = len(keys)
    with engine.connect() as conn:
        return [
            (dict(zip(_CELL_KEYS, row[:n], strict=True)), [int(v) for v in row[n:]])
            for row in conn.execute(stmt)
        ]


def _utc_day(engine: Engine, hour: Any) -> Any:
    # SQLite keeps the UTC time as text, whose date() is the UTC day; PostgreSQL's timestamptz
    # is cut in the session's time zone unless told UTC.
    if engine.dialect.name == "sqlite":
        return func.date(hour)
    return cast(func.timezone("UTC", hour), Date)


def _why_empty(engine: Engine, month: Month, now: datetime) -> str:
    if month.start > now:
        return f"{month} has not started yet: no requests to export"
    hour = _ROLLUPS.c.hour
    with engine.connect() as conn:
        first, last = conn.execute(select(func.min(hour), func.max(hour))).one()
    if first is None:
        return f"no requests in {month}: the ledger is empty"
    return f"no requests in {month}: the ledger has requests from {first:%Y-%m} to {last:%Y-%m}"
