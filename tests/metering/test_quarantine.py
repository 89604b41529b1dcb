"""No single event can stop the ledger: rows the database refuses on their data are bisected
out of their batch and quarantined; the rest is committed and the writer goes on. Failures that
are not about the data (a missing table) stall the writer visibly instead, quarantining nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from metering.journal import Journal
from metering.quarantine import QUARANTINE_FILE, list_quarantined
from metering.store import create_db_engine, upgrade_schema
from metering.writer import BatchWriter
from proxy.cli import cli
from tests.conftest import backend_models
from tests.metering.factories import make_event
from tests.support import Gateway, free_port, wait_for

# Values that reached the journal before intake validated them (or from an older release):
# each fails the insert on both engines, and a NUL fails it on PostgreSQL.
POISON = {
    "big-count": {"input_tokens": 2**63},
    "string-count": {"output_tokens": "12"},
    "null-status": {"status": None},
    "bool-count": {"input_tokens": True},
}
PG_ONLY = {"nul-in-model": {"model": "a\x00b"}}


def poisoned(row: dict, change: dict) -> dict:
    return {**row, **change}


def journal_with(directory: Path, rows: list[dict]) -> None:
    """A dead process's journal segment holding ``rows`` (replayed by the next writer)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    (directory / "seg-00000000000000000000000001-1.jsonl").write_bytes(data)


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


async def drain_once(writer: BatchWriter) -> None:
    writer.start()
    await writer.stop()  # stop() flushes everything pending


@pytest.fixture
def engine(db_url: str) -> Engine:
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    return engine


def test_poison_rows_are_quarantined_and_the_rest_committed(engine, tmp_path):
    rng = random.Random(3)
    poison = POISON | (PG_ONLY if engine.dialect.name == "postgresql" else {})
    good = [make_event(rng).flat() for _ in range(50)]
    bad = {name: poisoned(make_event(rng).flat(), change) for name, change in poison.items()}
    rows = good[:20] + list(bad.values()) + good[20:]
    journal_dir = tmp_path / "journal"
    journal_with(journal_dir, rows)
    journal = Journal(journal_dir)
    journal.open()
    writer = BatchWriter(engine, journal, max_batch=1000, flush_interval_s=0.01)
    seen: list[int] = []
    writer.quarantine.on_quarantined = seen.append

    asyncio.run(drain_once(writer))

    assert count(engine, "usage_events") == 50
    assert count(engine, "usage_rollups_hourly") > 0
    with engine.connect() as conn:
        rollup_requests = conn.execute(text("SELECT SUM(requests) FROM usage_rollups_hourly"))
        assert int(rollup_requests.scalar_one()) == 50  # no bad row reached the rollups
    entries = list_quarantined(engine)
    assert {e.id for e in entries} == {r["id"] for r in bad.values()}
    assert all(e.error for e in entries) and len(seen) == len(bad)
    lines = (journal_dir / QUARANTINE_FILE).read_text().splitlines()
    assert {json.loads(line)["id"] for line in lines} == {r["id"] for r in bad.values()}
    assert not list(journal_dir.glob("seg-00000000000000000000000001-1.jsonl"))  # drained


def test_unreadable_journal_lines_are_quarantined_not_dropped(engine, tmp_path):
    """Each line that is not an event is quarantined under its byte offset; blank lines are
    skipped; the events around them all land."""
    rng = random.Random(4)
    good = [orjson.dumps(make_event(rng).flat()) for _ in range(3)]
    lines = [
        b'{"not": "an event"}',
        good[0],
        b"",
        b"  \t",
        b"1",
        b"[1, 2]",
        good[1],
        b'{"id": "01J", trunc',
        good[2],
    ]
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    name = "seg-00000000000000000000000001-1.jsonl"
    (journal_dir / name).write_bytes(b"".join(line + b"\n" for line in lines))
    offsets = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))]
    journal = Journal(journal_dir)
    journal.open()
    asyncio.run(drain_once(BatchWriter(engine, journal, max_batch=2, flush_interval_s=0.01)))
    assert count(engine, "usage_events") == 3
    entries = {e.id: e for e in list_quarantined(engine)}
    bad = [0, 4, 5, 7]
    assert set(entries) == {f"{name}@{offsets[i]}" for i in bad}
    assert entries[f"{name}@0"].row == {"not": "an event"}
    assert all("unreadable" in e.error for e in entries.values())


