"""Odd values in recorded fields never break an export: control characters, text that looks
like a formula, non-ASCII, on SQLite and PostgreSQL, in every format."""

from __future__ import annotations

import io
import random

import httpx
import openpyxl
import pyarrow.parquet as pq
import pytest

from metering.export.month import build_month_export
from metering.export.xlsx_style import sanitise
from metering.store import create_db_engine, upgrade_schema
from metering.writer import insert_events
from tests.metering.export.month_data import MONTH, tco_inputs, write_any
from tests.metering.factories import make_event
from tests.support import Gateway

ODD = {
    "bell\x07model": "bell\\x07model",
    "esc\x1b[31mred": "esc\\x1b[31mred",
    '=HYPERLINK("http://127.0.0.1")': '=HYPERLINK("http://127.0.0.1")',
    "+SUM(1,2)": "+SUM(1,2)",
    "del\x7f": "del\\x7f",
    "tab\tand\nnewline": "tab\tand\nnewline",
    "Zürich 東京 🚀": "Zürich 東京 🚀",
    "": "",
}


@pytest.fixture
def export(db_url):
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    rng = random.Random(3)
    start = MONTH.start.timestamp()
    events = [
        make_event(rng, started_at=start + 3600 * i, model=odd, use_case=odd, user=odd, agent=odd)
        for i, odd in enumerate(ODD)
    ]
    insert_events(engine, events)
    yield build_month_export(engine, MONTH, tco=tco_inputs())
    engine.dispose()


@pytest.mark.parametrize("fmt", ["xlsx", "csv", "parquet", "csv.zip", "parquet.zip"])
def test_every_format_writes_the_month(export, fmt, tmp_path):
    assert write_any(export, fmt, tmp_path).exists()


def test_the_workbook_shows_odd_values_as_escaped_text(export, tmp_path):
    wb = openpyxl.load_workbook(write_any(export, "xlsx", tmp_path))
    ws = wb["models"]
    header = [c.value for c in ws[1]]
    cells = [row[header.index("model")] for row in ws.iter_rows(min_row=2)][:-1]  # not totals
    assert {c.value or "" for c in cells} == set(ODD.values())
    assert all(c.data_type == "s" for c in cells if c.value)  # a formula-like name stays text


def test_parquet_keeps_the_values_as_recorded(export, tmp_path):
    where = write_any(export, "parquet", tmp_path)
    models = pq.read_table(where / "models.parquet").column("model").to_pylist()
    assert set(models) == set(ODD)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("a\x00b", "a\\x00b"), ("\ud800", "\\xd800"), ("x" * 40_000, "x" * 32_766 + "…")],
)
def test_sanitise_escapes_what_xml_cannot_carry(raw, shown):
    assert sanitise(raw) == shown


def test_the_admin_download_serves_a_month_with_odd_values(tmp_path):
    gw = Gateway(tmp_path / "tm.db", {}).start()
    try:
        rng = random.Random(4)
        start = MONTH.start.timestamp()
        insert_events(
            gw.engine,
            [make_event(rng, started_at=start + 60 * i, model=odd) for i, odd in enumerate(ODD)],
        )
        r = httpx.get(f"{gw.url}/admin/exports/{MONTH}.xlsx", headers=gw.admin_headers, timeout=60)
    finally:
        gw.stop()
    assert r.status_code == 200
    models = openpyxl.load_workbook(io.BytesIO(r.content))["models"]
    assert "bell\\x07model" in [c.value for c in models["B"]]
