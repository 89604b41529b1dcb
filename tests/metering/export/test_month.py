"""The monthly export in every format, reopened with each format's own reader: its views are
there and its totals equal the raw events' to the micro-dollar (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import combinations
from pathlib import Path

import pytest

from metering.export.files import FORMATS
from metering.export.month import EmptyMonth, Month, MonthExport, UnknownMonth, build_month_export
from metering.export.pareto import headline, smallest_set
from metering.export.views import usd
from metering.store import create_db_engine, upgrade_schema
from metering.writer import insert_events
from tests.metering.export.month_data import (
    INT_METRICS,
    MONTH,
    ledger_sums,
    metrics,
    money,
    month_events,
    read_views,
    tco_inputs,
    write_any,
)

VIEWS = {
    "summary", "pareto", "use_cases", "agents", "users", "models", "backends", "teams",
    "sessions",
    "session_distribution", "top_sessions", "tco", "tco_use_cases", "days", "use_cases_mom",
    "teams_mom", "team_budgets", "line_items",
}  # fmt: skip
GROUP_VIEWS = {
    "use_cases": "use_case", "agents": "agent", "users": "user", "models": "model",
    "backends": "backend", "teams": "team",
}  # fmt: skip


@pytest.fixture
def ledger(db_url: str):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    events = month_events(1500)
    for i in range(0, len(events), 500):
        insert_events(engine, events[i : i + 500])
    yield engine
    engine.dispose()


@pytest.fixture
def export(ledger) -> MonthExport:
    return build_month_export(ledger, MONTH, tco=tco_inputs())


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_view_reconciles_with_the_raw_events(ledger, export, fmt, tmp_path: Path):
    views = read_views(write_any(export, fmt, tmp_path), fmt)
    assert set(views) == VIEWS
    [(_, total)] = ledger_sums(ledger).items()
    rows = {r["scope"]: r for r in views["summary"]}
    assert metrics(rows["all"]) == total
    assert money(rows["all"]["cost_usd"]) == usd(total["cost_micro_usd"])
    by_prem = ledger_sums(ledger, "on_prem")
    assert metrics(rows["on_prem"]) == by_prem[True]
    assert metrics(rows["hosted"]) == by_prem[False]
    for view, key in GROUP_VIEWS.items():
        assert {r[key]: metrics(r) for r in views[view]} == ledger_sums(ledger, key), view
        tokens = [int(r["total_tokens"]) for r in views[view]]
        assert tokens == sorted(tokens, reverse=True)
    tco = {r["item"]: r["text"] for r in views["tco"]}
    assert tco["status"] == "ok" and tco["verdict"] == export.tco.verdict
    # Hosted today is the month's metered hosted bill, scaled to a 30.44-day month.
    numbers = {r["item"]: r["value"] for r in views["tco"]}
    billed = by_prem[False]["cost_micro_usd"] / 1e6 * float(numbers["extrapolation_factor"])
    assert float(numbers["hosted_usd_per_month"]) == pytest.approx(billed, rel=1e-9)
    line_items: dict[str, dict[str, int]] = {}
    for r in views["line_items"]:
        acc = line_items.setdefault(r["use_case"], dict.fromkeys(INT_METRICS, 0))
        for m in INT_METRICS:
            acc[m] += int(r[m])
    assert line_items == ledger_sums(ledger, "use_case")


@pytest.mark.parametrize("fmt", ["xlsx", "parquet"])
def test_days_cover_the_month_and_match_each_days_events(ledger, export, fmt, tmp_path: Path):
    views = read_views(write_any(export, fmt, tmp_path), fmt)
    days = views["days"]
    assert len(days) == 31
    for r in days:
        day = r["day"] if isinstance(r["day"], date) else date.fromisoformat(str(r["day"])[:10])
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        expected = ledger_sums(ledger, start=start, end=start + timedelta(days=1))
        assert metrics(r) == expected.get("all", dict.fromkeys(INT_METRICS, 0)), day


def test_month_over_month_compares_with_the_previous_months_events(ledger, export):
    mom = {r["use_case"]: r for r in export.view("use_cases_mom").records()}
    previous = MONTH.previous
    before = ledger_sums(ledger, "use_case", start=previous.start, end=previous.end)
    now = ledger_sums(ledger, "use_case")
    assert before, "the generated month has an event just before it"
    assert set(mom) == set(now) | set(before)
    for use_case, row in mom.items():
        b = before.get(use_case, dict.fromkeys(INT_METRICS, 0))
        assert row["requests_previous"] == b["requests"]
        assert row["cost_previous_micro_usd"] == b["cost_micro_usd"]
        assert row["total_tokens"] == now.get(use_case, b)["total_tokens"] or use_case not in now
        assert row["cost_change_usd"] == row["cost_usd"] - row["cost_previous_usd"]
        if b["total_tokens"]:
            expected = row["total_tokens"] / b["total_tokens"] - 1
            assert row["token_change"] == pytest.approx(expected)
        else:
            assert row["token_change"] is None


def test_cents_add_up_on_every_view(export):
    for view in export.views:
        names = [c.name for c in view.columns]
        for c in view.columns:
            twin = c.name.removesuffix("_usd") + "_micro_usd"
            # the columns that add up (a team's budget is its own, not a part of one whole)
            if c.name not in view.summed or twin not in names:
                continue
            cents = [r[c.name] for r in view.records()]
            exact = sum(r[twin] for r in view.records())
            assert sum(cents) == usd(exact), (view.name, c.name)
            for r in view.records():  # no row moves by a cent or more from its exact amount
                assert abs(r[c.name] - Decimal(r[twin]).scaleb(-6)) < Decimal("0.01")
            total = view.total_row()
            if total is not None:
                assert total[names.index(c.name)] == sum(cents), (view.name, c.name)
    rows = {r["scope"]: r for r in export.view("summary").records()}
    assert rows["hosted"]["cost_usd"] + rows["on_prem"]["cost_usd"] == rows["all"]["cost_usd"]
    month_usd = rows["all"]["cost_usd"]
    views = ("use_cases", "agents", "users", "models", "backends", "teams", "days", "line_items")
    for name in (*views, "use_cases_mom", "teams_mom", "team_budgets"):
        assert sum(r["cost_usd"] for r in export.view(name).records()) == month_usd, name


@pytest.mark.parametrize("fmt", FORMATS)
def test_sessions_match_the_raw_events(ledger, export, fmt, tmp_path: Path):
    views = read_views(write_any(export, fmt, tmp_path), fmt)
    by_session = ledger_sums(ledger, "session")
    no_session = by_session.pop("unknown")
    [summary] = views["sessions"]
    assert int(summary["sessions"]) == len(by_session)
    assert int(summary["requests_without_session"]) == no_session["requests"]
    assert int(summary["total_tokens"]) == sum(s["total_tokens"] for s in by_session.values())
    for row in views["top_sessions"]:
        expected = by_session[row["session"]]
        assert int(row["total_tokens"]) == expected["total_tokens"]
        assert int(row["cost_micro_usd"]) == expected["cost_micro_usd"]
    buckets = views["session_distribution"]
    assert sum(int(b["sessions"]) for b in buckets) == len(by_session)


def test_the_80_percent_set_is_the_smallest_such_set(ledger, export):
    volumes = {k: v["total_tokens"] for k, v in ledger_sums(ledger, "use_case").items()}
    total = sum(volumes.values())
    smallest = next(
        k
        for k in range(len(volumes) + 1)
        for subset in combinations(volumes.values(), k)
        if 5 * sum(subset) >= 4 * total
    )
    assert len(export.tokens.members) == smallest
    expected = headline(smallest_set(volumes.items()), items="use cases", volume="tokens")
    assert export.headline == expected
    [row] = [r for r in export.view("pareto").records() if r["metric"] == "tokens"]
    assert row["headline"] == expected and row["use_cases_in_set"] == smallest


def test_rollups_and_events_reconcile(export):
    assert export.reconciled


def test_empty_month_says_which_months_have_traffic(ledger):
    with pytest.raises(EmptyMonth, match=r"no requests in 2026-05: .* 2026-09 to 2026-11"):
        build_month_export(ledger, Month(2026, 5))


def test_empty_ledger_says_so(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    with pytest.raises(EmptyMonth, match="the ledger is empty"):
        build_month_export(engine, MONTH)
    engine.dispose()


def test_future_month_has_not_started(ledger):
    with pytest.raises(EmptyMonth, match="has not started yet"):
        build_month_export(ledger, Month(2999, 1))


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-1", "october", "", "26-10"])
def test_unknown_month_is_rejected(text):
    with pytest.raises(UnknownMonth, match="expected YYYY-MM"):
        Month.parse(text)


def test_month_bounds_roll_over_the_year():
    december = Month.parse("2026-12")
    assert (december.start.isoformat(), december.end.isoformat()) == (
        "2026-12-01T00:00:00+00:00",
        "2027-01-01T00:00:00+00:00",
    )
