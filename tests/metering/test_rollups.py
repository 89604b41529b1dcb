"""Rollups always equal the sum of their events, on both engines; and, summed by the database
from each batch, they equal sums over the raw events done here in Python: across hour, day,
month and year edges, for labels outside ASCII (bounds in code point order), unpriced and
errored requests, and batches replayed or holding an event twice."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from metering.ingest import insert_rows
from metering.rollups import LABELS
from metering.store import create_db_engine, upgrade_schema
from metering.tables import DAILY, MINUTES, ROLLUP_KEYS, ROLLUP_SUMS, ROLLUPS, SESSIONS
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


NEW_YEAR = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
NAMES = ["alice", "Bob", "bob", "zoë", "Ωmega", "ärger", "日本", "😀x", "z"]
TOKENS = ROLLUP_SUMS[3:-1]  # summed as they are (cost_micro_usd may be unknown)


def events(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        started = NEW_YEAR + rng.uniform(-2 * 86400, 86400)
        if i % 17 == 0:  # rounds up to the next microsecond, minute, hour, day and year
            started = NEW_YEAR - 0.0000004
        event = make_event(
            rng,
            started_at=started,
            user=rng.choice(NAMES),
            agent=rng.choice(NAMES[:4]),
            use_case=rng.choice(NAMES[3:]),
            session=f"s{rng.randint(0, 6)}",
            key_id=rng.choice(["key_a", "key_b"]),
            on_prem=rng.random() < 0.5,
            team=rng.choice(["", "platform"]),
            error_code=rng.choice(["", "", "rate_limited"]),
            cost_micro_usd=rng.choice([None, 0, rng.randint(1, 9_000)]),
        )
        row = event.flat()
        if i % 11 == 0:  # refused before the upstream counted anything: not unpriced
            row["input_tokens"] = row["output_tokens"] = 0
        out.append(row)
    return out


def expected(rows: list[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    hourly: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * len(ROLLUP_SUMS))
    daily: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * len(ROLLUP_SUMS))
    minutes: dict[datetime, list[int]] = defaultdict(lambda: [0, 0, 0])
    sessions: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        t = datetime.fromtimestamp(r["started_at"], UTC).replace(tzinfo=None)
        labels = tuple(r[k] for k in ROLLUP_KEYS[1:])
        spent = r["input_tokens"] or r["output_tokens"]
        sums = [
            1,
            r["status"] != "ok",
            r["cost_micro_usd"] is None and bool(spent),
            *(r[c] for c in TOKENS),
            r["cost_micro_usd"] or 0,
        ]
        for acc in (
            hourly[(t.replace(minute=0, second=0, microsecond=0), *labels)],
            daily[(t.replace(hour=0, minute=0, second=0, microsecond=0), *labels)],
        ):
            for i, v in enumerate(sums):
                acc[i] += v
        m = minutes[t.replace(second=0, microsecond=0)]
        m[0], m[1], m[2] = m[0] + 1, m[1] + r["input_tokens"], m[2] + r["output_tokens"]
        s = sessions.setdefault(
            (f"{t:%Y-%m}", r["session"]),
            {"n": 0, "tokens": 0, "cost": 0, "first": t, "last": t, "labels": {}},
        )
        s["n"] += 1
        s["tokens"] += r["input_tokens"] + r["output_tokens"]
        s["cost"] += r["cost_micro_usd"] or 0
        s["first"], s["last"] = min(s["first"], t), max(s["last"], t)
        for c in LABELS:
            low, high = s["labels"].get(c, (r[c], r[c]))
            s["labels"][c] = (min(low, r[c]), max(high, r[c]))
    return {
        "hourly": sorted((*k, *v) for k, v in hourly.items()),
        "daily": sorted((*k, *v) for k, v in daily.items()),
        "minutes": sorted((k, *v) for k, v in minutes.items()),
        "sessions": sorted(
            (*k, s["n"], s["tokens"], s["cost"], *bounds(s["labels"]), s["first"], s["last"])
            for k, s in sessions.items()
        ),
    }


def bounds(labels: dict[str, tuple[str, str]]) -> list[str]:
    return [b for c in LABELS for b in labels[c]]


def stored(engine) -> dict[str, list[tuple[Any, ...]]]:
    def naive(v: Any) -> Any:
        return v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) and v.tzinfo else v

    with engine.connect() as conn:
        return {
            name: sorted(tuple(naive(v) for v in row) for row in conn.execute(select(table)))
            for name, table in (
                ("hourly", ROLLUPS),
                ("daily", DAILY),
                ("minutes", MINUTES),
                ("sessions", SESSIONS),
            )
        }


def test_rollups_equal_sums_over_the_raw_events(db_url):
    rng = random.Random(11)
    rows = events(rng, 400)
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    start, new = 0, 0
    while start < len(rows):
        size = rng.randint(1, 90)
        batch = rows[start : start + size]
        replayed = rows[max(0, start - 5) : start]  # a crash between commit and checkpoint
        new += insert_rows(engine, [*replayed, *batch, *batch[:2]])
        start += size
    assert new == len(rows)
    assert insert_rows(engine, rows[:50]) == 0  # a whole batch replayed adds nothing
    assert stored(engine) == expected(rows)
