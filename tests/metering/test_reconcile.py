"""Reconciliation with the invoice: files in Anthropic's cost-report and Azure's cost-export
formats against a metered month, per day and model, on SQLite and PostgreSQL, and through
``tokenmeter reconcile``."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
import yaml

from metering.export.month import Month
from metering.invoices import ALL_MODELS, InvoiceError, azure_lines, read_invoice
from metering.reconcile import match_models, reconcile_month
from metering.store import create_db_engine, upgrade_schema
from metering.writer import insert_events
from tests.metering.factories import make_event

MONTH = Month(2026, 10)
DAYS = [date(2026, 10, d) for d in range(1, 32)]
SONNET = ("anthropic", "anthropic/claude-sonnet-4-5", 300_000)  # backend, deployment, micro/day
HAIKU = ("anthropic", "anthropic/claude-haiku-4-5", 40_000)
MISTRAL = ("azure_mistral", "azure_mistral/mistral-large-2411", 125_000)


def events():
    rng = random.Random(5)
    out = []
    for day in DAYS:
        t = datetime(day.year, day.month, day.day, 9, tzinfo=UTC).timestamp()
        for i, (backend, deployment, micro) in enumerate((SONNET, HAIKU, MISTRAL)):
            for half in (0, 1):  # two requests a day each, the day's cost split between them
                out.append(
                    make_event(
                        rng, started_at=t + 3600 * (i + 3 * half), backend=backend,
                        deployment=deployment, model=deployment.split("/")[1], on_prem=False,
                        cost_micro_usd=micro // 2,
                    )
                )  # fmt: skip
    return out


@pytest.fixture
def ledger(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    insert_events(engine, events())
    yield engine
    engine.dispose()


def cost_item(amount: Decimal, model: str | None, token_type: str | None) -> dict:
    """One result of a cost-report bucket, every documented field present."""
    return {
        "currency": "USD",
        "amount": str(amount),  # in cents, as a decimal string
        "model": model,
        "cost_type": "tokens" if model else None,
        "token_type": token_type,
        "workspace_id": None,
        "description": f"{model} usage - {token_type}" if model else None,
        "context_window": "0-200k" if model else None,
        "service_tier": "standard" if model else None,
    }


def anthropic_report(*, off: dict[date, Decimal], grouped: bool = True) -> list[dict]:
    """The report as pages of seven daily buckets, as the API returns them (amount in cents)."""
    buckets = []
    for day in [*DAYS, DAYS[-1] + timedelta(days=1)]:  # one day past the month: not compared
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        sonnet = Decimal(SONNET[2]) / 10_000 + off.get(day, Decimal(0)) * 100
        haiku = Decimal(HAIKU[2]) / 10_000
        if grouped:  # group_by[]=description: one item per model and token type
            results = [
                cost_item(sonnet * 2 / 3, "claude-sonnet-4-5-20250929", "uncached_input_tokens"),
                cost_item(sonnet / 3, "claude-sonnet-4-5-20250929", "output_tokens"),
                cost_item(haiku, "claude-haiku-4-5-20251001", "output_tokens"),
            ]
        else:
            results = [cost_item(sonnet + haiku, None, None)]
        buckets.append(
            {
                "starting_at": start.isoformat().replace("+00:00", "Z"),
                "ending_at": (start + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
                "results": results,
            }
        )
    pages = [buckets[i : i + 7] for i in range(0, len(buckets), 7)]
    last = len(pages) - 1
    return [
        {"data": page, "has_more": i < last, "next_page": f"page_{i + 1}" if i < last else None}
        for i, page in enumerate(pages)
    ]


def azure_export(*, off: dict[date, Decimal], ea: bool = False) -> str:
    """A cost-details CSV with MCA column names (or EA's), a VM line that is not tokens."""
    if ea:
        header = ["Date", "MeterCategory", "MeterName", "ProductName", "CostInBillingCurrency",
                  "BillingCurrencyCode", "ResourceId"]  # fmt: skip
    else:
        header = ["date", "meterCategory", "meterName", "productName", "costInBillingCurrency",
                  "billingCurrency", "costInUsd", "ResourceId"]  # fmt: skip
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for day in DAYS:
        total = Decimal(MISTRAL[2]) / 1_000_000 + off.get(day, Decimal(0))
        when = day.strftime("%m/%d/%Y")
        for direction, usd in (("Input Tokens", total * 3 / 5), ("Output Tokens", total * 2 / 5)):
            meter = f"Mistral-Large-2411 {direction}"
            row = [when, "Foundry Models", meter, "Mistral Large 2411 - Mistral AI", f"{usd:.6f}",
                   "USD"] + ([] if ea else [f"{usd:.6f}"]) + ["/subscriptions/x/rg/ai"]  # fmt: skip
            w.writerow(row)
        row = [when, "Virtual Machines", "D4s v5", "Virtual Machines Dsv5 Series", "9.60", "USD"]
        w.writerow(row + ([] if ea else ["9.60"]) + ["/subscriptions/x/rg/vm"])
    return buf.getvalue()


def test_anthropic_report_matches_the_ledger_and_flags_the_days_that_differ(ledger, tmp_path):
    off = {date(2026, 10, 7): Decimal("0.50"), date(2026, 10, 20): Decimal("-0.08")}
    path = tmp_path / "cost_report.json"
    path.write_text(json.dumps(anthropic_report(off=off)))
    provider, lines = read_invoice(path)
    assert provider == "anthropic"
    result = reconcile_month(ledger, MONTH, provider, lines)
    assert [d.day for d in result.flagged] == sorted(off)
    for d in result.days:
        assert d.difference_usd == -off.get(d.day, Decimal(0)), d.day
    assert result.outside == 3  # the three lines of the day after the month
    assert {c.model for c in result.models} == {
        "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5-20251001",
    }
    assert result.metered_usd == Decimal(31 * (SONNET[2] + HAIKU[2])) / 1_000_000
    [seventh] = [d for d in result.days if d.day == date(2026, 10, 7)]
    assert seventh.difference_share == pytest.approx(-0.5 / 0.84)  # metered $0.34, invoiced $0.84


def test_an_ungrouped_report_is_compared_per_day(ledger, tmp_path):
    path = tmp_path / "cost_report.jsonl"  # one response per line
    path.write_text("\n".join(json.dumps(p) for p in anthropic_report(off={}, grouped=False)))
    result = reconcile_month(ledger, MONTH, *read_invoice(path))
    assert {c.model for c in result.models} == {ALL_MODELS}
    assert not result.flagged and result.invoiced_usd == result.metered_usd


@pytest.mark.parametrize("ea", [False, True])
def test_azure_export_keeps_token_meters_and_matches_the_deployment(ledger, tmp_path, ea):
    off = {date(2026, 10, 3): Decimal("0.02"), date(2026, 10, 4): Decimal("1.10")}
    path = tmp_path / "azure.csv"
    path.write_text(azure_export(off=off, ea=ea))
    provider, lines = read_invoice(path)
    assert provider == "azure"
    assert {x.model for x in lines} == {"mistral-large-2411"}  # the VM line is not tokens
    result = reconcile_month(ledger, MONTH, provider, lines)
    # 2 cents is beyond 1 % of $0.125 but not beyond the $0.05 floor: only the 4th is flagged
    assert [d.day for d in result.flagged] == [date(2026, 10, 4)]
    assert result.invoiced_usd - result.metered_usd == sum(off.values())


def test_names_match_when_one_starts_the_other():
    names = match_models(
        {"claude-sonnet-4-5", "mistral-large-2411", "gpt-oss"},
        {"claude-sonnet-4-5-20250929", "Mistral-Large-2411", "claude-haiku-4-5-20251001"},
    )
    assert names == {
        "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
        "mistral-large-2411": "Mistral-Large-2411",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"error": {"type": "authentication_error"}}', "no 'data' list"),
        ('{"data": [{"starting_at": "2026-10-01T00:00:00Z", "results": [{"amount": "1", '
         '"currency": "EUR"}]}]}', "only USD"),
        ('{"data": [{"starting_at": "yesterday", "results": []}]}', "not a date"),
        ("{not json", "not JSON"),
        ("a,b\n1,2\n", "no column among"),
    ],
)  # fmt: skip
def test_a_file_that_is_no_cost_report_is_refused(tmp_path, content, message):
    path = tmp_path / "invoice"
    path.write_text(content)
    with pytest.raises(InvoiceError, match=message):
        read_invoice(path)


