"""`tokenmeter demo`: a 200-seat organisation's month, played through the real gateway in about
a minute, then the 80/20 headline, the top use cases and the TCO verdict, and the gateway keeps
serving so that the metrics, the admin API and the export can be explored."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select

from metering.export.month import Month, MonthExport, build_month_export
from metering.live_tco import TcoInputs
from metering.queries import usage_summary
from metering.store import create_db_engine
from metering.tables import UsageEventRecord
from proxy.demo.driver import DriveResult, drive
from proxy.demo.gateway import DemoGateway, run_gateway
from proxy.demo.org import PlannedRequest, plan_month
from proxy.demo.report import DemoRun, pilot_counts, render_report

LEDGER_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    port: int
    seed: int
    seats: int
    month: Month  # the calendar month the report covers
    start: datetime  # the window played: the month, or the 30 days to now
    end: datetime
    requests: int
    concurrency: int
    directory: Path
    serve: bool
    storage_url: str | None = None  # None: a SQLite ledger in ``directory``


Progress = Callable[[PlannedRequest], None]


def run_demo(opts: DemoOptions, tco: TcoInputs, *, progress: Progress, say: Callable[[str], None]
             ) -> MonthExport:  # fmt: skip
    """Play the month, print the report, and (with ``serve``) keep the gateway up until Ctrl-C."""
    plan = plan_month(
        seed=opts.seed,
        seat_count=opts.seats,
        start=opts.start,
        end=opts.end,
        requests=opts.requests,
    )
    window_days = (datetime.now(UTC) - opts.start).total_seconds() / 86_400
    gateway = run_gateway(
        opts.directory, port=opts.port, tco_window_days=window_days, storage_url=opts.storage_url
    )
    with gateway as gw:
        say(
            f"gateway up at {gw.url}; playing {len(plan):,} requests from "
            f"{opts.start:%Y-%m-%d %H:%M} to {opts.end:%Y-%m-%d %H:%M} UTC"
        )
        result = asyncio.run(drive(gw.url, plan, concurrency=opts.concurrency, on_done=progress))
        engine = create_db_engine(gw.ledger_url)
        try:
            wait_for_ledger(engine, result.sent, since=opts.start, until=opts.end)
            export = build_month_export(engine, opts.month, tco=tco)
            say(render_report(export, _run(opts, gw, result, engine)))
        finally:
            engine.dispose()
        if opts.serve:
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how the demo ends
                gw.process.wait()
    return export


def wait_for_ledger(engine: Engine, expected: int, *, since: datetime, until: datetime) -> int:
    """Poll until the writer has put ``expected`` events of the window in the ledger (or the
    timeout passes)."""
    deadline = time.monotonic() + LEDGER_TIMEOUT_S
    count = 0
    t = UsageEventRecord.__table__.c  # type: ignore[attr-defined]
    stmt = select(func.count()).where(t.started_at >= since, t.started_at < until)
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            count = conn.execute(stmt).scalar_one()
        if count >= expected:
            break
        time.sleep(0.2)  # the batch writer flushes every storage.flush_interval_s
    return int(count)


def _run(opts: DemoOptions, gw: DemoGateway, result: DriveResult, engine: Engine) -> DemoRun:
    _, rows = usage_summary(engine, group_by=["model", "backend"], since=opts.start, until=opts.end)
    return DemoRun(
        url=gw.url,
        ledger_url=gw.ledger_url,
        log_path=str(gw.log_path),
        seed=opts.seed,
        seats=opts.seats,
        sent=result.sent,
        failed=result.failed,
        seconds=result.seconds,
        pilot=pilot_counts(rows),
        serving=opts.serve,
    )
