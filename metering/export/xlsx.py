"""The export as a workbook: page one (``overview``, see xlsx_page), then one sheet per view.

Every sheet prints: landscape A4, fitted to the page width, the header row repeated, the title in
the page header and the sheet and page number in the footer. Data sheets have a frozen, filterable
header row, a bold totals row under the data (for views that add up), widths from their contents
and number formats by column kind; the ``tco`` sheet's values are formatted by their unit (USD,
share, GPUs, tokens), and a budget's status is coloured (exceeded red, soft amber). Text is
sanitised as it is written: a recorded value with control characters, or one that looks like a
formula, is shown as text and can never break the file.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, BinaryIO

from openpyxl import Workbook
from openpyxl.cell.cell import Cell
from openpyxl.styles import Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from metering.export.month import MonthExport, Progress
from metering.export.views import View
from metering.export.xlsx_page import write_overview
from metering.export.xlsx_style import NUMBER_FORMATS, cell_value, print_setup

# The tco sheet's ``value`` column holds numbers of many kinds: its ``unit`` says which.
UNIT_FORMATS = {
    "USD": '"$"#,##0.00',
    "USD/month": '"$"#,##0.00',
    "USD/M tokens": '"$"#,##0.000',
    "share": "0.0%",
    "GPUs": "#,##0",
    "requests": "#,##0",
    "tokens/month": "#,##0",
    "tokens/s": "#,##0.0",
    "month": "0",
    "x": "0.00",
}
CHART_MAX_USE_CASES = 60  # beyond this the bars are unreadable; the sheet has them all
MAX_SHEET_ROWS = 1_000_000  # Excel's limit is 1,048,576 rows: room for the header and totals
_MAX_WIDTH = 60
_TOTAL_BORDER = Border(top=Side(style="thin"))
# A budget's status (team_budgets) stands out: exceeded in red, past the soft threshold in amber.
STATUS_FILLS = {
    "exceeded": PatternFill("solid", fgColor="F4CCCC"),
    "soft": PatternFill("solid", fgColor="FFF2CC"),
}


def write_xlsx(export: MonthExport, out: BinaryIO, *, progress: Progress) -> None:
    """Write the workbook to ``out``."""

    wb = Workbook()
    wb.remove(wb.active)  # type: ignore[arg-type]
    progress("writing overview")
    write_overview(wb.create_sheet("overview"), export)
    for view in export.views:
        progress(f"writing {view.name}")
        title = f"tokenmeter {export.month}: {view.doc}"
        parts = range(0, max(len(view.rows), 1), MAX_SHEET_ROWS)
        for n, first in enumerate(parts, start=1):
            # A view longer than a sheet goes on in "name (2)", ...: no row is ever left out.
            name = view.name if n == 1 else f"{view.name} ({n})"
            part = replace(view, rows=view.rows[first : first + MAX_SHEET_ROWS])
            last = first + MAX_SHEET_ROWS >= len(view.rows)
            _sheet(wb, part, name=name, title=title, total=view.total_row() if last else None)
    wb.properties.title = f"tokenmeter {export.month}"
    wb.save(out)


def _sheet(
    wb: Workbook, view: View, *, name: str, title: str, total: tuple[Any, ...] | None
) -> Worksheet:
    ws: Worksheet = wb.create_sheet(name)
    ws.append([c.name for c in view.columns])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in view.rows:
        ws.append([cell_value(v) for v in row])
    last_data = ws.max_row
    if total is not None and view.rows:
        ws.append([cell_value(v) for v in total])
        for cell in ws[ws.max_row]:
            cell.font, cell.border = Font(bold=True), _TOTAL_BORDER
    for i, column in enumerate(view.columns, start=1):
        fmt = NUMBER_FORMATS.get(column.kind)
        if fmt:
            for (cell,) in ws.iter_rows(min_row=2, min_col=i, max_col=i):
                cell.number_format = fmt
        width = _width(column.name, [r[i - 1] for r in view.rows])
        ws.column_dimensions[get_column_letter(i)].width = width
    if name == "tco":
        _format_by_unit(ws, view)
    _mark_statuses(ws, view)
    _text_cells_as_text(ws)
    ws.freeze_panes = "A2"
    if view.rows:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(view.columns))}{last_data}"
    print_setup(ws, title=title, fit_height=False)
    ws.print_title_rows = "1:1"
    return ws


def _format_by_unit(ws: Worksheet, view: View) -> None:
    names = [c.name for c in view.columns]
    value_at, unit_at = names.index("value") + 1, names.index("unit") + 1
    for r in range(2, ws.max_row + 1):
        fmt = UNIT_FORMATS.get(str(ws.cell(r, unit_at).value or ""))
        if fmt:
            ws.cell(r, value_at).number_format = fmt


def _mark_statuses(ws: Worksheet, view: View) -> None:
    for i, column in enumerate(view.columns, start=1):
        if column.kind == "str" and column.name.endswith("status"):
            last = len(view.rows) + 1
            for (cell,) in ws.iter_rows(min_row=2, max_row=last, min_col=i, max_col=i):
                fill = STATUS_FILLS.get(str(cell.value))
                if fill is not None:
                    cell.fill = fill


def _text_cells_as_text(ws: Worksheet) -> None:
    # openpyxl takes any string starting with "=" for a formula: a recorded name must stay text.
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            if isinstance(cell, Cell) and cell.data_type == "f":
                cell.data_type = "s"


def _width(header: str, values: list[Any]) -> float:
    shown = (
        f"{v:,}" if isinstance(v, int) else f"{v:.1%}" if isinstance(v, float) else str(v)
        for v in values[:200]
    )
    longest = max((len(s) for s in shown), default=0)
    return min(_MAX_WIDTH, max(len(header), longest) + 2)
