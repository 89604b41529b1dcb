"""``tokenmeter export``: a month's finance export, written to a file."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proxy.cli.common import ConfigOpt, fail, ledger_name, load, open_ledger, tco_inputs
from proxy.config.settings import Settings

if TYPE_CHECKING:
    from metering.export.month import Month, MonthExport
    from metering.invoices import InvoiceLine, Provider

    Bill = tuple[Provider, list[InvoiceLine]]


class ExportFormat(StrEnum):
    xlsx = "xlsx"
    csv = "csv"
    parquet = "parquet"
    csv_zip = "csv.zip"
    parquet_zip = "parquet.zip"


def export(
    month: Annotated[str, typer.Option(help="the calendar month, YYYY-MM (UTC)")],
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format", help="xlsx; csv or parquet: a directory of one file per view; or their zip"
        ),
    ] = ExportFormat.xlsx,
    out: Annotated[
        Path | None,
        typer.Option(
            help="file to write, or directory for csv and parquet (default: "
            "tokenmeter-YYYY-MM.xlsx, tokenmeter-YYYY-MM-csv/, tokenmeter-YYYY-MM.csv.zip, ...)"
        ),
    ] = None,
    invoice: Annotated[
        Path | None,
        typer.Option(
            help="add the reconciliation with this Anthropic cost report (JSON) or Azure cost "
            "export (CSV), as in tokenmeter reconcile",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Write a month's finance export: page one, totals, per use case/agent/user/model/backend/
    team, per day, month over month, budget vs actual per team, line items, the 80/20 split,
    sessions and the TCO projection (see docs/export.md)."""
    from metering.export.files import DIR_FORMATS, dir_name, file_name
    from metering.export.month import EmptyMonth, Month, UnknownMonth
    from metering.invoices import InvoiceError, read_invoice

    try:
        parsed = Month.parse(month)
        bill = read_invoice(invoice) if invoice else None
    except (UnknownMonth, InvoiceError) as exc:
        fail(str(exc), code=2)
    settings = load(config)
    name = dir_name if fmt.value in DIR_FORMATS else file_name
    target = out or Path(name(str(parsed), fmt.value))
    if fmt.value in DIR_FORMATS and target.exists() and not target.is_dir():
        fail(f"{target} is a file: --format {fmt.value} writes a directory", code=2)
    if fmt.value not in DIR_FORMATS and target.is_dir():
        fail(f"{target} is a directory: --format {fmt.value} writes a file", code=2)
    ledger = ledger_name(settings.storage.url)
    try:
        path, export_ = _build(settings, parsed, fmt.value, target, bill)
    except EmptyMonth as exc:
        fail(f"{exc} (ledger {ledger})", code=1)
    [total] = (r for r in export_.view("summary").records() if r["scope"] == "all")
    size = sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size
    typer.echo(
        f"read {ledger}\nwrote {path} ({len(export_.views)} views, {size:,} bytes): "
        f"{total['requests']:,} requests, ${total['cost_usd']:,}; {export_.headline}"
    )
    if not export_.reconciled:
        typer.echo(
            "warning: the rollups and the raw events of the month disagree (raw events pruned "
            "by storage.retention_days?): the session views cover only the events still kept",
            err=True,
        )


def _build(
    settings: Settings, month: Month, fmt: str, out: Path, bill: Bill | None
) -> tuple[Path, MonthExport]:
    from rich.progress import Progress

    from metering.export.files import DIR_FORMATS, write_export, write_export_dir
    from metering.export.month import STEPS, build_month_export
    from proxy.config.budgets import config_budgets

    engine, tco = open_ledger(settings, create=False), tco_inputs(settings)
    budgets = config_budgets(settings.budgets)
    with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"export {month}", total=len(STEPS))

        def step(description: str) -> None:
            bar.update(task, description=description, advance=1)

        export_ = build_month_export(engine, month, tco=tco, config_budgets=budgets, progress=step)
        if bill is not None:
            from metering.reconcile import reconcile_month, with_reconciliation

            export_ = with_reconciliation(export_, reconcile_month(engine, month, *bill))
        bar.update(task, total=len(STEPS) + len(export_.views) + 1)
        if fmt in DIR_FORMATS:
            write_export_dir(export_, fmt, out, progress=step)
        else:
            tmp = out.with_name(out.name + ".partial")
            with tmp.open("wb") as fh:
                write_export(export_, fmt, fh, progress=step)
            os.replace(tmp, out)
    engine.dispose()
    return out, export_
