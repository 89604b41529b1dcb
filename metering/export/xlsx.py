"""The export as a workbook: page one (``overview``, see xlsx_page), then one sheet per view.

Every sheet prints: landscape A4, fitted to the page width, the header row repeated, the title in
the page header and the sheet and page number in the footer. Data sheets have a frozen, filterable
header row, a bold totals row under the data (for views that add up), widths from their contents
and number formats by column kind; the ``tco`` sheet's values are formatted by their unit (USD,
share, GPUs, tokens), and a budget's status is coloured (exceeded red, soft amber). Text is
sanitised as it is written: a recorded value with control characters, or one that looks like a
formula, is shown as text and can never break the file. openpyxl writes the workbook; the data
sheets' cells, all but a few of its cells, are written by xlsx_cells, once each, as the file is.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from itertools import chain
from typing import Any, BinaryIO

from openpyxl import Workbook
from openpyxl.styles import Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from metering.export.month import MonthExport, Progress
from metering.export.views import View
from metering.export.xlsx_cells import Row, SheetCells, StyleIds, write_package
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
_BOLD = Font(bold=True)
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
    sheets = _data_sheets(wb, export)
    wb.properties.title = f"tokenmeter {export.month}"
    book = io.BytesIO()
    wb.save(book)  # the data sheets without their rows; saving names their parts
    cells = {ws.path.lstrip("/"): rows for ws, rows in sheets}
    write_package(book.getvalue(), out, cells, progress=progress)


def _data_sheets(wb: Workbook, export: MonthExport) -> list[tuple[Worksheet, SheetCells]]:
    """A sheet per view, set up, and the cells to write into it."""
    styles = StyleIds(wb["overview"])
    sheets = []
    for view in export.views:
        title = f"tokenmeter {export.month}: {view.doc}"
        parts = range(0, max(len(view.rows), 1), MAX_SHEET_ROWS)
        for n, first in enumerate(parts, start=1):
            # A view longer than a sheet goes on in "name (2)", ...: no row is ever left out.
            ws = wb.create_sheet(view.name if n == 1 else f"{view.name} ({n})")
            part = replace(view, rows=view.rows[first : first + MAX_SHEET_ROWS])
            last = first + MAX_SHEET_ROWS >= len(view.rows)
            _set_up(ws, part, title=title)
            total = view.total_row() if last and part.rows else None
            sheets.append((ws, _cells(part, total=total, styles=styles)))
    return sheets


def _set_up(ws: Worksheet, view: View, *, title: str) -> None:
    """Everything of a data sheet but its cells."""
    for i, column in enumerate(view.columns, start=1):
        width = _width(column.name, [r[i - 1] for r in view.rows])
        ws.column_dimensions[get_column_letter(i)].width = width
    ws.freeze_panes = "A2"
    if view.rows:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(view.columns))}{len(view.rows) + 1}"
    print_setup(ws, title=title, fit_height=False)
    ws.print_title_rows = "1:1"


def _cells(view: View, *, total: tuple[Any, ...] | None, styles: StyleIds) -> SheetCells:
    """The header, the rows and the totals row, each cell with its style: bold header, number
    formats by column kind (on ``tco`` by unit), statuses filled, the totals bold under a rule.
    Every style is registered here, before the workbook is saved."""
    columns = view.columns
    body = [styles.get(number_format=NUMBER_FORMATS.get(c.kind)) for c in columns]
    header: Row = ([c.name for c in columns], [styles.get(font=_BOLD)] * len(columns))
    restyle = _row_styles(view, body, styles)
    rows: Iterable[Row] = ((tuple(map(cell_value, r)), restyle(r)) for r in view.rows)
    if total is not None:
        ids = [
            styles.get(number_format=NUMBER_FORMATS.get(c.kind), font=_BOLD, border=_TOTAL_BORDER)
            for c in columns
        ]
        rows = chain(rows, [(tuple(map(cell_value, total)), ids)])
    height = 1 + len(view.rows) + (total is not None)
    return SheetCells(view.name, chain([header], rows), width=len(columns), height=height)


def _row_styles(
    view: View, body: list[int], styles: StyleIds
) -> Callable[[tuple[Any, ...]], Sequence[int]]:
    """A row's style ids: ``body``, but a budget's status filled by its value, and on ``tco``
    the value formatted by its unit."""
    names = [c.name for c in view.columns]
    by_value: list[tuple[int, int, dict[str, int]]] = []  # (styled column, read column, ids)
    for i, column in enumerate(view.columns):
        if column.kind == "str" and column.name.endswith("status"):
            fills = {status: styles.get(fill=fill) for status, fill in STATUS_FILLS.items()}
            by_value.append((i, i, fills))
    if view.name == "tco":
        units = {unit: styles.get(number_format=fmt) for unit, fmt in UNIT_FORMATS.items()}
        by_value.append((names.index("value"), names.index("unit"), units))
    if not by_value:
        return lambda row: body

    def restyle(row: tuple[Any, ...]) -> Sequence[int]:
        ids = list(body)
        for at, key, choices in by_value:
            ids[at] = choices.get(str(row[key] or ""), body[at])
        return ids

    return restyle


def _width(header: str, values: list[Any]) -> float:
    shown = (
        f"{v:,}" if isinstance(v, int) else f"{v:.1%}" if isinstance(v, float) else str(v)
        for v in values[:200]
    )
    longest = max((len(s) for s in shown), default=0)
    return min(_MAX_WIDTH, max(len(header), longest) + 2)
