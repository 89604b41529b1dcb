"""The migration chain on both engines: from empty, and from the previous revision."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import datetime

from sqlalchemy import inspect, text

from metering.store import (
    MIGRATIONS,
    create_db_engine,
    head_revision,
    schema_revision,
    upgrade_schema,
)
from metering.writer import insert_events
from tests.metering.factories import event_row, make_event


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
    later = {"request_id", "attempt"}  # columns added after revision 0001
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
