"""The export as a workbook: one sheet per view, frozen headers, number formats, and a native
Pareto chart of the use cases (token bars, cumulative-share line on a secondary axis)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, BinaryIO

from openpyxl import Workbook
from openpyxl.chart import BarChart, LineChart, Reference
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from metering.export.month import MonthExport, Progress
from metering.export.views import Kind, View

NUMBER_FORMATS: dict[Kind, str] = {
    "int": "#,##0",
    "float": "#,##0.00",
    "share": "0.0%",
    "usd": '"$"#,##0.00',
    "time": "yyyy-mm-dd hh:mm:ss",
}
CHART_MAX_USE_CASES = 60  # beyond this the bars are unreadable; the sheet has them all
_MAX_WIDTH = 60


def write_xlsx(export: MonthExport, out: BinaryIO, *, progress: Progress) -> None:
    """Write the workbook to ``out``."""
    wb = Workbook()
    wb.remove(wb.active)  # type: ignore[arg-type]
    sheets: dict[str, Worksheet] = {}
    for view in export.views:
        progress(f"writing {view.name}")
        sheets[view.name] = _sheet(wb, view)
    uses = export.view("use_cases")
    if uses.rows:
        sheets["pareto"].add_chart(_pareto_chart(sheets["use_cases"], uses), "A5")
    wb.properties.title = f"tokenmeter {export.month}"
    wb.save(out)


def _sheet(wb: Workbook, view: View) -> Worksheet:
    ws: Worksheet = wb.create_sheet(view.name)
    ws.append([c.name for c in view.columns])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in view.rows:
        ws.append([_cell(v) for v in row])
    for i, column in enumerate(view.columns, start=1):
        letter = get_column_letter(i)
        fmt = NUMBER_FORMATS.get(column.kind)
        if fmt:
            for (cell,) in ws.iter_rows(min_row=2, min_col=i, max_col=i):
                cell.number_format = fmt
        ws.column_dimensions[letter].width = _width(column.name, [r[i - 1] for r in view.rows])
    ws.freeze_panes = "A2"
    if view.rows:
        ws.auto_filter.ref = ws.dimensions
    return ws


def _cell(value: Any) -> Any:
    # Excel has no time zones: times are written in UTC, without an offset.
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _width(header: str, values: list[Any]) -> float:
    shown = (f"{v:,}" if isinstance(v, int) else str(v) for v in values[:200])
    longest = max((len(s) for s in shown), default=0)
    return min(_MAX_WIDTH, max(len(header), longest) + 2)


def _pareto_chart(ws: Worksheet, view: View) -> BarChart:
    col = {c.name: i for i, c in enumerate(view.columns, start=1)}
    last = min(len(view.rows), CHART_MAX_USE_CASES) + 1
    bars = BarChart()
    bars.type = "col"
    bars.title = "Tokens by use case, with cumulative share"
    bars.y_axis.title = "tokens"
    bars.y_axis.number_format = "#,##0"

    def column(name: str, first_row: int = 1) -> Reference:
        return Reference(ws, min_col=col[name], min_row=first_row, max_row=last)

    bars.add_data(column("total_tokens"), titles_from_data=True)
    bars.set_categories(column("use_case", first_row=2))
    line = LineChart()
    line.add_data(column("cumulative_token_share"), titles_from_data=True)
    line.y_axis.axId = 200
    line.y_axis.title = "cumulative share"
    line.y_axis.number_format = "0%"
    line.y_axis.scaling.min, line.y_axis.scaling.max = 0, 1
    line.y_axis.crosses = "max"
    # openpyxl marks axes deleted by default; recent Excel versions then hide them.
    bars.x_axis.delete = bars.y_axis.delete = line.y_axis.delete = False
    bars += line
    bars.width, bars.height = 28, 14
    return bars
