"""Budgets in the ledger: calendar periods in UTC, spend read from the rollups equal to the raw
events' sums, the used share and the hard limit, stored budgets unique per subject and period."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cost.usage import TokenUsage
from metering.budgets import (
    Budget,
    BudgetConflict,
    Spend,
    create_budget,
    delete_budget,
    exceeded,
    list_budgets,
    period_start,
    read_spend,
    used_ratio,
)
from metering.store import create_db_engine, upgrade_schema
from metering.writer import insert_events
from tests.metering.factories import make_event

NOW = datetime(2026, 12, 3, 15, 30, tzinfo=UTC)  # a Thursday


@pytest.mark.parametrize(
    ("period", "now", "start"),
    [
        ("month", NOW, datetime(2026, 12, 1, tzinfo=UTC)),
        ("week", NOW, datetime(2026, 11, 30, tzinfo=UTC)),  # the Monday before
        ("day", NOW, datetime(2026, 12, 3, tzinfo=UTC)),
        ("month", datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        # 00:30 on the 1st in UTC+2 is still November in UTC
        (
            "month",
            datetime(2026, 12, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))),
            datetime(2026, 11, 1, tzinfo=UTC),
        ),
    ],
)
def test_periods_are_utc_calendar_periods(period, now, start):
    assert period_start(period, now) == start


def budget(**fields) -> Budget:
    base = {"id": "b", "scope": "team", "subject": "t", "period": "month",
            "limit_micro_usd": 1000, "limit_tokens": None}  # fmt: skip
    return Budget(**(base | fields))


@pytest.mark.parametrize(
    ("fields", "spend", "ratio", "over"),
    [
        ({}, Spend(999, 10**9), 0.999, False),
        ({}, Spend(1000, 0), 1.0, True),
        ({"limit_tokens": 100}, Spend(10, 100), 1.0, True),
        ({"limit_tokens": 100}, Spend(500, 20), 0.5, False),
        ({"limit_micro_usd": None, "limit_tokens": 100}, Spend(10**9, 25), 0.25, False),
        ({"limit_micro_usd": 0}, Spend(0, 0), 1.0, True),  # a limit of 0 refuses everything
    ],
)
def test_used_share_is_the_larger_of_the_limits(fields, spend, ratio, over):
    b = budget(**fields)
    assert used_ratio(b, spend) == pytest.approx(ratio)
    assert exceeded(b, spend) is over


def test_spend_is_the_sum_of_the_periods_events(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    rng = random.Random(3)
    month = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    events = [
        make_event(
            rng,
            started_at=t,
            team=team,
            key_id=f"key_{team}",
            usage=TokenUsage(input_tokens=rng.randint(0, 900), output_tokens=rng.randint(0, 90)),
            cost_micro_usd=rng.choice([None, rng.randint(0, 5000)]),
        )
        for t, team in [(month + rng.uniform(-86400, 3 * 86400), rng.choice("ab"))
                        for _ in range(200)]
    ]  # fmt: skip
    insert_events(engine, events)
    budgets = [
        budget(id="a-month", subject="a"),
        budget(id="b-month", subject="b"),
        budget(id="a-day", subject="a", period="day"),
        budget(id="none", subject="nobody"),
        budget(id="key", scope="key", subject="key_b"),
    ]
    now = datetime(2026, 12, 3, 23, 59, tzinfo=UTC)
    spend = read_spend(engine, budgets, now)

    def expected(team: str, since: datetime) -> Spend:
        mine = [e for e in events if e.team == team and e.started_at >= since.timestamp()]
        return Spend(sum(e.cost_micro_usd or 0 for e in mine),
                     sum(e.usage.total_tokens for e in mine))  # fmt: skip

    assert spend["a-month"] == expected("a", datetime(2026, 12, 1, tzinfo=UTC))
    assert spend["b-month"] == expected("b", datetime(2026, 12, 1, tzinfo=UTC))
    assert spend["a-day"] == expected("a", datetime(2026, 12, 3, tzinfo=UTC))
    assert spend["key"] == spend["b-month"]  # one key per team here
    assert spend["none"] == Spend()
    assert spend["a-month"].micro_usd > 0
    engine.dispose()


def test_stored_budgets_are_unique_per_subject_and_period(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    made = create_budget(engine, scope="user", subject="alice", limit_micro_usd=5)
    create_budget(engine, scope="user", subject="alice", period="day", limit_tokens=7)
    with pytest.raises(BudgetConflict):
        create_budget(engine, scope="user", subject="alice", limit_tokens=1)
    with pytest.raises(ValueError, match="needs a USD limit"):
        create_budget(engine, scope="user", subject="bob")
    assert [(b.period, b.source) for b in list_budgets(engine)] == [
        ("month", "api"),
        ("day", "api"),
    ]
    assert delete_budget(engine, made.id) is True
    assert delete_budget(engine, made.id) is False
    assert [b.period for b in list_budgets(engine)] == ["day"]
    engine.dispose()


def test_an_own_event_is_counted_once_whether_or_not_the_spend_has_it_yet(db_url):
    """The gateway's guard adds its own recent events to the spend it read: an event the
    database already holds when the spend is read must not count twice, one it does not yet
    hold must still count (whenever the ledger commits it)."""
    import asyncio

    from metering.ledger import Ledger
    from proxy.gateway.governance.budgets import BudgetGuard
    from tests.metering.test_ledger_record import CollectingSink

    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    now = datetime.now(UTC)
    limit = budget(scope="team", subject="t", limit_tokens=1000)

    class FreePrices:
        def price(self, *args, **kwargs) -> int:
            return 0

    ledger = Ledger(writer=CollectingSink(), prices=FreePrices(), reject_unjournaled=True)
    guard = BudgetGuard(engine, ledger, config=[limit], refresh_interval_s=60)

    def event(tokens: int):
        return make_event(
            team="t", started_at=now.timestamp(), usage=TokenUsage(input_tokens=tokens)
        )

    async def scenario() -> None:
        await guard.refresh()
        committed, pending = event(300), event(200)
        for e in (committed, pending):
            ledger.record(e)
        assert guard.spend(limit).tokens == 500
        insert_events(engine, [committed])  # the ledger commits one of the two
        await guard.refresh()
        assert guard.spend(limit).tokens == 500  # 300 from the database, 200 still local
        insert_events(engine, [pending])
        await guard.refresh()
        assert guard.spend(limit).tokens == 500  # both from the database, none local

    asyncio.run(scenario())