def test_retry_replays_after_the_fix(engine, db_url, tmp_path, monkeypatch):
    """A database-side rule refuses some events; once the operator lifts it, `tokenmeter ledger
    quarantine retry` moves them into the ledger (rollups included) and empties the quarantine."""
    refuse_agent(engine, "kb-search")
    rng = random.Random(5)
    rows = [make_event(rng, agent=a).flat() for a in ["vibe", "kb-search", "vibe", "kb-search"]]
    journal_dir = tmp_path / "journal"
    journal_with(journal_dir, rows)
    journal = Journal(journal_dir)
    journal.open()
    asyncio.run(drain_once(BatchWriter(engine, journal, max_batch=10, flush_interval_s=0.01)))
    assert count(engine, "usage_events") == 2

    monkeypatch.setenv("TOKENMETER_STORAGE__URL", db_url)
    runner = CliRunner()
    listed = runner.invoke(cli, ["ledger", "quarantine", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["event"]["agent"] for r in records) == ["kb-search", "kb-search"]

    still = runner.invoke(cli, ["ledger", "quarantine", "retry"])
    assert still.exit_code == 1 and "still quarantined 2" in still.stdout
    assert [e.attempts for e in list_quarantined(engine)] == [2, 2]

    allow_all(engine)
    done = runner.invoke(cli, ["ledger", "quarantine", "retry"])
    assert done.exit_code == 0 and "replayed 2, still quarantined 0" in done.stdout
    assert count(engine, "usage_events") == 4 and list_quarantined(engine) == []
    with engine.connect() as conn:
        total = conn.execute(text("SELECT SUM(requests) FROM usage_rollups_hourly")).scalar_one()
    assert int(total) == 4


def test_a_missing_table_stalls_the_writer_and_quarantines_nothing(engine, tmp_path, caplog):
    rows = [make_event(random.Random(6)).flat() for _ in range(5)]
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE usage_minutes RENAME TO usage_minutes_moved"))
    journal_dir = tmp_path / "journal"
    journal_with(journal_dir, rows)
    journal = Journal(journal_dir)
    journal.open()
    writer = BatchWriter(engine, journal, max_batch=10, flush_interval_s=0.01)

    async def run() -> tuple[str | None, bool]:
        writer.start()
        for _ in range(500):  # poll, bounded: the first flush fails within a few ticks
            if writer.stalled:
                break
            await asyncio.sleep(0.01)
        state = (writer.stalled, writer.db_ok)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE usage_minutes_moved RENAME TO usage_minutes"))
        await writer.stop()
        return state

    with caplog.at_level(logging.WARNING, logger="metering.writer"):
        stalled, db_ok = asyncio.run(run())
    assert stalled is not None and "usage_minutes" in stalled
    assert db_ok  # the database answered: this is not an outage
    assert "ledger writer stalled (the database answers)" in caplog.text
    assert "database unreachable" not in caplog.text
    assert list_quarantined(engine) == []
    assert count(engine, "usage_events") == 5  # moved once the table was back


def refuse_agent(engine: Engine, agent: str) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.agent = '{agent}' THEN RAISE EXCEPTION 'agent refused' "
                    "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$ "
                    "LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON usage_events "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON usage_events "
                    f"WHEN NEW.agent = '{agent}' BEGIN SELECT RAISE(ABORT, 'agent refused'); END"
                )
            )


def allow_all(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "DROP TRIGGER refuse"
                + (" ON usage_events" if engine.dialect.name == "postgresql" else "")
            )
        )


def test_a_database_that_does_not_answer_is_logged_as_down_not_stalled(tmp_path, caplog):
    engine = create_db_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/tm")
    journal_with(tmp_path / "journal", [make_event(random.Random(7)).flat()])
    journal = Journal(tmp_path / "journal")
    journal.open()
    writer = BatchWriter(engine, journal, max_batch=10, flush_interval_s=0.01)

    async def run() -> tuple[str | None, bool]:
        writer.start()
        for _ in range(500):
            if not writer.db_ok:
                break
            await asyncio.sleep(0.01)
        state = (writer.stalled, writer.db_ok)
        await writer.stop()
        return state

    with caplog.at_level(logging.WARNING, logger="metering.writer"):
        stalled, db_ok = asyncio.run(run())
    assert (stalled, db_ok) == (None, False)
    assert "database unreachable" in caplog.text
    assert "stalled" not in caplog.text
    engine.dispose()


def test_readyz_and_metrics_tell_quarantine_and_stall_apart(fakes, db_url, tmp_path):
    """Through a running gateway: a poison event left by an older process is quarantined and
    counted; a missing table makes /readyz say the writer is stalled while the database is up."""
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    rng = random.Random(8)
    journal_with(tmp_path / "journal", [poisoned(make_event(rng).flat(), POISON["big-count"])])
    gw = Gateway(
        tmp_path / "tm.db",
        {"models": backend_models(fakes), "storage": {"url": db_url}},
    ).start()
    try:
        wait_for(lambda: len(list_quarantined(engine)) == 1)
        assert metric(gw, "tokenmeter_ledger_quarantined_total") == 1
        assert httpx.get(gw.url + "/readyz").json()["writer"] == "ok"

        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE usage_minutes RENAME TO usage_minutes_moved"))
        key = gw.create_key(user="ops")
        chat = {"model": "vllm-model", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.post(gw.url + "/v1/chat/completions", json=chat, headers=headers).is_success
        body = wait_for(lambda: _stalled(gw))
        assert body["database"] == "ok" and body["status"] == "unavailable"
        assert "usage_minutes" in body["writer"]
        assert metric(gw, "tokenmeter_ledger_writer_up") == 0
        assert metric(gw, "tokenmeter_database_up") == 1

        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE usage_minutes_moved RENAME TO usage_minutes"))
        wait_for(lambda: httpx.get(gw.url + "/readyz").json()["status"] == "ready")
        assert len(gw.events()) == 1 and len(list_quarantined(engine)) == 1
    finally:
        gw.stop()
        engine.dispose()


def _stalled(gw: Gateway) -> dict | None:
    body = httpx.get(gw.url + "/readyz").json()
    return body if body["writer"] != "ok" else None


def metric(gw: Gateway, name: str) -> float:
    for family in text_string_to_metric_families(httpx.get(gw.url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no metric {name}")
