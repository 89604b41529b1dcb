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

from metering.export import xlsx
from metering.export.files import write_export
from metering.export.month import MonthExport, build_month_export
from metering.export.story import TOP_USE_CASES, pareto_sentence, verdict
from metering.export.xlsx_page import HEAD_FILL, TOP_ROW
from metering.export.xlsx_style import NUMBER_FORMATS
from metering.store import create_db_engine, upgrade_schema
from metering.writer import insert_events
from tests.metering.export.month_data import MONTH, money, month_events, tco_inputs

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
    assert wb.sheetnames == ["overview", *(v.name for v in export.views)]
    for ws in wb.worksheets[1:]:
        assert ws.freeze_panes == "A2", ws.title
    uses = wb["use_cases"]
    header = [c.value for c in uses[1]]
    fmt = {name: uses.cell(2, i + 1).number_format for i, name in enumerate(header)}
    assert fmt["cost_usd"] == '"$"#,##0.00'
    assert fmt["total_tokens"] == "#,##0"
    assert fmt["cumulative_token_share"] == "0.0%"
    first = wb["top_sessions"].cell(2, 11)
    assert first.is_date and first.number_format == "yyyy-mm-dd hh:mm:ss"


def test_page_one_has_a_native_pareto_chart_with_the_head_and_the_80_percent_mark(export):
    wb = openpyxl.load_workbook(io.BytesIO(written(export, "xlsx")))
    ws = wb["overview"]
    [chart] = ws._charts
    assert isinstance(chart, BarChart)
    bars, line = chart._charts
    assert isinstance(bars, BarChart) and isinstance(line, LineChart)
    assert line.y_axis.axId != bars.y_axis.axId  # the cumulative share on a secondary axis
    assert line.y_axis.crosses == "max"
    [tokens] = bars.series
    cumulative, mark = line.series
    first, last = TOP_ROW + 1, TOP_ROW + len(export.view("use_cases").rows[:TOP_USE_CASES])
    assert tokens.val.numRef.f == f"'overview'!$C${first}:$C${last}"
    assert cumulative.val.numRef.f == f"'overview'!$E${first}:$E${last}"
    assert {ws.cell(r, 8).value for r in range(first, last + 1)} == {0.8}
    assert mark.val.numRef.f == f"'overview'!$H${first}:$H${last}"
    head = len(export.tokens.members)
    assert [p.idx for p in tokens.dPt] == list(range(head))  # the 80 % set, drawn apart
    assert {str(p.graphicalProperties.solidFill.srgbClr) for p in tokens.dPt} == {HEAD_FILL}
    names = [ws.cell(r, 2).value for r in range(first, last + 1)]
    assert names == [r["use_case"] for r in export.view("use_cases").records()][: len(names)]


def test_page_one_tells_the_month_in_words_and_numbers(export):
    ws = openpyxl.load_workbook(io.BytesIO(written(export, "xlsx")))["overview"]
    text = [str(c.value) for row in ws.iter_rows() for c in row if c.value is not None]
    assert "October 2026: LLM spend and where it went" in text
    assert pareto_sentence(export) in text
    assert verdict(export) in text
    assert ws.page_setup.orientation == "landscape"
    assert (ws.page_setup.fitToWidth, ws.page_setup.fitToHeight) == (1, 1)
    assert ws.sheet_properties.pageSetUpPr.fitToPage
    spend = {ws.cell(r, 2).value: ws.cell(r, 3).value for r in range(5, 8)}
    hosted = next(r for r in export.view("summary").records() if r["scope"] == "hosted")
    assert money(spend["Hosted (metered bill)"]) == hosted["cost_usd"]
    parts = money(spend["Hosted (metered bill)"]) + money(spend["On-prem (TCO model)"])
    assert money(spend["Total"]) == parts


