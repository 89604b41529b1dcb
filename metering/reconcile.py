"""Reconciliation with the invoice: the metered cost of a month against the provider's own cost
report, per day and model, with the days beyond a tolerance flagged.

The metered side is the hourly rollups of the provider's backend (``anthropic`` for Anthropic's
report, ``azure_mistral`` for an Azure export), per day (UTC) and upstream model (the part of the
deployment after its backend: ``anthropic/claude-sonnet-4-5`` -> ``claude-sonnet-4-5``). A
metered model and an invoiced one are the same when one's letters and digits start the other's
(the report's ``claude-sonnet-4-5-20250929`` is the deployment's ``claude-sonnet-4-5``); a report
that names no models is compared per day only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Table, func, select

from metering.export.month import Month, MonthExport
from metering.export.views import Column, View
from metering.invoices import ALL_MODELS, InvoiceLine, Provider
from metering.tables import UsageRollupRecord

BACKENDS: dict[Provider, str] = {"anthropic": "anthropic", "azure": "azure_mistral"}
DEFAULT_TOLERANCE = Decimal("0.01")  # 1 %: list-price rounding and late usage stay inside it
DEFAULT_MIN_USD = Decimal("0.05")  # smaller differences are never flagged, whatever their share
_ROLLUPS: Table = UsageRollupRecord.__table__  # type: ignore[attr-defined]
_MICRO = Decimal(1_000_000)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Comparison:
    """Metered against invoiced, in USD, for one day (and model, or all of them)."""

    day: date
    model: str
    metered_usd: Decimal
    invoiced_usd: Decimal
    flagged: bool

    @property
    def difference_usd(self) -> Decimal:
        """Metered minus invoiced: positive when the gateway counted more than was billed."""
        return self.metered_usd - self.invoiced_usd

    @property
    def difference_share(self) -> float | None:
        """The difference relative to the invoice; None when nothing was invoiced."""
        return float(self.difference_usd / self.invoiced_usd) if self.invoiced_usd else None


@dataclass(frozen=True, slots=True)
class Reconciliation:
    provider: Provider
    days: list[Comparison]  # one per day with metered or invoiced cost
    models: list[Comparison]  # one per day and model
    tolerance: Decimal
    min_usd: Decimal
    outside: int  # invoice lines outside the month, not compared

    @property
    def flagged(self) -> list[Comparison]:
        return [d for d in self.days if d.flagged]

    @property
    def metered_usd(self) -> Decimal:
        return sum((d.metered_usd for d in self.days), Decimal(0))

    @property
    def invoiced_usd(self) -> Decimal:
        return sum((d.invoiced_usd for d in self.days), Decimal(0))


def metered_costs(
    engine: Engine, *, provider: Provider, start: datetime, end: datetime
) -> dict[tuple[date, str], int]:
    """Micro-dollars per (day, upstream model) of the provider's backend in [start, end)."""
    r = _ROLLUPS.c
    stmt = (
        select(r.hour, r.deployment, func.coalesce(func.sum(r.cost_micro_usd), 0))
        .where(r.hour >= start, r.hour < end, r.backend == BACKENDS[provider])
        .group_by(r.hour, r.deployment)
    )
    out: dict[tuple[date, str], int] = {}
    with engine.connect() as conn:
        for hour, deployment, micro in conn.execute(stmt):
            day = (datetime.fromisoformat(hour) if isinstance(hour, str) else hour).date()
            model = str(deployment).partition("/")[2] or str(deployment)
            out[(day, model)] = out.get((day, model), 0) + int(micro)
    return out


def reconcile_month(
    engine: Engine,
    month: Month,
    provider: Provider,
    invoice: Iterable[InvoiceLine],
    *,
    tolerance: Decimal = DEFAULT_TOLERANCE,
    min_usd: Decimal = DEFAULT_MIN_USD,
) -> Reconciliation:
    """The month's metered cost against the invoice lines of its days."""
    metered = metered_costs(engine, provider=provider, start=month.start, end=month.end)
    return reconcile(
        provider,
        invoice,
        metered,
        first=month.start.date(),
        last=(month.end - timedelta(days=1)).date(),
        tolerance=tolerance,
        min_usd=min_usd,
    )


