"""Monthly export benchmark: time and peak memory of each format for a month of N events.

    python bench/export_month.py --events 10000000 [--db /tmp/tm-export-10M.db] [--reuse]
    python bench/export_month.py --url postgresql://postgres@127.0.0.1/bench_ingest --month 2026-11

A month (2026-10) of N events is generated straight into a fresh SQLite ledger: events and hourly
rollups written with executemany in time order (the daily rollups summed from them), bypassing the
batch writer (whose ingest rate bench/ledger_ingest.py measures); the export checks that rollups
and events agree. 200 users, 40 use cases with a Zipf spread, 5 deployments, ~12 requests per
session. Each format is then exported in a fresh process, which reports its wall time per step and
its peak RSS (VmHWM, which includes SQLite's and Arrow's memory, not only Python's) and the
baseline RSS after imports. --reuse keeps an existing database of the same N. --url exports a
ledger as it is (the PostgreSQL month bench/ledger_ingest.py --keep leaves) instead; files go
beside --db.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metering.export.month import Month  # noqa: E402
from metering.tables import ROLLUP_KEYS, ROLLUP_SUMS  # noqa: E402

MONTH = Month(2026, 10)
USE_CASES = [f"use-case-{i:02d}" for i in range(40)]
DEPLOYMENTS = [  # model, backend, deployment, on_prem, micro-USD per 1k input, per 1k output
    ("claude-sonnet", "anthropic", "anthropic/claude-sonnet-4-5", False, 3000, 15000),
    ("claude-haiku", "anthropic", "anthropic/claude-haiku-4-5", False, 1000, 5000),
    ("mistral-large", "azure_mistral", "azure_mistral/mistral-large-3", False, 500, 1500),
    ("mistral-large", "vllm", "vllm/mistralai/Mistral-Large-Instruct-2411", True, 0, 0),
    ("mistral-small", "tgi", "tgi/mistralai/Mistral-Small-24B-Instruct-2501", True, 0, 0),
]
EVENT_COLUMNS = (
    "id",
    "started_at",
    "finished_at",
    "key_id",
    "user",
    "agent",
    "session",
    "use_case",
    "model",
    "backend",
    "deployment",
    "upstream_model",
    "on_prem",
    "stream",
    "status",
    "http_status",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "usage_source",
    "cost_micro_usd",
    "latency_s",
    "ttft_s",
    "overhead_s",
)
ROLLUP_COLUMNS = (*ROLLUP_KEYS, *ROLLUP_SUMS)
_TS = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime in SQLite


def seats(rng: random.Random) -> list[tuple[str, str, list[tuple[str, str, int]]]]:
    """200 users, each with a key and three (use case, agent, deployment) habits."""
    weights = [1 / (i + 1) ** 1.1 for i in range(len(USE_CASES))]
    out = []
    for u in range(200):
        habits = []
        for uc in rng.choices(USE_CASES, weights, k=3):
            dep = USE_CASES.index(uc) % len(DEPLOYMENTS)
            habits.append((uc, f"agent-{uc[-2:]}", dep))
        out.append((f"user-{u:03d}", f"key_{u:03d}", habits))
    return out


def generate(con: sqlite3.Connection, n: int, seed: int) -> None:
    rng = random.Random(seed)
    users = seats(rng)
    start, span = MONTH.start.timestamp(), MONTH.end.timestamp() - MONTH.start.timestamp()
    rollups: dict[tuple[object, ...], list[int]] = {}
    per_user: dict[str, int] = {}
    insert = _insert_sql("usage_events", EVENT_COLUMNS)
    batch: list[tuple[object, ...]] = []
    for i in range(n):
        t = start + (i + rng.random()) * span / n
        user, key, habits = users[rng.randrange(200)]
        use_case, agent, dep = habits[0] if rng.random() < 0.6 else rng.choice(habits)
        model, backend, deployment, on_prem, p_in, p_out = DEPLOYMENTS[dep]
        k = per_user[user] = per_user.get(user, 0) + 1
        size = 40 - USE_CASES.index(use_case)
        inp, out = rng.randint(50, 400 * size), rng.randint(10, 30 * size)
        read = inp // 2 if rng.random() < 0.4 else 0
        status = "ok" if rng.random() < 0.98 else "upstream_error"
        cost = (inp * p_in + out * p_out) // 1000
        stamp = datetime.fromtimestamp(t, UTC)
        batch.append((
            f"{i:026d}", stamp.strftime(_TS), stamp.strftime(_TS), key, user, agent,
            f"{user}-s{k // 12}", use_case, model, backend, deployment, deployment, on_prem,
            i % 3 == 0, status, 200, inp, read, 0, 0, out, 0, "upstream", cost, 0.8, 0.2, 0.0004,
        ))  # fmt: skip
        hour = stamp.replace(minute=0, second=0, microsecond=0).strftime(_TS)
        acc = rollups.setdefault(
            (hour, use_case, user, agent, key, "", "", "", model, backend, deployment, on_prem),
            [0] * len(ROLLUP_SUMS),
        )
        for j, v in enumerate((1, status != "ok", 0, inp, read, 0, 0, out, 0, cost)):
            acc[j] += v
        if len(batch) == 100_000:
            con.executemany(insert, batch)
            batch.clear()
    con.executemany(insert, batch)
    con.executemany(
        _insert_sql("usage_rollups_hourly", ROLLUP_COLUMNS),
        [(*key, *sums) for key, sums in sorted(rollups.items())],
    )
    # The daily, per-minute and per-session rollups the writer keeps, built here in bulk.
    keys = ", ".join(f'"{k}"' for k in ROLLUP_KEYS[1:])
    con.execute(
        f"INSERT INTO usage_rollups_daily (day, {keys}, {', '.join(ROLLUP_SUMS)}) "
        f"SELECT substr(hour, 1, 10) || ' 00:00:00.000000', {keys}, "
        f"{', '.join(f'SUM({c})' for c in ROLLUP_SUMS)} FROM usage_rollups_hourly "
        f"GROUP BY substr(hour, 1, 10), {keys}"
    )
    con.execute(
        "INSERT INTO usage_minutes (minute, requests, input_tokens, output_tokens) "
        "SELECT substr(started_at, 1, 16) || ':00.000000', COUNT(*), SUM(input_tokens), "
        "SUM(output_tokens) FROM usage_events GROUP BY substr(started_at, 1, 16)"
    )
    con.execute(
        "INSERT INTO usage_sessions_monthly SELECT substr(started_at, 1, 7), session, COUNT(*), "
        "SUM(input_tokens + output_tokens), COALESCE(SUM(cost_micro_usd), 0), MIN(user), "
        "MAX(user), MIN(agent), MAX(agent), MIN(use_case), MAX(use_case), MIN(started_at), "
        "MAX(started_at) FROM usage_events GROUP BY substr(started_at, 1, 7), session"
    )
    con.commit()


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def build_ledger(path: Path, n: int, seed: int) -> float:
    from metering.store import create_db_engine, upgrade_schema

    path.unlink(missing_ok=True)
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade_schema(engine)
    engine.dispose()
    t0 = time.perf_counter()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    generate(con, n, seed)
    con.close()
    path.with_suffix(".events").write_text(str(n))
    return time.perf_counter() - t0


def peak_rss_mb() -> float:
    """This process image's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over exec from
    the forking parent, here the generator with its rollup table."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(url: str, out: Path, fmt: str, month: Month) -> dict[str, object]:
    """Run in a child process: export one format, report times per step and memory."""
    from metering.export.files import write_export
    from metering.export.month import build_month_export
    from metering.store import create_db_engine
    from tests.metering.export.month_data import tco_inputs

    base_rss = peak_rss_mb()
    engine = create_db_engine(url)
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    export = build_month_export(
        engine, month, tco=tco_inputs(), progress=lambda s: marks.append((s, time.perf_counter()))
    )
    t_built = time.perf_counter()
    with out.open("wb") as fh:
        write_export(export, fmt, fh)
    t1 = time.perf_counter()
    steps = [*marks, ("write", t_built), ("end", t1)]
    return {
        "format": fmt,
        "seconds": t1 - t0,
        "steps": {s: round(steps[i + 1][1] - t, 2) for i, (s, t) in enumerate(steps[:-1])},
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": base_rss,
        "bytes": out.stat().st_size,
        "reconciled": export.reconciled,
        "headline": export.headline,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--formats", default="csv,xlsx,parquet")
    ap.add_argument(
        "--url",
        help="export this ledger as it is (no generation), e.g. the "
        "PostgreSQL database bench/ledger_ingest.py --keep leaves",
    )
    ap.add_argument("--month", default=str(MONTH), help="with --url: the month to export")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    db = args.db or Path(f"/tmp/tm-export-{args.events}.db")
    url = args.url or f"sqlite:///{db}"
    if args.measure:
        out = db.with_name(f"export.{args.measure}")
        print(json.dumps(measure(url, out, args.measure, Month.parse(args.month))))
        return
    if args.url:
        run_formats(args.formats, ["--url", args.url, "--month", args.month, "--db", str(db)])
        return
    marker = db.with_suffix(".events")
    if args.reuse and db.exists() and marker.exists() and marker.read_text() == str(args.events):
        print(f"reusing {db}")
    else:
        seconds = build_ledger(db, args.events, args.seed)
        print(f"generated {args.events:,} events in {seconds:.0f} s")
    print(f"database: {db.stat().st_size / 2**20:,.0f} MiB")
    run_formats(args.formats, ["--db", str(db)])


def run_formats(formats: str, where: list[str]) -> None:
    for fmt in formats.split(","):
        cmd = [sys.executable, __file__, *where, "--measure", fmt]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT).stdout)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
