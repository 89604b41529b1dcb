"""The migration chain on both engines: from empty, and from the previous revision."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime

from sqlalchemy import inspect, text

from cost.usage import TokenUsage
from metering.store import (
    MIGRATIONS,
    create_db_engine,
    head_revision,
    schema_revision,
    upgrade_schema,
)
from metering.writer import insert_events
from tests.metering.factories import event_row, make_event

# event columns added after 0001 (a row with these left out is a 0001 row)
LATER_THAN_0001 = {
    "request_id",
    "attempt",
    "team",
    "end_user",
    "user_source",
    "error_code",
    "error_detail",
}


def test_upgrade_from_empty_reaches_head(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    assert schema_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {"usage_events", "usage_rollups_hourly", "api_keys", "tokenmeter_meta"} <= tables
    engine.dispose()


def test_upgrade_from_previous_revision_backfills_rollups(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine, "0001")
    rng = random.Random(11)
    later = LATER_THAN_0001
    rows = [
        {k: v for k, v in event_row(make_event(rng)).items() if k not in later} for _ in range(40)
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO usage_events ("
                + ", ".join(f'"{k}"' for k in rows[0])
                + ") VALUES ("
                + ", ".join(f":{k}" for k in rows[0])
                + ")"
            ),
            rows,
        )
    upgrade_schema(engine)
    with engine.connect() as conn:
        rollup = conn.execute(
            text(
                "SELECT SUM(requests), SUM(input_tokens), SUM(output_tokens), SUM(cost_micro_usd) "
                "FROM usage_rollups_hourly"
            )
        ).one()
        hours = conn.execute(text("SELECT DISTINCT hour FROM usage_rollups_hourly")).scalars()
        hour_values = [h if isinstance(h, datetime) else datetime.fromisoformat(h) for h in hours]
    assert tuple(int(x) for x in rollup) == (
        40,
        sum(r["input_tokens"] for r in rows),
        sum(r["output_tokens"] for r in rows),
        sum(r["cost_micro_usd"] for r in rows),
    )
    assert all(h.minute == h.second == h.microsecond == 0 for h in hour_values)
    # events recorded after the upgrade land in the same hourly rows as the back-filled ones
    insert_events(
        engine,
        [
            make_event(
                rng,
                started_at=rows[0]["started_at"].timestamp(),
                **{k: rows[0][k] for k in ("user", "agent", "key_id", "use_case")},
                team="unknown",  # its key is not in the key table: no team, a declared user
                end_user=rows[0]["user"],
            )
        ],
    )
    with engine.connect() as conn:
        n_rows = conn.execute(text("SELECT COUNT(*) FROM usage_rollups_hourly")).scalar_one()
        n_groups = conn.execute(
            text(
                "SELECT COUNT(*) FROM (SELECT 1 FROM usage_events "
                'GROUP BY use_case, "user", agent, key_id, model, backend, deployment, on_prem, '
                + (
                    "date_trunc('hour', started_at)"
                    if engine.dialect.name == "postgresql"
                    else "substr(started_at, 1, 13)"
                )
                + ") g"
            )
        ).scalar_one()
    assert n_rows == n_groups
    engine.dispose()


def test_head_revision_is_the_newest_migration():
    from alembic.script import ScriptDirectory

    assert head_revision() == ScriptDirectory(str(MIGRATIONS)).get_current_head()


def test_serving_a_migrated_ledger_does_not_load_alembic(tmp_path):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    upgrade_schema(engine)
    script = (
        "import sys; from metering.store import create_db_engine, prepare_schema; "
        f"prepare_schema(create_db_engine({str(engine.url)!r})); "
        "import proxy.app; print(sorted(m for m in sys.modules if m.startswith('alembic')))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def downgrade_schema(engine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def _insert(conn, table: str, rows: list[dict]) -> None:
    cols = list(rows[0])
    conn.execute(
        text(
            f"INSERT INTO {table} ("
            + ", ".join(f'"{c}"' for c in cols)
            + ") VALUES ("
            + ", ".join(f":{c}" for c in cols)
            + ")"
        ),
        rows,
    )


def test_0006_backfills_team_user_source_and_zero_token_cost(db_url):
    """Past events get their key's team; the key's own user is "key", any other is declared
    (and is the end user); a 0-token event with no price costs 0 and is no longer unpriced."""
    engine = create_db_engine(db_url)
    upgrade_schema(engine, "0001")
    later = LATER_THAN_0001
    rng = random.Random(6)
    specs = [  # key_id, user, tokens, cost
        ("key_a", "alice", 100, 5),
        ("key_a", "mallory", 50, 3),
        ("key_b", "bob", 0, None),
        ("key_gone", "carol", 10, None),
    ]
    events = [
        make_event(
            rng,
            key_id=k,
            user=u,
            started_at=1_790_000_000.0 + i,
            usage=TokenUsage(input_tokens=t),
            cost_micro_usd=c,
            status="ok",
        )
        for i, (k, u, t, c) in enumerate(specs)
    ]
    with engine.begin() as conn:
        _insert(
            conn,
            "api_keys",
            [
                {
                    "id": "key_a",
                    "key_hash": "h1",
                    "prefix": "tm-a",
                    "user": "alice",
                    "team": "platform",
                    "use_case": None,
                    "agent": None,
                    "created_at": datetime(2026, 1, 1, tzinfo=UTC),
                    "revoked_at": None,
                },
                {
                    "id": "key_b",
                    "key_hash": "h2",
                    "prefix": "tm-b",
                    "user": "bob",
                    "team": None,
                    "use_case": None,
                    "agent": None,
                    "created_at": datetime(2026, 1, 1, tzinfo=UTC),
                    "revoked_at": None,
                },
            ],
        )
        _insert(
            conn,
            "usage_events",
            [
                {k: v for k, v in event_row(e).items() if k not in later}
                | {"cost_micro_usd": e.cost_micro_usd or 0}  # NOT NULL before 0003
                for e in events
            ],
        )
    upgrade_schema(engine, "0005")  # 0002 back-fills the rollups of these events
    with engine.begin() as conn:
        unpriced = "WHERE key_id IN ('key_b', 'key_gone')"
        conn.execute(text(f"UPDATE usage_events SET cost_micro_usd = NULL {unpriced}"))
        conn.execute(text(f"UPDATE usage_rollups_hourly SET unpriced_requests = 1 {unpriced}"))
    upgrade_schema(engine)
    with engine.connect() as conn:
        got = conn.execute(
            text(
                'SELECT key_id, "user", team, end_user, user_source, cost_micro_usd '
                "FROM usage_events ORDER BY started_at"
            )
        ).all()
        rollups = dict(
            conn.execute(
                text(
                    "SELECT key_id || '/' || team || '/' || end_user, unpriced_requests "
                    "FROM usage_rollups_hourly"
                )
            ).all()
        )
    assert [tuple(r) for r in got] == [
        ("key_a", "alice", "platform", "unknown", "key", 5),
        ("key_a", "mallory", "platform", "mallory", "declared", 3),
        ("key_b", "bob", "unknown", "unknown", "key", 0),
        ("key_gone", "carol", "unknown", "carol", "declared", None),
    ]
    assert rollups == {
        "key_a/platform/unknown": 0,
        "key_a/platform/mallory": 0,
        "key_b/unknown/unknown": 0,
        "key_gone/unknown/carol": 1,
    }
    engine.dispose()


def test_0008_gives_past_events_an_empty_error_detail_and_downgrades(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine, "0007")
    rng = random.Random(8)
    past = make_event(rng, status="internal_error", http_status=500, error_code="internal_error")
    with engine.begin() as conn:
        _insert(
            conn,
            "usage_events",
            [{k: v for k, v in event_row(past).items() if k != "error_detail"}],
        )
    upgrade_schema(engine, "0008")
    upgrade_schema(engine)  # today's ingest also writes the rollups of later revisions
    insert_events(engine, [make_event(rng, status="internal_error", error_detail="KeyError")])
    with engine.connect() as conn:
        details = conn.execute(
            text("SELECT error_detail FROM usage_events ORDER BY error_detail")
        ).scalars()
        assert list(details) == ["", "KeyError"]
    downgrade_schema(engine, "0007")
    assert "error_detail" not in {c["name"] for c in inspect(engine).get_columns("usage_events")}
    engine.dispose()


def test_0009_backfills_daily_rollups_and_downgrades(db_url):
    from alembic import command

    from metering.store import _alembic_config

    engine = create_db_engine(db_url)
    upgrade_schema(engine, "0001")
    later = {"request_id", "attempt", "team", "end_user", "user_source", "error_code"}
    later |= {"error_detail"}
    rng = random.Random(12)
    day = 86_400.0
    start = 1_790_000_000.0 - (1_790_000_000.0 % day) - 3600  # an hour before a UTC midnight
    events = [make_event(rng, started_at=start + rng.uniform(0, 2 * day)) for _ in range(80)]
    with engine.begin() as conn:
        _insert(
            conn,
            "usage_events",
            [{k: v for k, v in event_row(e).items() if k not in later} for e in events],
        )
    upgrade_schema(engine, "0008")  # 0002 back-fills the hourly rollups of these events
    upgrade_schema(engine)
    per_day: dict[str, list[int]] = {}
    for e in events:
        stamp = datetime.fromtimestamp(e.started_at, UTC).strftime("%Y-%m-%d")
        acc = per_day.setdefault(stamp, [0, 0, 0])
        acc[0] += 1
        acc[1] += e.usage.input_tokens
        acc[2] += e.cost_micro_usd or 0
    with engine.connect() as conn:
        daily = conn.execute(
            text(
                "SELECT day, SUM(requests), SUM(input_tokens), SUM(cost_micro_usd) "
                "FROM usage_rollups_daily GROUP BY day"
            )
        ).all()
    backfilled = {
        (d if isinstance(d, str) else d.astimezone(UTC).isoformat())[:10]: list(map(int, v))
        for d, *v in daily
    }
    assert len(backfilled) == 3 and backfilled == per_day
    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0008")
    assert "usage_rollups_daily" not in inspect(engine).get_table_names()
    upgrade_schema(engine)
    assert schema_revision(engine) == head_revision()
    engine.dispose()
