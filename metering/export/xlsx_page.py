"""Page one of the workbook: the ``overview`` sheet a CFO reads in thirty seconds.

One landscape page: the month, spend (hosted, on-prem, total) against the previous month, the
80/20 sentence, the TCO verdict, the top use cases, and a native Pareto chart of them (token
bars, the head that carries 80 % highlighted, the cumulative share as a line with the 80 % mark).
The numbers come from ``story``; this module only lays them out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from openpyxl.chart import BarChart, LineChart, Reference
from openpyxl.chart.marker import DataPoint
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.worksheet.worksheet import Worksheet

from metering.export.month import MonthExport
from metering.export.story import pareto_sentence, spend_lines, top_use_cases, verdict
from metering.export.views import total_tokens
from metering.export.xlsx_style import NUMBER_FORMATS, cell_value, print_setup

HEAD_FILL = "C0504D"  # the use cases of the 80 % set: bars and rows
TAIL_FILL = "8EA9C8"
_HEAD_ROW_FILL = PatternFill("solid", fgColor="F6DCDB")
_RULE = Border(bottom=Side(style="thin"))
_TOTAL = Border(top=Side(style="thin"))
_USD, _SHARE, _INT = NUMBER_FORMATS["usd"], NUMBER_FORMATS["share"], NUMBER_FORMATS["int"]
SPEND_ROW = 4
TOP_ROW = 13
_WIDTHS = {"A": 5, "B": 34, "C": 16, "D": 16, "E": 14, "F": 12, "G": 11, "H": 9}
_TOP_HEADER = ("#", "Use case", "Tokens", "Token share", "Cumulative", "Cost", "Cost share")


def write_overview(ws: Worksheet, export: MonthExport, *, now: datetime | None = None) -> None:
    """Lay page one out on ``ws``."""
    month = export.month.start
    label = f"{month:%B %Y}"
    ws["A1"] = f"{label}: LLM spend and where it went"
    ws["A1"].font = Font(bold=True, size=18)
    ws["A2"] = _coverage(export, now or datetime.now(UTC))
    ws["A2"].font = Font(italic=True, color="595959")
    _spend(ws, export, label=label)
    ws["A10"] = cell_value(pareto_sentence(export))
    ws["A10"].font = Font(bold=True, size=13)
    ws["A11"] = cell_value(verdict(export))
    ws["A11"].alignment = Alignment(wrap_text=True, vertical="top")
    ws.merge_cells("A11:H11")  # the chart covers the right half
    ws.row_dimensions[11].height = 48
    if export.invoice_note:
        ws["A12"] = cell_value(export.invoice_note)
        ws["A12"].font = Font(italic=True)
    last = _top_table(ws, export)
    for column, width in _WIDTHS.items():
        ws.column_dimensions[column].width = width
    ws.column_dimensions["H"].hidden = True  # the 80 % mark the chart draws
    if last > TOP_ROW:
        ws.add_chart(_pareto_chart(ws, export, last=last), "I4")
    print_setup(ws, title=f"tokenmeter {export.month}: overview", fit_height=True)
    ws.print_area = f"A1:R{max(last, 34)}"
    ws.sheet_view.showGridLines = False


def _coverage(export: MonthExport, now: datetime) -> str:
    month = export.month
    span = "the whole month" if now >= month.end else f"month to date, to {now:%Y-%m-%d %H:%M}"
    tokens, requests = total_tokens(export.totals), export.totals[0]
    return (
        f"{month.start:%Y-%m-%d} to {month.end:%Y-%m-%d} (UTC), {span}: {requests:,} requests, "
        f"{tokens:,} tokens. Exact figures and every view on the following sheets."
    )


def _spend(ws: Worksheet, export: MonthExport, *, label: str) -> None:
    previous = f"{export.month.previous.start:%B %Y}"
    header = ("", "Spend", label, previous, "Change", "Change %")
    for col, text in enumerate(header, start=1):
        cell = ws.cell(SPEND_ROW, col, text)
        cell.font, cell.border = Font(bold=True), _RULE
    for offset, line in enumerate(spend_lines(export), start=1):
        r = SPEND_ROW + offset
        values: tuple[Any, ...] = (
            line.label,
            line.now,
            line.before,
            line.change,
            line.change_share,
        )
        for col, value in enumerate(values, start=2):
            cell = ws.cell(r, col, value if value is not None else "n/a")
            if col > 2:
                cell.number_format = _SHARE if col == 6 else _USD
                cell.alignment = Alignment(horizontal="right")
            if line.label == "Total":
                cell.font, cell.border = Font(bold=True), _TOTAL
    r = SPEND_ROW + 4
    now, before = total_tokens(export.totals), total_tokens(export.previous["all"])
    ws.cell(r, 2, "Tokens")
    for col, value in ((3, now), (4, before), (5, now - before)):
        ws.cell(r, col, value).number_format = _INT
    cell = ws.cell(r, 6, now / before - 1 if before else "n/a")
    cell.number_format, cell.alignment = _SHARE, Alignment(horizontal="right")


def _top_table(ws: Worksheet, export: MonthExport) -> int:
    """The top use cases from TOP_ROW; returns the last row of use cases (TOP_ROW: none)."""
    for col, text in enumerate((*_TOP_HEADER, "80 % mark"), start=1):
        cell = ws.cell(TOP_ROW, col, text)
        cell.font, cell.border = Font(bold=True), _RULE
    head, other = top_use_cases(export)
    members = set(export.tokens.members)
    r = TOP_ROW
    for rank, row in enumerate(head, start=1):
        r += 1
        _use_case_row(ws, r, rank, row)
        ws.cell(r, 8, float(export.tokens.share)).number_format = _SHARE
        if row["use_case"] in members:
            for col in range(1, 8):
                ws.cell(r, col).fill = _HEAD_ROW_FILL
    last = r
    if other is not None:
        r += 1
        _use_case_row(ws, r, None, other)
    r += 1
    total = export.totals
    uses = export.view("use_cases").total_row()
    cost = uses[[c.name for c in export.view("use_cases").columns].index("cost_usd")] if uses else 0
    for col, value, fmt in (
        (2, "Total", None),
        (3, total_tokens(total), _INT),
        (4, 1.0, _SHARE),
        (6, cost, _USD),
        (7, 1.0, _SHARE),
    ):
        cell = ws.cell(r, col, value)
        cell.font, cell.border = Font(bold=True), _TOTAL
        if fmt:
            cell.number_format = fmt
    ws.cell(r + 2, 1, "Highlighted: the use cases that together carry 80 % of tokens.").font = Font(
        italic=True, color="595959"
    )
    return last


def _use_case_row(ws: Worksheet, r: int, rank: int | None, row: dict[str, Any]) -> None:
    values = (
        (rank, "0"),
        (cell_value(row["use_case"]), None),
        (row["total_tokens"], _INT),
        (row["token_share"], _SHARE),
        (row["cumulative_token_share"], _SHARE),
        (row["cost_usd"], _USD),
        (row["cost_share"], _SHARE),
    )
    for col, (value, fmt) in enumerate(values, start=1):
        cell = ws.cell(r, col, value)
        if fmt:
            cell.number_format = fmt


def _pareto_chart(ws: Worksheet, export: MonthExport, *, last: int) -> BarChart:
    def column(col: int, *, titled: bool = True) -> Reference:
        return Reference(ws, min_col=col, min_row=TOP_ROW + (0 if titled else 1), max_row=last)

    bars = BarChart()
    bars.type = "col"
    bars.title = "Top use cases: tokens, cumulative share, the 80 % mark"
    bars.y_axis.title = "tokens"
    bars.y_axis.number_format = "#,##0"
    bars.add_data(column(3), titles_from_data=True)
    bars.set_categories(column(2, titled=False))
    series = bars.series[0]
    series.graphicalProperties.solidFill = TAIL_FILL
    members = set(export.tokens.members)
    for i in range(last - TOP_ROW):
        if ws.cell(TOP_ROW + 1 + i, 2).value in members:
            point = DataPoint(idx=i)
            point.graphicalProperties.solidFill = HEAD_FILL
            series.dPt.append(point)
    line = LineChart()
    line.add_data(column(5), titles_from_data=True)
    line.add_data(column(8), titles_from_data=True)
    cumulative, mark = line.series
    cumulative.graphicalProperties.line.solidFill = "1F3864"
    cumulative.marker.symbol = "circle"
    mark.graphicalProperties.line.solidFill = HEAD_FILL
    mark.graphicalProperties.line.dashStyle = "dash"
    mark.marker.symbol = "none"
    line.y_axis.axId = 200
    line.y_axis.title = "cumulative share"
    line.y_axis.number_format = "0%"
    line.y_axis.scaling.min, line.y_axis.scaling.max = 0, 1
    line.y_axis.crosses = "max"
    # openpyxl marks axes deleted by default; recent Excel versions then hide them.
    bars.x_axis.delete = bars.y_axis.delete = line.y_axis.delete = False
    bars += line
    bars.visible_cells_only = False  # the 80 % mark lives in a hidden column
    bars.legend.position = "b"
    bars.width, bars.height = 19, 14
    return bars