def test_azure_cost_that_is_not_a_number_names_its_line():
    text = "date,meterName,costInUsd\n10/01/2026,Mistral Large Input Tokens,abc\n"
    with pytest.raises(InvoiceError, match="line 2 costInUsd: not a number"):
        list(azure_lines(text))


def run(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "tm.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": url}}))
    return subprocess.run(
        [sys.executable, "-m", "proxy", "reconcile", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_cli_prints_the_days_and_the_totals(tmp_path):
    db = tmp_path / "ledger.db"
    engine = create_db_engine(f"sqlite:///{db}")
    upgrade_schema(engine)
    insert_events(engine, events())
    engine.dispose()
    invoice = tmp_path / "cost_report.json"
    invoice.write_text(json.dumps(anthropic_report(off={date(2026, 10, 7): Decimal("0.50")})))
    proc = run(tmp_path, f"sqlite:///{db}", "--month", "2026-10", "--invoice", str(invoice))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == f"read sqlite:///{db} and {invoice} (anthropic)"
    [seventh] = [line for line in out if line.startswith("2026-10-07")]
    assert seventh.split()[1:5] == ["$0.34", "$0.84", "-$0.50", "-59.5%"]
    assert seventh.endswith("<- beyond tolerance")
    assert "2026-10: metered $10.54, invoiced $11.04, difference -$0.50 (-4.53%)" in proc.stdout
    assert "1 of 31 days beyond 1.0%" in proc.stdout
    assert "3 invoice lines outside 2026-10 were not compared" in proc.stdout


def test_cli_refuses_bad_input_clearly(tmp_path):
    invoice = tmp_path / "x.json"
    invoice.write_text("{}")
    url = f"sqlite:///{tmp_path / 'none.db'}"
    bad_month = run(tmp_path, url, "--month", "2026-13", "--invoice", str(invoice))
    assert bad_month.returncode == 2 and "not a month" in bad_month.stderr
    bad_file = run(tmp_path, url, "--month", "2026-10", "--invoice", str(invoice))
    assert bad_file.returncode == 2 and "not an Anthropic cost report" in bad_file.stderr
    invoice.write_text(json.dumps(anthropic_report(off={})))
    no_ledger = run(tmp_path, url, "--month", "2026-10", "--invoice", str(invoice))
    assert no_ledger.returncode == 2 and "no ledger at" in no_ledger.stderr
    assert not (tmp_path / "none.db").exists()


def test_the_export_carries_the_reconciliation_when_given_the_invoice(tmp_path):
    db = tmp_path / "ledger.db"
    engine = create_db_engine(f"sqlite:///{db}")
    upgrade_schema(engine)
    insert_events(engine, events())
    engine.dispose()
    invoice = tmp_path / "azure.csv"
    invoice.write_text(azure_export(off={date(2026, 10, 4): Decimal("1.10")}))
    config = tmp_path / "tm.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": f"sqlite:///{db}"}}))
    cmd = [sys.executable, "-m", "proxy", "export", "--config", str(config), "--month", "2026-10"]
    proc = subprocess.run(
        [*cmd, "--invoice", str(invoice), "--out", "x.xlsx"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    wb = openpyxl.load_workbook(tmp_path / "x.xlsx")
    page_one = [c.value for row in wb["overview"].iter_rows() for c in row if c.value]
    assert (
        "Invoice (azure): metered $3.88 against $4.98 invoiced (-22.1%); 1 of 31 days beyond 1% "
        "(see the reconciliation sheet)." in page_one
    )
    ws = wb["reconciliation"]
    header = [c.value for c in ws[1]]
    flagged = [
        r for r in ws.iter_rows(min_row=2, values_only=True) if r[header.index("beyond_tolerance")]
    ]
    assert [r[0].date() for r in flagged] == [date(2026, 10, 4)]
    assert "reconciliation_models" in wb.sheetnames
