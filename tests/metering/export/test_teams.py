"""The team (cost-centre) views: budget vs actual per team against monthly budgets from the config
and from the ledger, and month over month per team, reopened in every format and checked against
the raw events (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from cost.usage import TokenUsage
from metering.budgets import Budget, create_budget
from metering.events import UsageEvent
from metering.export.files import FORMATS
from metering.export.month import MonthExport, build_month_export
from metering.export.team_budgets import team_budgets_view
from metering.export.views import usd, zero_sums
from metering.store import create_db_engine, upgrade_schema
from metering.tables import ROLLUP_SUMS
from metering.writer import insert_events
from tests.metering.export.month_data import (
    INT_METRICS,
    MONTH,
    TEAMS,
    ledger_sums,
    money,
    month_events,
    read_views,
    write_any,
)
from tests.metering.factories import make_event

PREVIOUS = MONTH.previous
PREVIOUS_TEAMS = {"key_a": "platform", "key_d": "legal"}  # legal spent last month only
ZERO = dict.fromkeys(INT_METRICS, 0)
SHOWN = ("requests", "total_tokens", "cost_micro_usd")  # the actual columns of team_budgets


def previous_month_events(n: int, *, seed: int = 11) -> list[UsageEvent]:
    rng = random.Random(seed)
    start, end = PREVIOUS.start.timestamp(), PREVIOUS.end.timestamp()
    events = []
    for _ in range(n):
        key_id = rng.choice(sorted(PREVIOUS_TEAMS))
        usage = TokenUsage(input_tokens=rng.randint(0, 9000), output_tokens=rng.randint(0, 900))
        events.append(
            make_event(
                rng,
                key_id=key_id,
                team=PREVIOUS_TEAMS[key_id],
                started_at=rng.uniform(start, end),
                usage=usage,
                cost_micro_usd=rng.randint(0, 90_000),
            )
        )
    return events


@pytest.fixture
def ledger(db_url: str):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    insert_events(engine, month_events(600))
    insert_events(engine, previous_month_events(300))
    yield engine
    engine.dispose()


def month_budgets(engine: Engine) -> list[Budget]:
    """Budgets around the month's actual spend: platform ok on USD (twice its cost in the config,
    three times in the ledger) and past the soft threshold on tokens; research exceeded, with a
    weekly budget beside; finance budgeted without requests. Returns the config's budgets."""
    spent = ledger_sums(engine, "team")
    platform, research = spent["platform"], spent["research"]
    create_budget(
        engine,
        scope="team",
        subject="platform",
        limit_micro_usd=3 * platform["cost_micro_usd"],
        limit_tokens=-(-platform["total_tokens"] * 10 // 9),  # used 90 %, soft from 80 %
    )
    create_budget(
        engine, scope="team", subject="research", limit_micro_usd=research["cost_micro_usd"] // 2
    )
    create_budget(engine, scope="team", subject="research", period="week", limit_tokens=1000)
    create_budget(engine, scope="user", subject="alice", limit_micro_usd=1)  # not a team's
    return [
        Budget(
            "config:team:platform:month",
            "team",
            "platform",
            "month",
            2 * platform["cost_micro_usd"],
            None,
        ),
        Budget(
            "config:team:finance:month",
            "team",
            "finance",
            "month",
            1_000_000_000,
            None,
            soft_ratio=0.5,
        ),
    ]


@pytest.fixture
def export(ledger) -> MonthExport:
    return build_month_export(ledger, MONTH, config_budgets=month_budgets(ledger))


def typed(rows: list[dict[str, Any]], export: MonthExport, view: str) -> dict[str, dict[str, Any]]:
    """A reopened view's rows by their first column, values as Python numbers (CSV cells are
    text; an empty cell is None in every format)."""
    kinds = {c.name: c.kind for c in export.view(view).columns}
    convert = {"int": int, "usd": money, "share": float, "str": str}
    out = {}
    for row in rows:
        values = {k: None if v is None or v == "" else convert[kinds[k]](v) for k, v in row.items()}
        out[next(iter(values.values()))] = values
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_team_budgets_set_each_teams_spend_against_its_monthly_budgets(
    ledger, export, fmt, tmp_path: Path
):
    rows = typed(
        read_views(write_any(export, fmt, tmp_path), fmt)["team_budgets"], export, "team_budgets"
    )
    spent = ledger_sums(ledger, "team")
    assert set(rows) == {*spent, "finance"}
    for team, row in rows.items():
        actual = spent.get(team, ZERO)
        assert (row["requests"], row["total_tokens"], row["cost_micro_usd"]) == (
            actual["requests"],
            actual["total_tokens"],
            actual["cost_micro_usd"],
        ), team
    platform, research, finance = rows["platform"], rows["research"], rows["finance"]
    cost = spent["platform"]["cost_micro_usd"]
    assert platform["budget_micro_usd"] == 2 * cost  # the smaller of config's and ledger's
    assert platform["budget_usd"] == usd(2 * cost)
    assert platform["remaining_micro_usd"] == cost
    assert platform["remaining_usd"] == platform["budget_usd"] - platform["cost_usd"]
    assert platform["cost_used_share"] == pytest.approx(0.5)
    assert platform["cost_status"] == "ok"
    assert platform["token_used_share"] == pytest.approx(0.9, abs=1e-6)
    assert (platform["token_status"], platform["status"]) == ("soft", "soft")
    assert platform["budgets"].startswith("config:team:platform:month, bud_")
    assert research["remaining_micro_usd"] < 0 and research["cost_used_share"] >= 2
    assert (research["cost_status"], research["status"]) == ("exceeded", "exceeded")
    assert research["other_budgets"] == "team:research:week 1,000 tokens"
    assert (finance["cost_micro_usd"], finance["status"]) == (0, "ok")
    assert finance["budget_usd"] == Decimal("1000.00")
    for empty in ("budget_tokens", "remaining_tokens", "token_used_share", "token_status"):
        assert research[empty] is None and finance[empty] is None, empty


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_a_team_without_a_budget_shows_blank_budget_columns(ledger, fmt, tmp_path: Path):
    export = build_month_export(ledger, MONTH)  # no budget at all
    rows = read_views(write_any(export, fmt, tmp_path), fmt)["team_budgets"]
    actual = {"team", *SHOWN, "cost_usd"}
    budget_columns = [c.name for c in export.view("team_budgets").columns if c.name not in actual]
    assert len(budget_columns) == 13
    assert rows and {r[c] for r in rows for c in budget_columns} <= {None, ""}


def test_team_totals_are_the_sums_of_their_keys(ledger, export):
    by_key = ledger_sums(ledger, "key_id")
    expected: dict[str, dict[str, int]] = {}
    for key_id, sums in by_key.items():
        acc = expected.setdefault(TEAMS.get(key_id, PREVIOUS_TEAMS.get(key_id, "")), dict(ZERO))
        for m in INT_METRICS:
            acc[m] += sums[m]
    for view in ("teams", "team_budgets"):
        rows = {r["team"]: r for r in export.view(view).records() if r["requests"]}
        assert {t: tuple(r[m] for m in SHOWN) for t, r in rows.items()} == {
            t: tuple(s[m] for m in SHOWN) for t, s in expected.items()
        }, view
    [total] = (r for r in export.view("summary").records() if r["scope"] == "all")
    budgets = export.view("team_budgets")
    at = [c.name for c in budgets.columns].index("cost_usd")
    assert budgets.total_row()[at] == total["cost_usd"]  # cents that add up


@pytest.mark.parametrize("fmt", ["xlsx", "parquet", "csv.zip"])
def test_teams_month_over_month_against_both_months_events(ledger, export, fmt, tmp_path: Path):
    rows = typed(
        read_views(write_any(export, fmt, tmp_path), fmt)["teams_mom"], export, "teams_mom"
    )
    now = ledger_sums(ledger, "team")
    before = ledger_sums(ledger, "team", start=PREVIOUS.start, end=PREVIOUS.end)
    assert {"platform", "legal"} <= set(before)  # and the team of MONTH's edge event before it
    assert set(rows) == set(now) | set(before)
    for team, row in rows.items():
        n, b = now.get(team, ZERO), before.get(team, ZERO)
        assert (row["requests"], row["requests_previous"]) == (n["requests"], b["requests"])
        assert (row["total_tokens"], row["total_tokens_previous"]) == (
            n["total_tokens"],
            b["total_tokens"],
        )
        assert (row["cost_micro_usd"], row["cost_previous_micro_usd"]) == (
            n["cost_micro_usd"],
            b["cost_micro_usd"],
        )
        assert row["cost_change_usd"] == row["cost_usd"] - row["cost_previous_usd"]
        assert abs(row["cost_previous_usd"] - Decimal(b["cost_micro_usd"]).scaleb(-6)) < Decimal(
            "0.01"
        )
        if b["cost_micro_usd"]:
            expected = n["cost_micro_usd"] / b["cost_micro_usd"] - 1
            assert row["cost_change"] == pytest.approx(expected), team
        else:
            assert row["cost_change"] is None
    assert rows["legal"]["requests"] == 0 and rows["legal"]["cost_change"] == -1.0
    costs = [r["cost_micro_usd"] for r in rows.values()]
    assert costs == sorted(costs, reverse=True)
    previous_total = sum(s["cost_micro_usd"] for s in before.values())
    assert sum(r["cost_previous_usd"] for r in rows.values()) == usd(previous_total)


def sums(*, cost_micro_usd: int, tokens: int) -> list[int]:
    s = zero_sums()
    s[ROLLUP_SUMS.index("requests")] = 1
    s[ROLLUP_SUMS.index("cost_micro_usd")] = cost_micro_usd
    s[ROLLUP_SUMS.index("input_tokens")] = tokens
    return s


@pytest.mark.parametrize(
    ("limit_micro_usd", "limit_tokens", "expected"),
    [
        (1_000_000, None, ("ok", None, "ok")),  # 79.9 % of the USD limit
        (998_750, None, ("soft", None, "soft")),  # exactly 80 %: past the soft threshold
        (799_000, None, ("exceeded", None, "exceeded")),  # at the limit: refused from here
        (None, 1000, (None, "exceeded", "exceeded")),  # 1,000 of 1,000 tokens
        (None, 1250, (None, "soft", "soft")),  # 80 % of the tokens
        (0, None, ("exceeded", None, "exceeded")),  # a limit of 0 refuses everything
    ],
)
def test_statuses_at_the_edges_of_a_limit(limit_micro_usd, limit_tokens, expected):
    budget = Budget("b", "team", "t", "month", limit_micro_usd, limit_tokens)
    view = team_budgets_view({"t": sums(cost_micro_usd=799_000, tokens=1000)}, [budget])
    [row] = view.records()
    assert (row["cost_status"], row["token_status"], row["status"]) == expected
    if limit_micro_usd == 0:
        assert row["cost_used_share"] == 1.0 and row["remaining_micro_usd"] == -799_000


def test_weekly_daily_and_other_scopes_are_not_compared_with_the_month():
    budgets = [
        Budget("w", "team", "t", "week", 50_000_000, None),
        Budget("d", "team", "t", "day", None, 5),
        Budget("u", "user", "t", "month", 1, None),
    ]
    [row] = team_budgets_view({"t": sums(cost_micro_usd=10, tokens=10)}, budgets).records()
    assert row["budgets"] is None and row["status"] is None and row["budget_usd"] is None
    assert row["other_budgets"] == "team:t:day 5 tokens; team:t:week $50.00"
