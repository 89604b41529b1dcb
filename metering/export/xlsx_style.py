"""What every sheet of the workbook shares: number formats by column kind, the print setup, and
cell values sanitised as they are written (so no recorded value can break the file)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from openpyxl.worksheet.header_footer import HeaderFooterItem
from openpyxl.worksheet.header_footer import _HeaderFooterPart as _Part
from openpyxl.worksheet.properties import PageSetupProperties
from openpyxl.worksheet.worksheet import Worksheet

from metering.export.views import Kind

NUMBER_FORMATS: dict[Kind, str] = {
    "int": "#,##0",
    "float": "#,##0.00",
    "share": "0.0%",
    "usd": '"$"#,##0.00',
    "time": "yyyy-mm-dd hh:mm:ss",
    "date": "yyyy-mm-dd",
}
MAX_CELL_CHARS = 32_767  # Excel's limit for one cell
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def print_setup(ws: Worksheet, *, title: str, fit_height: bool) -> None:
    """Landscape A4 fitted to the page width (and height, for a one-page sheet), with the title
    in the page header and the sheet and page number in the footer."""
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 1 if fit_height else 0
    ws.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
    ws.print_options.horizontalCentered = True
    ws.page_margins.left = ws.page_margins.right = 0.4
    ws.page_margins.top = ws.page_margins.bottom = 0.8
    ws.HeaderFooter.oddHeader = HeaderFooterItem(center=_Part(_header_text(title)))
    ws.HeaderFooter.oddFooter = HeaderFooterItem(left=_Part("&A"), right=_Part("page &P of &N"))


def _header_text(title: str) -> str:
    # & starts a header code in the page-header language: a literal one is doubled.
    return sanitise(title).replace("&", "&&")[:250]


def sanitise(text: str) -> str:
    """``text`` as a cell may hold it: control characters (which XML 1.0 cannot carry) and lone
    surrogates shown as \\xNN escapes, cut to Excel's cell limit."""
    clean = _ILLEGAL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return clean if len(clean) <= MAX_CELL_CHARS else clean[: MAX_CELL_CHARS - 1] + "…"


def cell_value(value: Any) -> Any:
    """A view's value as a cell takes it."""
    # Excel has no time zones: times are written in UTC, without an offset.
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, str):
        return sanitise(value)
    if value is None or isinstance(value, int | float | date):
        return value
    from decimal import Decimal

    return value if isinstance(value, Decimal) else sanitise(str(value))
