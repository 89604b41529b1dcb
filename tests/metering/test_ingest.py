"""The batch insert binds values through the driver itself: every column must read back exactly
as SQLAlchemy's own types would have written it, on both engines."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from sqlalchemy import insert, select, text

from metering.ingest import EVENTS, MINUTES, ROLLUPS, SESSIONS, insert_rows
from metering.store import create_db_engine, upgrade_schema
from tests.metering.factories import event_row, make_event


def test_events_are_stored_as_sqlalchemy_would_store_them(db_url, tmp_path):
    rng = random.Random(7)
    events = [make_event(rng) for _ in range(40)]
    events[0].started_at = 1_767_225_599.9999996  # rounds up across a year, month, hour edge
    events[1].cost_micro_usd, events[1].ttft_s = None, None
    ours = create_db_engine(db_url)
    upgrade_schema(ours)
    reference = create_db_engine(f"sqlite:///{tmp_path / 'reference.db'}")
    upgrade_schema(reference)
    assert insert_rows(ours, [e.flat() for e in events]) == 40
    with reference.begin() as conn:
        conn.execute(insert(EVENTS), [event_row(e) for e in events])
    with ours.connect() as a, reference.connect() as b:
        read = select(EVENTS).order_by(EVENTS.c.id)
        assert _utc(a.execute(read)) == _utc(b.execute(read))
        if ours.dialect.name == "sqlite":  # and byte for byte where the storage is text
            raw = text("SELECT * FROM usage_events ORDER BY id")
            assert list(a.execute(raw)) == list(b.execute(raw))


def _utc(rows) -> list[tuple]:
    """Rows with datetimes as naive UTC (PostgreSQL answers aware, SQLite naive)."""
    return [
        tuple(
            v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) and v.tzinfo else v
            for v in row
        )
        for row in rows
    ]


def test_rollup_times_are_bound_as_sqlalchemy_datetimes(db_url):
    rng = random.Random(8)
    event = make_event(rng)
    event.started_at = 1_767_225_599.9999996  # 2026-01-01 00:00:00.000000 once rounded
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    insert_rows(engine, [event.flat()])
    new_year = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.connect() as conn:
        hour = conn.execute(select(ROLLUPS.c.hour)).scalar_one()
        minute = conn.execute(select(MINUTES.c.minute)).scalar_one()
        month, first = conn.execute(select(SESSIONS.c.month, SESSIONS.c.first_started_at)).one()
        started = conn.execute(select(EVENTS.c.started_at)).scalar_one()
        if engine.dialect.name == "sqlite":
            stored = conn.execute(text("SELECT hour FROM usage_rollups_hourly")).scalar_one()
            assert stored == "2026-01-01 00:00:00.000000"
    assert month == "2026-01"
    for value in (hour, minute, first, started):
        assert value.replace(tzinfo=UTC) == new_year


# What COPY's text format escapes or reads specially, and text beyond ASCII.
ODD_STRINGS = [
    'say "hi"',
    "it's",
    "tab\there",
    "line\nbreak",
    "carriage\rreturn",
    "back\\slash",
    "\\N",
    "\\.",
    "",
    "naïve — 東京 🚀",
    "a,b;c|d",
]


def test_strings_copied_into_the_ledger_read_back_unchanged(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    rng = random.Random(9)
    events = [
        make_event(rng, user=s, agent=s, session=s, use_case=s, model=s, error_code=s[:60])
        for s in ODD_STRINGS
    ]
    assert insert_rows(engine, [e.flat() for e in events]) == len(events)
    with engine.connect() as conn:
        stored = dict(conn.execute(select(EVENTS.c.id, EVENTS.c.user)).tuples().all())
        agents = set(conn.execute(select(ROLLUPS.c.agent)).scalars())
        sessions = set(conn.execute(select(SESSIONS.c.session)).scalars())
        names = set(conn.execute(select(EVENTS.c.model)).scalars())
    assert stored == {e.id: e.user for e in events}
    assert agents == sessions == names == set(ODD_STRINGS)


def test_a_replayed_batch_changes_nothing(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    rng = random.Random(10)
    rows = [make_event(rng).flat() for _ in range(30)]
    assert insert_rows(engine, rows[:20]) == 20
    before = _rollup_totals(engine)
    assert insert_rows(engine, rows[:20]) == 0
    assert _rollup_totals(engine) == before
    assert insert_rows(engine, rows[10:]) == 10  # half replayed, half new
    with engine.connect() as conn:
        events = conn.execute(
            text("SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens) FROM usage_events")
        ).one()
    assert _rollup_totals(engine) == {t: tuple(events) for t in ("hourly", "minutes")}


def _rollup_totals(engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        return {
            name: tuple(
                conn.execute(
                    text(f"SELECT SUM(requests), SUM(input_tokens), SUM(output_tokens) FROM {t}")
                ).one()
            )
            for name, t in (("hourly", "usage_rollups_hourly"), ("minutes", "usage_minutes"))
        }


def test_stored_times_round_as_datetime_fromtimestamp_does():
    """The SQLite path formats times itself (the second's text cached): half a microsecond
    rounds to even, up across a second, and before 1970 too, exactly as datetime does."""
    from metering.ingest import _sqlite_datetime

    rng = random.Random(9)
    edges = [0.0, 1.5e-6, 2.5e-6, -1.5, -4e-7, 1_767_225_599.9999996, 1_790_000_000.9999995]
    halves = [1_790_000_000 + k / 128 for k in range(128)]  # frac * 1e6 ends in exactly .5
    for t in [*edges, *halves, *(rng.uniform(0, 4e9) for _ in range(20_000))]:
        want = datetime.fromtimestamp(t, UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        assert _sqlite_datetime(t) == want, t
