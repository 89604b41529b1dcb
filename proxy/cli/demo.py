"""``tokenmeter demo``: a synthetic organisation's month through the gateway, then its report."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proxy.cli.common import ConfigOpt, fail, ledger_name, load, tco_inputs
from proxy.config.settings import Settings

if TYPE_CHECKING:
    from metering.export.month import Month
    from proxy.demo.org import PlannedRequest
    from proxy.demo.play import DemoOptions

DEMO_REQUESTS = 15_000  # about a minute on a 2-core machine
WINDOW_DAYS = 30


def demo(
    port: Annotated[int, typer.Option(help="gateway port on 127.0.0.1 (0: any free)")] = 4100,
    seed: Annotated[int | None, typer.Option(help="replay a month (default: random)")] = None,
    seats: Annotated[int, typer.Option(min=1, help="seats in the organisation")] = 200,
    month: Annotated[
        str | None,
        typer.Option(help="play this calendar month, YYYY-MM (default: the 30 days to now)"),
    ] = None,
    requests: Annotated[int, typer.Option(min=1, help="requests in the month")] = DEMO_REQUESTS,
    concurrency: Annotated[int, typer.Option(min=1, help="requests in flight")] = 32,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="ledger and log (default: a new temp directory)")
    ] = None,
    serve: Annotated[bool, typer.Option(help="keep serving after the report")] = True,
    storage_url: Annotated[
        str | None,
        typer.Option(
            help="the ledger, e.g. the PostgreSQL database Grafana reads (default: "
            "a SQLite file in --dir; with --config, the config's storage.url)"
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Play a synthetic organisation's month through the gateway on simulated backends, print
    the 80/20 split, the top use cases and the TCO verdict, then keep serving."""
    import random
    import tempfile

    from metering.export.month import Month, UnknownMonth
    from proxy.demo.gateway import GatewayError
    from proxy.demo.play import DemoOptions

    try:
        played = Month.parse(month) if month else None
    except UnknownMonth as exc:
        fail(str(exc), code=2)
    start, end = (played.start, played.end) if played else _window_to_now()
    url = storage_url or (load(config).storage.url if config else None)
    if url is None and directory is not None and (directory / "ledger.db").exists():
        fail(f"{directory} already holds a demo ledger: pass a new --dir", code=2)
    if url is not None:
        _refuse_a_ledger_with_traffic(url, start=start, end=end)
    where = directory or Path(tempfile.mkdtemp(prefix="tokenmeter-demo-"))
    where.mkdir(parents=True, exist_ok=True)
    opts = DemoOptions(
        port=port,
        seed=random.randrange(10_000) if seed is None else seed,
        seats=seats,
        month=played or _month_of(start, end),
        start=start,
        end=end,
        storage_url=url,
        requests=requests,
        concurrency=concurrency,
        directory=where,
        serve=serve,
    )
    try:
        _play(opts)
    except GatewayError as exc:
        fail(str(exc), code=1)


def _play(opts: DemoOptions) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from proxy.demo.play import run_demo

    tco = tco_inputs(Settings.model_construct())  # the demo's gateway runs on the defaults
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    bar = Progress(*columns, transient=True, disable=not sys.stderr.isatty())
    task = bar.add_task(str(opts.month), total=opts.requests)

    def done(r: PlannedRequest) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(
            task, advance=1, description=f"{datetime.fromtimestamp(r.at, UTC):%a %d %b %H:%M}"
        )

    def say(text: str) -> None:
        bar.stop()
        typer.echo(text)

    _stop_on_signals()
    try:
        run_demo(opts, tco, progress=done, say=say)
    finally:
        bar.stop()


def _stop_on_signals() -> None:
    """SIGTERM, SIGHUP (the terminal closed) and SIGINT even where the shell ignores it (a
    background job) end the demo the way Ctrl-C does: the gateway child, in a session of its own
    that no hangup reaches, is shut down, never left running on its own with its port."""
    import signal

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def _window_to_now() -> tuple[datetime, datetime]:
    """The 30 days to now (to the minute): the dashboards' default ranges end now too."""
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    return end - timedelta(days=WINDOW_DAYS), end


def _month_of(start: datetime, end: datetime) -> Month:
    """The calendar month holding most of [start, end): the one the report covers."""
    from metering.export.month import Month

    middle = start + (end - start) / 2
    return Month(middle.year, middle.month)


def _refuse_a_ledger_with_traffic(url: str, *, start: datetime, end: datetime) -> None:
    """A named ledger must hold no requests in the window: the demo's would mix with them."""
    from sqlalchemy import func, select

    from metering.store import create_db_engine, upgrade_schema
    from metering.tables import UsageEventRecord

    engine = create_db_engine(url)
    try:
        upgrade_schema(engine)
        t = UsageEventRecord.__table__.c  # type: ignore[attr-defined]
        stmt = select(func.count()).where(t.started_at >= start, t.started_at < end)
        with engine.connect() as conn:
            found = int(conn.execute(stmt).scalar_one())
    except Exception as exc:  # any driver's error: say which ledger and why
        fail(f"cannot use the ledger {ledger_name(url)}: {exc}", code=2)
    finally:
        engine.dispose()
    if found:
        fail(
            f"the ledger {ledger_name(url)} already holds {found:,} requests between "
            f"{start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M}: pass an empty database",
            code=2,
        )
