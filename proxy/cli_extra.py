"""``tokenmeter export`` and ``tokenmeter demo``, registered on the main command line."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from proxy.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from metering.export import Month, MonthExport
    from metering.export_tco import TcoInputs
    from proxy.demo import DemoOptions
    from proxy.demo_org import PlannedRequest


DEMO_REQUESTS = 15_000  # about a minute on a 2-core machine


class ExportFormat(StrEnum):
    csv = "csv"
    xlsx = "xlsx"
    parquet = "parquet"


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file", envvar="TOKENMETER_CONFIG")
]


def register_extra_commands(cli: typer.Typer) -> None:
    cli.command("export")(export)
    cli.command("demo")(demo)


def export(
    month: Annotated[str, typer.Option(help="the calendar month, YYYY-MM (UTC)")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="file format")] = ExportFormat.xlsx,
    out: Annotated[
        Path | None,
        typer.Option(
            help="file to write (default: tokenmeter-YYYY-MM.xlsx, .csv.zip, .parquet.zip)"
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Write a month's finance export: totals, per use case/agent/user/model/backend, the 80/20
    split, sessions and the TCO projection (see docs/export.md)."""
    from metering.export import EmptyMonth, Month, UnknownMonth
    from metering.export_files import file_name

    try:
        parsed = Month.parse(month)
    except UnknownMonth as exc:
        _fail(str(exc), code=2)
    settings = _settings(config)
    try:
        result = _build(settings, parsed, fmt.value, out or Path(file_name(month, fmt.value)))
    except EmptyMonth as exc:
        _fail(str(exc), code=1)
    path, export_ = result
    [total] = (r for r in export_.view("summary").records() if r["scope"] == "all")
    typer.echo(
        f"wrote {path} ({len(export_.views)} views, {path.stat().st_size:,} bytes): "
        f"{total['requests']:,} requests, ${total['cost_usd']:,}; {export_.headline}"
    )
    if not export_.reconciled:
        typer.echo(
            "warning: the rollups and the raw events of the month disagree (raw events pruned "
            "by storage.retention_days?): the session views cover only the events still kept",
            err=True,
        )


def _build(settings: Settings, month: Month, fmt: str, out: Path) -> tuple[Path, MonthExport]:
    from rich.progress import Progress

    from metering.export import STEPS, build_month_export
    from metering.export_files import write_export

    engine, tco = _engine(settings), _tco_inputs(settings)
    with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"export {month}", total=len(STEPS))

        def step(description: str) -> None:
            bar.update(task, description=description, advance=1)

        export_ = build_month_export(engine, month, tco=tco, progress=step)
        bar.update(task, total=len(STEPS) + len(export_.views) + 1)
        tmp = out.with_name(out.name + ".partial")
        with tmp.open("wb") as fh:
            write_export(export_, fmt, fh, progress=step)
        os.replace(tmp, out)
    engine.dispose()
    return out, export_


def demo(
    port: Annotated[int, typer.Option(help="gateway port on 127.0.0.1 (0: any free)")] = 4100,
    seed: Annotated[int | None, typer.Option(help="replay a month (default: random)")] = None,
    seats: Annotated[int, typer.Option(min=1, help="seats in the organisation")] = 200,
    month: Annotated[str | None, typer.Option(help="YYYY-MM (default: last month)")] = None,
    requests: Annotated[int, typer.Option(min=1, help="requests in the month")] = DEMO_REQUESTS,
    concurrency: Annotated[int, typer.Option(min=1, help="requests in flight")] = 32,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="ledger and log (default: a new temp directory)")
    ] = None,
    serve: Annotated[bool, typer.Option(help="keep serving after the report")] = True,
) -> None:
    """Play a synthetic organisation's month through the gateway on simulated backends, print
    the 80/20 split, the top use cases and the TCO verdict, then keep serving."""
    import random
    import tempfile

    from metering.export import Month, UnknownMonth
    from proxy.demo import DemoOptions
    from proxy.demo_gateway import GatewayError

    try:
        played = Month.parse(month) if month else _last_month()
    except UnknownMonth as exc:
        _fail(str(exc), code=2)
    if directory is not None and (directory / "ledger.db").exists():
        _fail(f"{directory} already holds a demo ledger: pass a new --dir", code=2)
    where = directory or Path(tempfile.mkdtemp(prefix="tokenmeter-demo-"))
    where.mkdir(parents=True, exist_ok=True)
    opts = DemoOptions(
        port=port,
        seed=random.randrange(10_000) if seed is None else seed,
        seats=seats,
        month=played,
        requests=requests,
        concurrency=concurrency,
        directory=where,
        serve=serve,
    )
    try:
        _play(opts)
    except GatewayError as exc:
        _fail(str(exc), code=1)


def _play(opts: DemoOptions) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from proxy.demo import run_demo

    tco = _tco_inputs(Settings.model_construct())  # the demo's gateway runs on the defaults
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
    """SIGTERM, and SIGINT even where the shell ignores it (a background job), end the demo the
    way Ctrl-C does: the gateway child is shut down, never left running on its own."""
    import signal

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


def _last_month() -> Month:
    from metering.export import Month

    today = datetime.now(UTC)
    return Month(today.year - (today.month == 1), (today.month - 2) % 12 + 1)


def _tco_inputs(settings: Settings) -> TcoInputs:
    from metering.export_tco import TcoInputs
    from proxy.catalogue import default_models
    from proxy.pricing_setup import build_pricebook
    from proxy.projector import tco_inputs

    book = build_pricebook(settings, settings.models or default_models())
    try:
        plan, hosted = tco_inputs(settings.tco, book)
    except ConfigError as exc:
        _fail(str(exc), code=2)
    return TcoInputs(plan=plan, hosted=hosted, scenario=settings.tco.scenario)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        _fail(str(exc), code=2)


def _engine(settings: Settings) -> Engine:
    from metering.store import SchemaOutdated, create_db_engine, prepare_schema

    engine = create_db_engine(settings.storage.url)
    try:
        prepare_schema(engine)
    except SchemaOutdated as exc:
        _fail(str(exc), code=2)
    return engine


def _fail(message: str, *, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
