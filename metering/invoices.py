"""The providers' own cost reports, read into invoice lines (day, model, USD).

Two formats, as the providers document them:

- Anthropic's Usage & Cost Admin API cost report (``GET /v1/organizations/cost_report``, JSON):
  ``{"data": [{"starting_at", "ending_at", "results": [{"amount", "currency", "model",
  "cost_type", "token_type", ...}]}], "has_more", "next_page"}``, daily buckets. ``amount`` is a
  decimal string in the currency's lowest unit (cents). ``model`` is set when the report is
  grouped by ``description``; otherwise the line is the day's total. A file may hold one
  response, a JSON array of them (the pages), or one response per line.
- An Azure Cost Management cost-details export (CSV, actual or amortized cost, EA or MCA column
  names, in any letter case): the date (``date``/``UsageDate``/``UsageDateTime``, MM/DD/YYYY or
  ISO), the cost (``costInUsd``, else ``CostInBillingCurrency``/``PreTaxCost``/``Cost`` with the
  currency in ``billingCurrency``/``BillingCurrencyCode``/``Currency``), and the meter
  (``meterName``, ``productName``). Only token meters are kept (the meter or product names
  tokens): an export covers the whole subscription, virtual machines included. The model is the
  meter name without its token direction ("Mistral-Large-2411 Input Tokens" ->
  "mistral-large-2411").
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

Provider = Literal["anthropic", "azure"]
ALL_MODELS = "(all models)"  # an invoice line that names no model


class InvoiceError(ValueError):
    """The file is not a cost report this module reads; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One day's cost of one model, in USD, as the provider billed it."""

    day: date
    model: str
    usd: Decimal


def read_invoice(path: Path) -> tuple[Provider, list[InvoiceLine]]:
    """The provider of the report at ``path`` (by its content) and its lines."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvoiceError(f"cannot read {path}: {exc}") from exc
    if text.lstrip()[:1] in ("{", "["):
        return "anthropic", list(anthropic_lines(_json_documents(text)))
    return "azure", list(azure_lines(text))


def _json_documents(text: str) -> Iterator[Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        try:  # one response per line
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise InvoiceError(f"not JSON: {exc}") from exc
        yield from docs
        return
    yield from doc if isinstance(doc, list) else [doc]


def anthropic_lines(pages: Iterable[Any]) -> Iterator[InvoiceLine]:
    """The lines of Anthropic cost-report pages."""
    for page in pages:
        if not isinstance(page, Mapping) or not isinstance(page.get("data"), list):
            raise InvoiceError("not an Anthropic cost report: no 'data' list of time buckets")
        for bucket in page["data"]:
            day = _day(str(bucket.get("starting_at", "")))
            for result in bucket.get("results") or []:
                currency = str(result.get("currency") or "USD")
                if currency != "USD":
                    raise InvoiceError(f"cost in {currency}: only USD reports are compared")
                cents = _decimal(result.get("amount"), "amount")
                yield InvoiceLine(day, str(result.get("model") or ALL_MODELS), cents / 100)


_DATE = ("date", "usagedate", "usagedatetime", "billingperiodstartdate")
_USD = ("costinusd", "pretaxcostinusd")
_COST = ("costinbillingcurrency", "pretaxcost", "cost")
_CURRENCY = ("billingcurrency", "billingcurrencycode", "currency")
_DIRECTION = re.compile(r"[\s_-]*(input|output|inp|outp|in|out|cached)?[\s_-]*tokens?\b.*$", re.I)


def azure_lines(text: str) -> Iterator[InvoiceLine]:
    """The token-meter lines of an Azure Cost Management CSV export."""
    reader = csv.DictReader(io.StringIO(text))
    header = {name.strip().lower(): name for name in reader.fieldnames or ()}
    date_col = _pick(header, _DATE)
    usd_col = _pick(header, _USD, required=False)
    cost_col = usd_col or _pick(header, _COST)
    currency_col = None if usd_col else _pick(header, _CURRENCY, required=False)
    meter, product = header.get("metername"), header.get("productname")
    if meter is None and product is None:
        raise InvoiceError("not an Azure cost export: no meterName or productName column")
    for n, row in enumerate(reader, start=2):
        names = " ".join(row.get(c) or "" for c in (meter, product) if c)
        if "token" not in names.lower():
            continue
        if currency_col and (row.get(currency_col) or "USD").upper() != "USD":
            raise InvoiceError(f"line {n}: cost in {row[currency_col]}: only USD is compared")
        usd = _decimal(row.get(cost_col), f"line {n} {cost_col}")
        yield InvoiceLine(_day(row.get(date_col) or ""), azure_model(row, meter, product), usd)


def azure_model(row: Mapping[str, str | None], meter: str | None, product: str | None) -> str:
    """The model a token meter bills: its name without the token direction, lower case."""
    name = (row.get(meter) if meter else None) or (row.get(product) if product else None) or ""
    model = _DIRECTION.sub("", name.strip()).strip(" -_")
    return re.sub(r"\s+", "-", model).lower() or ALL_MODELS


def _pick(header: Mapping[str, str], names: tuple[str, ...], *, required: bool = True) -> Any:
    for name in names:
        if name in header:
            return header[name]
    if required:
        raise InvoiceError(f"not an Azure cost export: no column among {', '.join(names)}")
    return None


def _decimal(value: Any, what: str) -> Decimal:
    try:
        return Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation as exc:
        raise InvoiceError(f"{what}: not a number: {value!r}") from exc


def _day(text: str) -> date:
    text = text.strip()
    for fmt in ("%m/%d/%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(text[:10], fmt).date()
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError as exc:
        raise InvoiceError(f"not a date: {text!r}") from exc
