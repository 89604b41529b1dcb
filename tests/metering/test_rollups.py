"""Rollups always equal the sum of their events, on both engines."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from metering.store import create_db_engine, upgrade_schema
from metering.writer import insert_events
from tests.metering.factories import make_event

SUMS = ("input_tokens", "output_tokens", "cost_micro_usd")
KEYS = 'use_case, "user", agent, key_id, model, backend, deployment, on_prem'


def totals_by_key(engine) -> tuple[dict, dict]:
    q_events = (
        f"SELECT {KEYS}, COUNT(*), SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END), "
        f"{', '.join(f'SUM({c})' for c in SUMS)} FROM usage_events GROUP BY {KEYS}"
    )
    q_rollups = (
        f"SELECT {KEYS}, SUM(requests), SUM(errors), "
        f"{', '.join(f'SUM({c})' for c in SUMS)} FROM usage_rollups_hourly "
        f"GROUP BY {KEYS}"
    )
    with engine.connect() as conn:
        events = {tuple(r[:8]): tuple(int(x) for x in r[8:]) for r in conn.execute(text(q_events))}
        rollups = {
            tuple(r[:8]): tuple(int(x) for x in r[8:]) for r in conn.execute(text(q_rollups))
        }
    return events, rollups


def apply_traffic(engine, seed: int, n: int, batch: int, replay_every: int) -> None:
    rng = random.Random(seed)
    events = [make_event(rng) for _ in range(n)]
    for i in range(0, n, batch):
        insert_events(engine, events[i : i + batch])
        if replay_every and (i // batch) % replay_every == 0:
            insert_events(engine, events[max(0, i - batch) : i + batch])  # a replay overlapping it


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 300),
    batch=st.integers(1, 64),
    replay_every=st.integers(0, 3),
)
def test_rollups_equal_event_sums_after_random_traffic(
    tmp_path_factory, seed, n, batch, replay_every
):
    engine = create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('p') / 'ledger.db'}")
    upgrade_schema(engine)
    apply_traffic(engine, seed, n, batch, replay_every)
    events, rollups = totals_by_key(engine)
    assert rollups == events
    assert sum(v[0] for v in events.values()) == n
    engine.dispose()


def test_rollups_equal_event_sums_on_both_engines(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    apply_traffic(engine, seed=7, n=500, batch=37, replay_every=2)
    events, rollups = totals_by_key(engine)
    assert rollups == events
    assert sum(v[0] for v in events.values()) == 500
    engine.dispose()


def test_rollups_are_keyed_by_hour(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    rng = random.Random(3)
    t0 = 1_790_000_000.0 - (1_790_000_000.0 % 3600)
    insert_events(
        engine,
        [
            make_event(rng, started_at=t0 + 60, user="u", key_id="k"),
            make_event(rng, started_at=t0 + 3000, user="u", key_id="k"),
            make_event(rng, started_at=t0 + 3600 + 5, user="u", key_id="k"),
        ],
    )
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT hour, SUM(requests) FROM usage_rollups_hourly GROUP BY hour ORDER BY hour")
        ).all()
    assert [int(r[1]) for r in rows] == [2, 1]
    engine.dispose()


def test_minute_and_session_rollups_equal_the_events(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    apply_traffic(engine, seed=11, n=400, batch=29, replay_every=2)
    pg = engine.dialect.name == "postgresql"
    minute = "date_trunc('minute', started_at)" if pg else "substr(started_at, 1, 16)"
    month = (
        "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM')" if pg else "substr(started_at, 1, 7)"
    )
    with engine.connect() as conn:
        by_minute = sorted(
            tuple(map(int, r))
            for r in conn.execute(
                text(
                    f"SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens) FROM usage_events "
                    f"GROUP BY {minute}"
                )
            )
        )
        minutes = sorted(
            tuple(map(int, r))
            for r in conn.execute(
                text("SELECT requests, input_tokens, output_tokens FROM usage_minutes")
            )
        )
        by_session = sorted(
            (r[0], r[1], *map(int, r[2:]))
            for r in conn.execute(
                text(
                    f"SELECT {month}, session, COUNT(*), SUM(input_tokens + output_tokens), "
                    f"SUM(cost_micro_usd) FROM usage_events GROUP BY {month}, session"
                )
            )
        )
        sessions = sorted(
            (r[0], r[1], *map(int, r[2:]))
            for r in conn.execute(
                text(
                    "SELECT month, session, requests, total_tokens, cost_micro_usd "
                    "FROM usage_sessions_monthly"
                )
            )
        )
    assert minutes == by_minute and sum(m[0] for m in minutes) == 400
    assert sessions == by_session
    engine.dispose()
