"""Windows on whole hours read the daily rollups for their whole UTC days and the hourly ones at
their edges; either way the answer equals the raw events'."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import DateTime, bindparam, text

from metering.queries import usage_summary
from metering.store import create_db_engine, upgrade_schema
from metering.writer import insert_events
from tests.metering.factories import make_event

DAY0 = datetime(2026, 10, 30, tzinfo=UTC)  # the events span 30 Oct .. 2 Nov (a month's edge)


@pytest.fixture
def ledger(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    rng = random.Random(5)
    span = 4 * 86_400
    events = [
        make_event(rng, started_at=DAY0.timestamp() + rng.uniform(0, span)) for _ in range(600)
    ]
    for i in range(0, len(events), 70):
        insert_events(engine, events[i : i + 70])
    insert_events(engine, events[:140])  # a replay
    yield engine
    engine.dispose()


def test_daily_rollups_equal_the_events_per_utc_day(ledger):
    pg = ledger.dialect.name == "postgresql"
    day = "date_trunc('day', started_at, 'UTC')" if pg else "substr(started_at, 1, 10)"
    rollup_day = "date_trunc('day', day, 'UTC')" if pg else "substr(day, 1, 10)"
    with ledger.connect() as conn:
        events = conn.execute(
            text(
                f'SELECT {day}, "user", COUNT(*), SUM(input_tokens), SUM(cost_micro_usd) '
                f'FROM usage_events GROUP BY {day}, "user"'
            )
        ).all()
        daily = conn.execute(
            text(
                f'SELECT {rollup_day}, "user", SUM(requests), SUM(input_tokens), '
                f'SUM(cost_micro_usd) FROM usage_rollups_daily GROUP BY {rollup_day}, "user"'
            )
        ).all()
    assert len(events) > 10
    assert sorted(map(_ints, daily)) == sorted(map(_ints, events))


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (None, None),
        (DAY0 + timedelta(hours=5), DAY0 + timedelta(days=2, hours=19)),  # ragged both ends
        (DAY0 + timedelta(days=1), DAY0 + timedelta(days=3)),  # whole days only
        (DAY0 + timedelta(hours=3), DAY0 + timedelta(hours=9)),  # within one day
        (DAY0 + timedelta(days=1, hours=7), None),
        (None, DAY0 + timedelta(days=2, hours=1)),
    ],
)
def test_usage_on_whole_hours_equals_the_events(ledger, since, until):
    source, rows = usage_summary(ledger, group_by=["user", "model"], since=since, until=until)
    assert source == "rollups"
    got = {
        (r["user"], r["model"], r["requests"], r["input_tokens"], r["cost_micro_usd"]) for r in rows
    }
    assert got and got == _events(ledger, since, until)


def _events(engine, since, until) -> set[tuple]:
    where, params = [], {}
    if since is not None:
        where.append("started_at >= :since")
        params["since"] = since
    if until is not None:
        where.append("started_at < :until")
        params["until"] = until
    sql = (
        'SELECT "user", model, COUNT(*), SUM(input_tokens), SUM(cost_micro_usd) FROM usage_events '
        + (f"WHERE {' AND '.join(where)} " if where else "")
        + 'GROUP BY "user", model'
    )
    with engine.connect() as conn:
        stmt = text(sql).bindparams(*(bindparam(k, type_=DateTime(timezone=True)) for k in params))
        return {(u, m, *map(int, v)) for u, m, *v in conn.execute(stmt, params)}


def _ints(row) -> tuple:
    return (str(row[0])[:10], row[1], *(int(v) for v in row[2:]))