def reconcile(
    provider: Provider,
    invoice: Iterable[InvoiceLine],
    metered: Mapping[tuple[date, str], int],
    *,
    first: date,
    last: date,
    tolerance: Decimal = DEFAULT_TOLERANCE,
    min_usd: Decimal = DEFAULT_MIN_USD,
) -> Reconciliation:
    """Compare the invoice lines of days ``first``..``last`` with the metered micro-dollars."""
    lines = list(invoice)
    inside = [x for x in lines if first <= x.day <= last]
    invoiced: dict[tuple[date, str], Decimal] = {}
    for x in inside:
        invoiced[(x.day, x.model)] = invoiced.get((x.day, x.model), Decimal(0)) + x.usd
    names = match_models({m for _, m in metered}, {m for _, m in invoiced})
    counted: dict[tuple[date, str], Decimal] = {}
    for (day, model), micro in metered.items():
        key = (day, names.get(model, model))
        counted[key] = counted.get(key, Decimal(0)) + Decimal(micro) / _MICRO

    def compare(day: date, model: str, ours: Decimal, theirs: Decimal) -> Comparison:
        ours = ours.quantize(Decimal("0.000001"))
        off = abs(ours - theirs)
        flagged = off > min_usd and (not theirs or off > tolerance * abs(theirs))
        return Comparison(day, model, ours, theirs, flagged)

    models = [
        compare(day, model, counted.get((day, model), _ZERO), invoiced.get((day, model), _ZERO))
        for day, model in sorted(set(counted) | set(invoiced))
    ]
    per_day: dict[date, list[Decimal]] = {}
    for c in models:
        acc = per_day.setdefault(c.day, [Decimal(0), Decimal(0)])
        acc[0] += c.metered_usd
        acc[1] += c.invoiced_usd
    days = [compare(day, ALL_MODELS, *per_day[day]) for day in sorted(per_day)]
    return Reconciliation(provider, days, models, tolerance, min_usd, len(lines) - len(inside))


def match_models(metered: set[str], invoiced: set[str]) -> dict[str, str]:
    """Each metered model's name on the invoice, where one name's letters and digits start the
    other's (the longest such invoiced name wins); every model when the invoice names none."""
    if invoiced and invoiced <= {ALL_MODELS}:
        return dict.fromkeys(metered, ALL_MODELS)
    out = {}
    for ours in metered:
        candidates = [theirs for theirs in invoiced if same_model(ours, theirs)]
        if candidates:
            out[ours] = max(candidates, key=lambda t: (len(_letters(t)), t))
    return out


def same_model(ours: str, theirs: str) -> bool:
    """True when one name's letters and digits start the other's."""
    a, b = _letters(ours), _letters(theirs)
    return bool(a and b) and (a.startswith(b) or b.startswith(a))


def _letters(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def reconciliation_views(result: Reconciliation) -> list[View]:
    """``reconciliation`` (per day, flagged) and ``reconciliation_models`` (per day and model)
    for the export."""

    def columns(key: str, doc: str) -> tuple[Column, ...]:
        return (
            Column("day", "date", "the day (UTC)"),
            Column(key, "str", doc),
            Column("metered_usd", "usd", "the gateway's metered cost"),
            Column("invoiced_usd", "usd", f"the cost on the {result.provider} cost report"),
            Column("difference_usd", "usd", "metered_usd - invoiced_usd"),
            Column("difference_share", "share", "difference_usd / invoiced_usd"),
            Column("beyond_tolerance", "bool", "the difference exceeds the tolerance"),
        )

    def rows(items: list[Comparison]) -> list[tuple[Any, ...]]:
        return [
            (c.day, c.model, c.metered_usd, c.invoiced_usd, c.difference_usd,
             c.difference_share, c.flagged)
            for c in items
        ]  # fmt: skip

    summed = ("metered_usd", "invoiced_usd", "difference_usd")
    doc = f"metered against the {result.provider} cost report, per day"
    return [
        View("reconciliation", doc, columns("models", "the models compared"), rows(result.days),
             summed=summed),
        View("reconciliation_models", doc + " and model",
             columns("model", "the model as the invoice names it"), rows(result.models),
             summed=summed),
    ]  # fmt: skip


def summary_sentence(result: Reconciliation) -> str:
    """One sentence for page one."""
    metered, invoiced = result.metered_usd, result.invoiced_usd
    share = f" ({(metered - invoiced) / invoiced:+.1%})" if invoiced else ""
    return (
        f"Invoice ({result.provider}): metered ${metered:,.2f} against ${invoiced:,.2f} invoiced"
        f"{share}; {len(result.flagged)} of {len(result.days)} days beyond "
        f"{result.tolerance:.0%} (see the reconciliation sheet)."
    )


def with_reconciliation(export: MonthExport, result: Reconciliation) -> MonthExport:
    """``export`` with the reconciliation views after its own and its sentence on page one."""
    return replace(
        export,
        views=[*export.views, *reconciliation_views(result)],
        invoice_note=summary_sentence(result),
    )
