"""Ledger benchmarks: the writer's sustained ingest rate and the journal's cost per append.

    python bench/ledger_ingest.py [--events 100000] [--window 1000000]
                                  [--pg postgresql://postgres@127.0.0.1/postgres] [--keep NAME]

Ingest: events are made and journaled one window at a time (never all in memory), then one
writer drains the window into the database (events + rollups, batch_max_events per
transaction); a window's rate = its events / its drain time, so the rates show whether ingest
holds as the table grows. The events are spread in time order over the calendar month before
this one (10M events: ~4 per second). The database is a fresh SQLite file (skipped with
--pg-only), and a fresh PostgreSQL database when --pg is given (created, then dropped unless
--keep names it: the month's export and the queries can then be timed on it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

from cost.usage import TokenUsage
from metering.events import UsageEvent, new_event_id
from metering.journal import Journal
from metering.store import create_db_engine, upgrade_schema
from metering.writer import BatchWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_month import DEPLOYMENTS, USE_CASES, seats


def last_month() -> tuple[float, float]:
    """The previous calendar month (UTC) as Unix seconds [start, end)."""
    now = datetime.now(UTC)
    end = datetime(now.year, now.month, 1, tzinfo=UTC)
    start = datetime(end.year - (end.month == 1), (end.month - 2) % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def make_events(
    n: int, *, first: int = 0, total: int | None = None, seed: int = 1
) -> list[UsageEvent]:
    """Events ``first`` .. ``first + n`` of ``total``, spread over last month in time order:
    bench/export_month.py's organisation (200 users with a key and three habits each, 40 use
    cases, 5 deployments, ~12 requests per session), so the rollups grow as a real month's."""
    total = total or n
    rng = random.Random(seed + first)
    users = seats(random.Random(seed))
    start, end = last_month()
    out = []
    for i in range(first, first + n):
        started = start + (i + 0.5) * (end - start) / total
        user, key, habits = users[rng.randrange(200)]
        use_case, agent, dep = habits[0] if rng.random() < 0.6 else rng.choice(habits)
        model, backend, deployment, on_prem, p_in, p_out = DEPLOYMENTS[dep]
        size = 40 - USE_CASES.index(use_case)
        inp, outp = rng.randint(50, 400 * size), rng.randint(10, 30 * size)
        out.append(
            UsageEvent(
                id=new_event_id(int(started * 1e9)),
                started_at=started,
                finished_at=started + 0.8,
                key_id=key,
                user=user,
                agent=agent,
                session=f"{user}-s{i // 2400}",
                use_case=use_case,
                model=model,
                backend=backend,
                deployment=deployment,
                upstream_model=deployment,
                on_prem=on_prem,
                stream=i % 3 == 0,
                status="ok" if rng.random() < 0.98 else "upstream_error",
                http_status=200,
                usage=TokenUsage(
                    input_tokens=inp,
                    cache_read_tokens=inp // 2 if rng.random() < 0.4 else 0,
                    output_tokens=outp,
                ),
                cost_micro_usd=(inp * p_in + outp * p_out) // 1000,
                latency_s=0.8,
                ttft_s=0.2,
                overhead_s=0.0004,
            )
        )
    return out


def windows(total: int, window: int) -> Iterator[tuple[int, int]]:
    for first in range(0, total, window):
        yield first, min(window, total - first)


def journal_append_cost(events: list[UsageEvent], directory: Path, fsync: str) -> float:
    journal = Journal(directory, fsync=fsync)  # type: ignore[arg-type]
    journal.open()
    t0 = time.perf_counter()
    for e in events:
        journal.append(e)
    elapsed = time.perf_counter() - t0
    journal.close()
    return elapsed / len(events) * 1e6


def database_cpu_s(engine: Engine) -> float:
    """CPU seconds used so far by the PostgreSQL backends serving this database (read from
    /proc: the server runs on this machine); 0 on SQLite, whose work is the writer's own."""
    if engine.dialect.name != "postgresql":
        return 0.0
    with engine.connect() as conn:
        pids = conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend'"
            )
        ).scalars()
        ticks = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def ingest(url: str, *, total: int, window: int, batch: int) -> dict[str, object]:
    """Drain ``total`` events window by window; the overall and each window's events/s."""
    engine = create_db_engine(url)
    upgrade_schema(engine)
    rates: list[int] = []
    drained = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp))
        journal.open()
        writer = BatchWriter(engine, journal, max_batch=batch, flush_interval_s=3600)
        for first, n in windows(total, window):
            for e in make_events(n, first=first, total=total):
                journal.append(e)
            t0, cpu0, db0 = time.perf_counter(), time.process_time(), database_cpu_s(engine)
            asyncio.run(writer.flush())
            elapsed = time.perf_counter() - t0
            cpu = {
                "writer_cpu_us_per_event": round((time.process_time() - cpu0) / n * 1e6, 1),
                "database_cpu_us_per_event": round((database_cpu_s(engine) - db0) / n * 1e6, 1),
            }
            drained += elapsed
            journal.truncate_drained()
            rates.append(round(n / elapsed))
            print(json.dumps({"rows": first + n, "events_per_s": rates[-1], **cpu}), flush=True)
        journal.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM usage_events")).scalar_one() == total
    engine.dispose()
    return {"events_per_s": round(total / drained), "window": window, "window_events_per_s": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--pg", default=None, help="PostgreSQL admin URL (a scratch db is made)")
    parser.add_argument("--keep", default=None, help="name the PostgreSQL database and keep it")
    parser.add_argument("--pg-only", action="store_true", help="skip the journal and SQLite")
    args = parser.parse_args()
    window = min(args.window, args.events)
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.pg_only:
            sample = make_events(min(args.events, 100_000))
            for policy in ("none", "interval", "always"):
                some = sample[:2000] if policy == "always" else sample
                result[f"journal_append_us_fsync_{policy}"] = round(
                    journal_append_cost(some, Path(tmp) / policy, policy), 2
                )
            result["sqlite"] = ingest(
                f"sqlite:///{Path(tmp) / 'ledger.db'}",
                total=args.events,
                window=window,
                batch=args.batch,
            )
    if args.pg:
        name = args.keep or "tm_bench_" + uuid.uuid4().hex[:8]
        admin = create_engine(
            args.pg.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {name}"))
        try:
            result["postgresql"] = ingest(
                args.pg.rsplit("/", 1)[0] + "/" + name,
                total=args.events,
                window=window,
                batch=args.batch,
            )
        finally:
            if not args.keep:
                with admin.connect() as conn:
                    conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    print(json.dumps({"events": args.events, "batch": args.batch, **result}, indent=2))


if __name__ == "__main__":
    main()
