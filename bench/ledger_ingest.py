"""Ledger benchmarks: the writer's sustained ingest rate and the journal's cost per append.

    python bench/ledger_ingest.py [--events 100000] [--pg postgresql://postgres@127.0.0.1/test]

Ingest: N events are journaled first, then one writer drains the journal into the database
(events + hourly rollups, batch_max_events per transaction); rate = N / drain time. The database
is a fresh SQLite file, and a fresh PostgreSQL database when --pg is given (created and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from cost.usage import TokenUsage
from metering.events import UsageEvent, new_event_id
from metering.journal import Journal
from metering.store import create_db_engine, upgrade_schema
from metering.writer import BatchWriter


def make_events(n: int, seed: int = 1) -> list[UsageEvent]:
    rng = random.Random(seed)
    now = time.time()
    users = [f"user-{i}" for i in range(200)]
    out = []
    for i in range(n):
        started = now - 86_400 + i * 86_400 / n
        out.append(
            UsageEvent(
                id=new_event_id(int(started * 1e9)),
                started_at=started,
                finished_at=started + 0.8,
                key_id=f"key_{rng.randrange(50)}",
                user=rng.choice(users),
                agent=rng.choice(["claude-code", "vibe", "kb-search", "continue"]),
                session=f"s-{rng.randrange(10_000)}",
                use_case=rng.choice(["coding", "rag", "chat"]),
                model="claude-sonnet",
                backend="anthropic",
                deployment="anthropic/claude-sonnet-4-5",
                upstream_model="claude-sonnet-4-5",
                on_prem=False,
                stream=True,
                status="ok",
                http_status=200,
                usage=TokenUsage(
                    input_tokens=rng.randrange(20_000), output_tokens=rng.randrange(2_000)
                ),
                cost_micro_usd=rng.randrange(100_000),
                latency_s=0.8,
                ttft_s=0.2,
                overhead_s=0.0004,
            )
        )
    return out


def journal_append_cost(events: list[UsageEvent], directory: Path, fsync: str) -> float:
    journal = Journal(directory, fsync=fsync)  # type: ignore[arg-type]
    journal.open()
    t0 = time.perf_counter()
    for e in events:
        journal.append(e)
    elapsed = time.perf_counter() - t0
    journal.close()
    return elapsed / len(events) * 1e6


def ingest_rate(url: str, events: list[UsageEvent], batch: int) -> float:
    engine = create_db_engine(url)
    upgrade_schema(engine)
    with tempfile.TemporaryDirectory() as tmp:
        writer_journal = Journal(Path(tmp))
        writer_journal.open()
        for e in events:
            writer_journal.append(e)

        async def drain() -> float:
            writer = BatchWriter(engine, writer_journal, max_batch=batch, flush_interval_s=3600)
            t0 = time.perf_counter()
            await writer.flush()
            return time.perf_counter() - t0

        elapsed = asyncio.run(drain())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM usage_events")).scalar_one() == len(events)
    engine.dispose()
    return len(events) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--pg", default=None, help="PostgreSQL admin URL (a scratch db is made)")
    args = parser.parse_args()
    events = make_events(args.events)
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for policy in ("none", "interval", "always"):
            sample = events[:2000] if policy == "always" else events
            result[f"journal_append_us_fsync_{policy}"] = round(
                journal_append_cost(sample, Path(tmp) / policy, policy), 2
            )
        result["sqlite_events_per_s"] = round(
            ingest_rate(f"sqlite:///{Path(tmp) / 'ledger.db'}", events, args.batch)
        )
    if args.pg:
        name = "tm_bench_" + uuid.uuid4().hex[:8]
        admin = create_engine(
            args.pg.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        try:
            result["postgresql_events_per_s"] = round(
                ingest_rate(args.pg.rsplit("/", 1)[0] + "/" + name, events, args.batch)
            )
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    print(json.dumps({"events": args.events, "batch": args.batch, **result}, indent=2))


if __name__ == "__main__":
    main()