def test_every_data_sheet_prints_with_its_header_and_totals(export):
    wb = openpyxl.load_workbook(io.BytesIO(written(export, "xlsx")))
    for view in export.views:
        ws = wb[view.name]
        assert ws.page_setup.orientation == "landscape", view.name
        assert ws.page_setup.fitToWidth == 1 and ws.page_setup.fitToHeight == 0
        assert ws.print_title_rows == "$1:$1"
        assert "page &P of &N" in ws.oddFooter.right.text
        assert ws.oddHeader.center.text.startswith("tokenmeter 2026-10")
        total = view.total_row()
        if total is None or not view.rows:
            continue
        last = [c.value for c in ws[ws.max_row]]
        assert ws[ws.max_row][0].font.b and "total" in last, view.name
        header = [c.value for c in ws[1]]
        body = list(ws.iter_rows(min_row=2, max_row=ws.max_row - 1, values_only=True))
        kinds = {c.name: c.kind for c in view.columns}
        for name in view.summed:
            at = header.index(name)
            if kinds[name] == "share":
                assert last[at] == pytest.approx(sum(r[at] for r in body)), (view.name, name)
            else:  # integers, and cents that add up exactly
                assert money(last[at]) == sum(money(r[at]) for r in body), (view.name, name)


def test_header_and_totals_rows_are_styled_and_the_columns_sized(export):
    wb = openpyxl.load_workbook(io.BytesIO(written(export, "xlsx")))
    for view in (v for v in export.views if v.total_row() is not None and v.rows):
        ws = wb[view.name]
        header, first, total = ws[1], ws[2], ws[ws.max_row]
        assert all(c.font.b for c in header) and not any(c.font.b for c in first), view.name
        assert all(c.font.b and c.border.top.style == "thin" for c in total), view.name
        formats = [NUMBER_FORMATS.get(c.kind, "General") for c in view.columns]
        assert [c.number_format for c in total] == formats, view.name
        assert ws.auto_filter.ref == f"A1:{total[-1].column_letter}{len(view.rows) + 1}"
    uses = wb["use_cases"]
    longest = max(len(r["use_case"]) for r in export.view("use_cases").records())
    assert uses.column_dimensions["B"].width == min(60, max(len("use_case"), longest) + 2)


def test_tco_values_are_formatted_by_their_unit(export):
    ws = openpyxl.load_workbook(io.BytesIO(written(export, "xlsx")))["tco"]
    # items of a migration target are named target.<name>.<item>: read them by their item
    fmt = {
        str(ws.cell(r, 1).value).rsplit(".", 1)[-1]: ws.cell(r, 2).number_format
        for r in range(2, ws.max_row + 1)
    }
    assert fmt["gpus_needed"] == fmt["gpus_deployed"] == "#,##0"
    assert fmt["utilization"] == fmt["growth_per_month"] == "0.0%"
    assert fmt["hosted_usd_per_month"] == '"$"#,##0.00'
    assert fmt["tokens_per_month"] == "#,##0"


def test_parquet_columns_are_typed(export):
    with zipfile.ZipFile(io.BytesIO(written(export, "parquet.zip"))) as zf:
        uses = pq.read_table(io.BytesIO(zf.read("use_cases.parquet")))
        top = pq.read_table(io.BytesIO(zf.read("top_sessions.parquet")))
        days = pq.read_table(io.BytesIO(zf.read("days.parquet")))
    assert days.schema.field("day").type == pa.date32()
    assert uses.schema.field("cost_usd").type == pa.float64()
    assert uses.schema.field("cost_micro_usd").type == pa.int64()
    assert uses.schema.field("token_share").type == pa.float64()
    assert uses.schema.field("use_case").type == pa.string()
    assert top.schema.field("first_request").type == pa.timestamp("us", tz="UTC")
    assert uses.schema.metadata[b"month"] == b"2026-10"


def test_csv_zip_has_one_file_per_view_and_a_readme(export):
    with zipfile.ZipFile(io.BytesIO(written(export, "csv.zip"))) as zf:
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


def test_a_view_longer_than_a_sheet_goes_on_in_the_next(export, monkeypatch):
    monkeypatch.setattr(xlsx, "MAX_SHEET_ROWS", 10)
    wb = openpyxl.load_workbook(io.BytesIO(written(export, "xlsx")))
    view = export.view("line_items")
    parts = [
        wb["line_items"],
        *(wb[f"line_items ({n})"] for n in range(2, 100) if f"line_items ({n})" in wb),
    ]
    assert len(parts) == -(-len(view.rows) // 10) > 2
    rows = [r for ws in parts for r in ws.iter_rows(min_row=2, values_only=True)]
    *data, total = rows
    assert len(data) == len(view.rows)
    header = [c.value for c in parts[0][1]]
    at = header.index("cost_micro_usd")
    assert total[at] == sum(r[at] for r in data) == sum(r[at] for r in view.rows)
    assert all(not ws[ws.max_row][0].font.b for ws in parts[:-1])  # the totals row comes last
