"""The data sheets' cells as xlsx_cells writes them: every kind of value reads back as it was
written (text that looks like a formula stays text), each cell has the style it was given, and
the sheet's settings and size survive the rows being filled in."""

from __future__ import annotations

import io
import zipfile
from datetime import date, datetime
from decimal import Decimal

import openpyxl
import pytest
from openpyxl import Workbook
from openpyxl.styles import Border, Font, PatternFill, Side

from metering.export.xlsx_cells import SheetCells, StyleIds, write_package

VALUES = [
    ("formula", '=HYPERLINK("http://127.0.0.1")'),
    ("plus", "+SUM(1,2)"),
    ("markup", "a < b & c > d </t></is>"),
    ("spaces", "  padded\t"),
    ("lines", "one\r\ntwo\nthree"),
    ("unicode", "Zürich 東京 🚀"),
    ("int", 12_345_678_901_234),
    ("negative", -7),
    ("float", 0.1 + 0.2),
    ("decimal", Decimal("1234.50")),
    ("bool", True),
    ("day", date(2026, 10, 31)),
    ("time", datetime(2026, 10, 31, 23, 59, 58, 500_000)),
]


def written(rows: list[tuple[list[object], list[int]]], styles_of=None) -> bytes:
    """A workbook of one sheet, ``data``, with ``rows`` (or the rows ``styles_of`` makes with the
    workbook's style ids)."""
    wb = Workbook()
    ws = wb.active
    ws.title = "data"
    ws.freeze_panes = "A2"
    ws.column_dimensions["A"].width = 33
    ids = StyleIds(ws)
    rows = styles_of(ids) if styles_of else rows
    width = max(len(values) for values, _ in rows)
    book = io.BytesIO()
    wb.save(book)
    out = io.BytesIO()
    cells = SheetCells("data", rows, width=width, height=len(rows))
    write_package(book.getvalue(), out, {ws.path.lstrip("/"): cells}, progress=lambda _: None)
    return out.getvalue()


def filled(rows: list[tuple[list[object], list[int]]], styles_of=None) -> openpyxl.Workbook:
    return openpyxl.load_workbook(io.BytesIO(written(rows, styles_of)))


def test_every_kind_of_value_reads_back_as_written():
    def rows(ids: StyleIds):
        formats = {"day": ids.get(number_format="yyyy-mm-dd")}
        formats["time"] = ids.get(number_format="yyyy-mm-dd hh:mm:ss")
        return [([name, value], [0, formats.get(name, 0)]) for name, value in VALUES]

    ws = filled([], rows)["data"]
    read = {row[0].value: row[1] for row in ws.iter_rows()}
    for name, value in VALUES:
        cell = read[name]
        expected = float(value) if isinstance(value, Decimal) else value
        if isinstance(value, date) and not isinstance(value, datetime):
            expected = datetime(value.year, value.month, value.day)
        assert cell.value == expected, name
    assert read["formula"].data_type == read["plus"].data_type == "s"  # text, never a formula
    assert read["bool"].data_type == "b"


def test_text_with_outer_whitespace_is_marked_to_keep_it():
    with zipfile.ZipFile(io.BytesIO(written([(["  padded\t", "inner space"], [0, 0])]))) as zf:
        xml = zf.read("xl/worksheets/sheet1.xml").decode()
    assert '<t xml:space="preserve">  padded\t</t>' in xml  # else Excel drops the spaces
    assert "<t>inner space</t>" in xml


def test_empty_values_leave_the_cell_empty_but_keep_its_style():
    def rows(ids: StyleIds):
        usd = ids.get(number_format='"$"#,##0.00')
        return [(["a", None, "", float("nan"), None], [0, usd, usd, usd, 0])]

    ws = filled([], rows)["data"]
    assert [c.value for c in ws[1]] == ["a", None, None, None]  # the unstyled one not written
    assert [c.number_format for c in ws[1]][1:] == ['"$"#,##0.00'] * 3


def test_each_cell_has_the_style_it_was_given():
    rule, fill = Border(top=Side(style="thin")), PatternFill("solid", fgColor="F4CCCC")

    def rows(ids: StyleIds):
        share = ids.get(number_format="0.0%")
        total = ids.get(number_format="0.0%", font=Font(bold=True), border=rule)
        return [
            (["name", "share"], [ids.get(font=Font(bold=True))] * 2),
            (["exceeded", 0.25], [ids.get(fill=fill), share]),
            (["total", 0.25], [total, total]),
        ]

    ws = filled([], rows)["data"]
    header, body, total = ws[1], ws[2], ws[3]
    assert all(c.font.b for c in header) and not any(c.font.b for c in body)
    assert body[0].fill.fgColor.rgb.endswith("F4CCCC") and body[1].fill.fill_type is None
    assert body[1].number_format == "0.0%" and body[0].number_format == "General"
    assert all(c.font.b and c.border.top.style == "thin" for c in total)
    assert total[1].number_format == "0.0%"


def test_the_sheet_keeps_its_settings_and_declares_its_size():
    rows = [([f"r{i}", i, i / 2], [0, 0, 0]) for i in range(50)]
    ws = filled(rows)["data"]
    assert ws.freeze_panes == "A2" and ws.column_dimensions["A"].width == 33
    # Readers that trust the declared size (openpyxl read-only, pandas) see every row.
    lean = openpyxl.load_workbook(io.BytesIO(written(rows)), read_only=True)["data"]
    assert (lean.max_row, lean.max_column) == (50, 3)
    assert len(list(lean.iter_rows(values_only=True))) == 50


def test_a_cell_value_of_another_type_is_refused():
    with pytest.raises(TypeError, match="complex"):
        filled([([1j], [0])])
