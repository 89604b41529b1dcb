"""What each file format promises beyond the numbers: sheets, formats and chart; Parquet types;
the CSV zip's documentation; and docs/export.md naming every column."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openpyxl.chart import BarChart, LineChart

from metering.export.files import write_export
from metering.export.month import MonthExport, build_month_export
from metering.store import create_db_engine, upgrade_schema
from metering.writer import insert_events
from tests.metering.export.month_data import MONTH, month_events, tco_inputs

DOCS = Path(__file__).parents[3] / "docs" / "export.md"


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> MonthExport:
    engine = create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('x') / 'ledger.db'}")
    upgrade_schema(engine)
    insert_events(engine, month_events(400))
    result = build_month_export(engine, MONTH, tco=tco_inputs())
    engine.dispose()
    return result


def written(export: MonthExport, fmt: str) -> bytes:
    buf = io.BytesIO()
    write_export(export, fmt, buf)
    return buf.getvalue()


def test_xlsx_sheets_have_frozen_headers_and_number_formats(export):
    wb = openpyxl.load_workbook(io.BytesIO(written(export, "xlsx")))
    assert wb.sheetnames == [v.name for v in export.views]
    for ws in wb.worksheets:
        assert ws.freeze_panes == "A2", ws.title
    uses = wb["use_cases"]
    header = [c.value for c in uses[1]]
    fmt = {name: uses.cell(2, i + 1).number_format for i, name in enumerate(header)}
    assert fmt["cost_usd"] == '"$"#,##0.00'
    assert fmt["total_tokens"] == "#,##0"
    assert fmt["cumulative_token_share"] == "0.0%"
    first = wb["top_sessions"].cell(2, 11)
    assert first.is_date and first.number_format == "yyyy-mm-dd hh:mm:ss"


def test_xlsx_has_a_native_pareto_chart(export):
    wb = openpyxl.load_workbook(io.BytesIO(written(export, "xlsx")))
    [chart] = wb["pareto"]._charts
    assert isinstance(chart, BarChart)
    bars, line = chart._charts
    assert isinstance(bars, BarChart) and isinstance(line, LineChart)
    assert line.y_axis.axId != bars.y_axis.axId  # the cumulative share on a secondary axis
    assert line.y_axis.crosses == "max"
    assert "use_cases" in bars.series[0].val.numRef.f
    assert "use_cases" in line.series[0].val.numRef.f


def test_parquet_columns_are_typed(export):
    with zipfile.ZipFile(io.BytesIO(written(export, "parquet"))) as zf:
        uses = pq.read_table(io.BytesIO(zf.read("use_cases.parquet")))
        top = pq.read_table(io.BytesIO(zf.read("top_sessions.parquet")))
    assert uses.schema.field("cost_usd").type == pa.decimal128(18, 2)
    assert uses.schema.field("cost_micro_usd").type == pa.int64()
    assert uses.schema.field("token_share").type == pa.float64()
    assert uses.schema.field("use_case").type == pa.string()
    assert top.schema.field("first_request").type == pa.timestamp("us", tz="UTC")
    assert uses.schema.metadata[b"month"] == b"2026-10"


def test_csv_zip_has_one_file_per_view_and_a_readme(export):
    with zipfile.ZipFile(io.BytesIO(written(export, "csv"))) as zf:
        names = set(zf.namelist())
        readme = zf.read("README.txt").decode()
    assert names == {"README.txt", *(f"{v.name}.csv" for v in export.views)}
    assert export.headline in readme


def test_docs_describe_every_view_and_column(export):
    docs = DOCS.read_text()
    for view in export.views:
        assert f"`{view.name}`" in docs, view.name
        for column in view.columns:
            assert f"`{column.name}`" in docs, (view.name, column.name)
