"""``tokenmeter reconcile``: the month's metered cost against the provider's cost report."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proxy.cli.common import ConfigOpt, fail, ledger_name, load, open_ledger

if TYPE_CHECKING:
    from metering.export.month import Month
    from metering.reconcile import Reconciliation


def reconcile(
    month: Annotated[str, typer.Option(help="the calendar month, YYYY-MM (UTC)")],
    invoice: Annotated[
        Path,
        typer.Option(
            help="Anthropic cost report (JSON) or Azure Cost Management export (CSV)",
            exists=True,
            dir_okay=False,
        ),
    ],
    tolerance: Annotated[
        str, typer.Option(help="flag days whose difference exceeds this share of the invoice")
    ] = "0.01",
    min_usd: Annotated[
        str, typer.Option("--min-usd", help="never flag a difference of this many USD or less")
    ] = "0.05",
    config: ConfigOpt = None,
) -> None:
    """Compare the month's metered cost with the provider's own cost report, per day and model;
    days beyond the tolerance are flagged (see docs/export.md)."""
    from metering.export.month import Month, UnknownMonth
    from metering.invoices import InvoiceError, read_invoice
    from metering.reconcile import reconcile_month

    try:
        parsed = Month.parse(month)
        tol, floor = _decimal(tolerance, "--tolerance"), _decimal(min_usd, "--min-usd")
        provider, lines = read_invoice(invoice)
    except (UnknownMonth, InvoiceError) as exc:
        fail(str(exc), code=2)
    settings = load(config)
    engine = open_ledger(settings, create=False)
    try:
        result = reconcile_month(engine, parsed, provider, lines, tolerance=tol, min_usd=floor)
    finally:
        engine.dispose()
    typer.echo(f"read {ledger_name(settings.storage.url)} and {invoice} ({provider})")
    typer.echo(render(result, parsed))


def render(result: Reconciliation, month: Month) -> str:
    """The day table, the flagged days, and the month's totals."""
    out = [f"{'day':<11} {'metered':>12} {'invoiced':>12} {'difference':>12} {'%':>8}"]
    for d in result.days:
        share = "" if d.difference_share is None else f"{d.difference_share:+.1%}"
        mark = "  <- beyond tolerance" if d.flagged else ""
        out.append(
            f"{d.day.isoformat():<11} {_usd(d.metered_usd):>12} {_usd(d.invoiced_usd):>12} "
            f"{_usd(d.difference_usd, sign=True):>12} {share:>8}{mark}"
        )
    metered, invoiced = result.metered_usd, result.invoiced_usd
    share = f" ({(metered - invoiced) / invoiced:+.2%})" if invoiced else ""
    out.append(
        f"{month}: metered {_usd(metered)}, invoiced {_usd(invoiced)}, "
        f"difference {_usd(metered - invoiced, sign=True)}{share}; "
        f"{len(result.flagged)} of {len(result.days)} days beyond {result.tolerance:.1%} "
        f"(and ${result.min_usd})"
    )
    unmatched = sorted({c.model for c in result.models if not c.invoiced_usd and c.metered_usd})
    unbilled = sorted({c.model for c in result.models if c.invoiced_usd and not c.metered_usd})
    if unmatched:
        out.append(f"metered, not on the invoice: {', '.join(unmatched)}")
    if unbilled:
        out.append(f"on the invoice, not metered: {', '.join(unbilled)}")
    if result.outside:
        out.append(f"{result.outside} invoice lines outside {month} were not compared")
    return "\n".join(out)


def _usd(value: Decimal, *, sign: bool = False) -> str:
    text = f"${abs(value):,.2f}"
    return ("-" if value < 0 else "+" if sign and value > 0 else "") + text


def _decimal(text: str, option: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        fail(f"{option}: not a number: {text!r}", code=2)
    if value < 0:
        fail(f"{option}: must be 0 or more, not {text}", code=2)
    return value
