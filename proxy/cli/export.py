"""``tokenmeter export``: a month's finance export, written to a file."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proxy.cli.common import ConfigOpt, fail, load, open_ledger, tco_inputs
from proxy.config.settings import Settings

if TYPE_CHECKING:
    from metering.export.month import Month, MonthExport


class ExportFormat(StrEnum):
    csv = "csv"
    xlsx = "xlsx"
    parquet = "parquet"


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
    from metering.export.files import file_name
    from metering.export.month import EmptyMonth, Month, UnknownMonth

    try:
        parsed = Month.parse(month)
    except UnknownMonth as exc:
        fail(str(exc), code=2)
    settings = load(config)
    try:
        result = _build(settings, parsed, fmt.value, out or Path(file_name(month, fmt.value)))
    except EmptyMonth as exc:
        fail(str(exc), code=1)
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

    from metering.export.files import write_export
    from metering.export.month import STEPS, build_month_export

    engine, tco = open_ledger(settings), tco_inputs(settings)
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
