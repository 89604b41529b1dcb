"""A generated month of usage for the export tests, and readers for the exported files."""

from __future__ import annotations

import csv
import io
import random
import zipfile
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow.parquet as pq
from sqlalchemy import Engine, text

from cost.capacity import OnPremPlan
from cost.migration import MigrationTarget
from cost.scenarios import get_scenario
from cost.usage import TokenUsage
from metering.events import UsageEvent
from metering.export.files import DIR_FORMATS, write_export, write_export_dir
from metering.export.month import Month, MonthExport
from metering.export.tco_sheet import TcoInputs
from metering.price_map import load_price_map
from tests.metering.factories import make_event

MONTH = Month(2026, 10)
USE_CASES = [f"uc-{i:02d}" for i in range(12)]
DEPLOYMENTS = [
    ("claude-sonnet", "anthropic", "anthropic/claude-sonnet-4-5", False),
    ("mistral-large", "azure_mistral", "azure_mistral/mistral-large-3", False),
    ("mistral-large", "vllm", "vllm/mistral-large", True),
]
INT_METRICS = (
    "requests",
    "errors",
    "unpriced_requests",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_micro_usd",
)


def tco_inputs() -> TcoInputs:
    """All hosted traffic moves to the enterprise preset; list prices from the packaged map."""
    scenario = get_scenario("enterprise-h100")
    plan: OnPremPlan = scenario.plan
    table = load_price_map()
    list_prices = {
        deployment: table.lookup(deployment.split("/", 1)[1], backend)
        for _, backend, deployment, on_prem in DEPLOYMENTS
        if not on_prem
    }
    target = MigrationTarget("enterprise-h100", plan, scenario.provenance)
    return TcoInputs(
        plan=plan,
        targets=(target,),
        scenario="enterprise-h100",
        list_prices=list_prices,
        min_window_s=0,
        min_requests=0,
    )


TEAMS = {"key_a": "platform", "key_b": "research", "key_c": "platform"}  # a key has one team


def month_events(n: int, *, seed: int = 7) -> list[UsageEvent]:
    """``n`` events in MONTH with a skewed use-case spread, and four at its edges (two in it)."""
    rng = random.Random(seed)
    start, end = MONTH.start.timestamp(), MONTH.end.timestamp()
    weights = [1 / (i + 1) ** 1.3 for i in range(len(USE_CASES))]
    times = [rng.uniform(start, end - 1) for _ in range(n)]
    times += [start, start - 0.001, end - 0.001, end]
    return [_event(rng, t, rng.choices(USE_CASES, weights)[0]) for t in times]


def _event(rng: random.Random, started: float, use_case: str) -> UsageEvent:
    model, backend, deployment, on_prem = rng.choice(DEPLOYMENTS)
    inp, out = rng.randint(0, 20_000), rng.randint(0, 3_000)
    read = rng.randint(0, inp // 2)
    write = rng.randint(0, (inp - read) // 2)
    usage = TokenUsage(inp, read, write, rng.randint(0, write), out, rng.randint(0, out // 4))
    session = rng.choice(["unknown", *(f"s-{i}" for i in range(40))])
    cost = None if rng.random() < 0.05 else rng.randint(0, 200_000)
    key_id = rng.choice(["key_a", "key_b", "key_c"])
    return make_event(
        rng, key_id=key_id, team=TEAMS[key_id], started_at=started, use_case=use_case,
        session=session, model=model,
        backend=backend, deployment=deployment, on_prem=on_prem, usage=usage, cost_micro_usd=cost,
    )  # fmt: skip


def ledger_sums(
    engine: Engine,
    group: str | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[Any, dict[str, int]]:
    """The raw events of MONTH (or of [start, end)) summed per ``group`` (None: one total),
    straight from SQL."""
    key = f'"{group}"' if group else "status = status"  # one group: any constant expression
    sql = f"""
        SELECT {key} AS k, COUNT(*) AS requests,
               SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS errors,
               SUM(CASE WHEN cost_micro_usd IS NULL AND input_tokens + output_tokens > 0
                   THEN 1 ELSE 0 END) AS unpriced_requests,
               SUM(input_tokens) AS input_tokens, SUM(cache_read_tokens) AS cache_read_tokens,
               SUM(cache_write_tokens) AS cache_write_tokens,
               SUM(cache_write_1h_tokens) AS cache_write_1h_tokens,
               SUM(output_tokens) AS output_tokens, SUM(reasoning_tokens) AS reasoning_tokens,
               SUM(input_tokens + output_tokens) AS total_tokens,
               COALESCE(SUM(cost_micro_usd), 0) AS cost_micro_usd
        FROM usage_events WHERE started_at >= :start AND started_at < :end GROUP BY {key}"""
    with engine.connect() as conn:
        bounds = _bounds(engine, start or MONTH.start, end or MONTH.end)
        rows = conn.execute(text(sql), bounds).mappings().all()
    return {(r["k"] if group else "all"): {m: int(r[m]) for m in INT_METRICS} for r in rows}


def _bounds(engine: Engine, start: datetime, end: datetime) -> dict[str, Any]:
    if engine.dialect.name == "sqlite":
        fmt = "%Y-%m-%d %H:%M:%S.%f"
        return {"start": start.strftime(fmt), "end": end.strftime(fmt)}
    return {"start": start, "end": end}


def write_any(export: MonthExport, fmt: str, where: Path) -> Path:
    """The export in ``fmt``: a directory for csv and parquet, a file otherwise."""
    if fmt in DIR_FORMATS:
        write_export_dir(export, fmt, where / f"export-{fmt}")
        return where / f"export-{fmt}"
    path = where / f"export.{fmt}"
    with path.open("wb") as out:
        write_export(export, fmt, out)
    return path


def xlsx_totals(path: Path) -> dict[str, dict[str, Any]]:
    """The bold totals row under each data sheet that has one."""
    out = {}
    for ws in openpyxl.load_workbook(path).worksheets[1:]:
        last = ws[ws.max_row]
        if ws.max_row > 1 and last[0].font.b:
            header = [c.value for c in ws[1]]
            out[ws.title] = dict(zip(header, (c.value for c in last), strict=True))
    return out


def read_views(path: Path, fmt: str) -> dict[str, list[dict[str, Any]]]:
    """Every view of an exported file or directory, as the format's own reader returns it
    (XLSX: the data sheets, without page one and without their totals rows)."""
    if fmt == "xlsx":
        wb = openpyxl.load_workbook(path)
        out = {}
        for ws in wb.worksheets[1:]:
            header, *rows = ws.iter_rows(values_only=True)
            if rows and ws[ws.max_row][0].font.b:
                rows = rows[:-1]
            out[ws.title] = [dict(zip(header, r, strict=True)) for r in rows]
        return out
    if path.is_dir():
        return {p.stem: _read_file(p) for p in sorted(path.iterdir()) if p.suffix != ".txt"}
    views: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            view, _, ext = name.partition(".")
            if ext == "csv":
                views[view] = list(csv.DictReader(io.StringIO(zf.read(name).decode())))
            elif ext == "parquet":
                views[view] = pq.read_table(io.BytesIO(zf.read(name))).to_pylist()
    return dict(views)


def _read_file(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))
    return pq.read_table(path).to_pylist()


def metrics(row: dict[str, Any]) -> dict[str, int]:
    return {m: int(row[m]) for m in INT_METRICS}


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))
