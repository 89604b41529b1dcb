"""The data sheets' cells, written as XML text straight into the workbook's package.

openpyxl makes an object of every cell and writes each through lxml: 17-26 µs a cell (11 µs in its
write-only mode), most of the time of a month whose ``line_items`` sheet holds 350,000 cells. A
data sheet is plain rows of typed values, so its cells are written here as text (2-3 µs a cell).
openpyxl still writes the whole workbook: page one, and every data sheet's settings (frozen header,
widths, filter, print setup) around an empty ``sheetData``; ``write_package`` then copies that
package to the output and fills each data sheet's ``sheetData`` with its rows. A cell's style is
openpyxl's own (``StyleIds``), registered in the workbook before it is saved, so styles.xml holds
every one.

A cell is written as openpyxl writes it: text inline (never a formula, whatever it starts
with), numbers and times as numbers (times as Excel serials), booleans as booleans; but a float
with all its digits (``repr``, as the CSV has it), where openpyxl keeps 16.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from math import isfinite
from typing import IO, Any, BinaryIO

from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Border, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.utils.datetime import to_excel
from openpyxl.worksheet.worksheet import Worksheet

from metering.export.month import Progress

Row = tuple[Sequence[Any], Sequence[int]]  # the values (as cell_value gives them), the style ids
_EMPTY_DATA = re.compile(rb"<sheetData\s*/>|<sheetData>\s*</sheetData>")
_DIMENSION = re.compile(rb'<dimension ref="[^"]*"\s*/>')
# \r too: an XML reader turns a literal one into \n.
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_CHUNK_ROWS = 1_000


@dataclass(frozen=True, slots=True)
class SheetCells:
    """A data sheet's rows, read once as the package is written."""

    view: str  # the view's name: its sheets are one step of the progress
    rows: Iterable[Row]
    width: int  # columns
    height: int  # rows, the header's included


class StyleIds:
    """The workbook's ids of cell styles (its ``cellXfs``), registered once per combination."""

    def __init__(self, ws: Worksheet) -> None:
        self._ws = ws
        self._ids: dict[tuple[Any, ...], int] = {}

    def get(
        self,
        *,
        number_format: str | None = None,
        font: Font | None = None,
        border: Border | None = None,
        fill: PatternFill | None = None,
    ) -> int:
        key = (number_format, font, border, fill)
        if key not in self._ids:
            cell = WriteOnlyCell(self._ws)  # never added to the sheet: only its style is used
            if number_format is not None:
                cell.number_format = number_format
            if font is not None:
                cell.font = font
            if border is not None:
                cell.border = border
            if fill is not None:
                cell.fill = fill
            self._ids[key] = cell.style_id
        return self._ids[key]


def write_package(
    book: bytes, out: BinaryIO, sheets: Mapping[str, SheetCells], *, progress: Progress
) -> None:
    """Copy the package ``book`` (an xlsx openpyxl saved) to ``out``, writing the rows of each
    data sheet, keyed by its part's name (``xl/worksheets/sheet2.xml``), into its sheetData."""
    with (
        zipfile.ZipFile(io.BytesIO(book)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        reported = ""
        for info in src.infolist():
            cells = sheets.get(info.filename)
            if cells is None:
                dst.writestr(info, src.read(info))
                continue
            if cells.view != reported:
                progress(f"writing {cells.view}")
                reported = cells.view
            with tempfile.TemporaryFile() as tmp:
                write_sheet(src.read(info), cells, tmp)
                entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                entry.compress_type, entry.external_attr = zipfile.ZIP_DEFLATED, info.external_attr
                entry.file_size = tmp.tell()  # a part over 2 GiB gets ZIP64 headers
                tmp.seek(0)
                with dst.open(entry, "w") as fh:
                    shutil.copyfileobj(tmp, fh, 1 << 20)


def write_sheet(settings: bytes, cells: SheetCells, out: IO[bytes]) -> None:
    """The worksheet part ``settings`` (as openpyxl wrote it, with no rows) with ``cells``."""
    parts = _EMPTY_DATA.split(settings)
    if len(parts) != 2:
        raise ValueError("the worksheet part has no empty sheetData to fill")
    head, tail = parts
    last = f"{get_column_letter(max(cells.width, 1))}{max(cells.height, 1)}"
    out.write(_DIMENSION.sub(f'<dimension ref="A1:{last}"/>'.encode(), head, count=1))
    out.write(b"<sheetData>")
    letters = [get_column_letter(i) for i in range(1, cells.width + 1)]
    chunk: list[str] = []
    for r, (values, styles) in enumerate(cells.rows, start=1):
        chunk.append(_row(r, letters, values, styles))
        if len(chunk) == _CHUNK_ROWS:
            out.write("".join(chunk).encode())
            chunk.clear()
    out.write("".join(chunk).encode())
    out.write(b"</sheetData>")
    out.write(tail)


def _row(r: int, letters: Sequence[str], values: Sequence[Any], styles: Sequence[int]) -> str:
    n = str(r)
    cells = "".join(
        _cell(letter + n, style, value)
        for letter, style, value in zip(letters, styles, values, strict=True)
    )
    return f'<row r="{n}">{cells}</row>'


def _cell(ref: str, style: int, value: Any) -> str:
    s = f' s="{style}"' if style else ""
    if isinstance(value, str):
        if not value:
            return f'<c r="{ref}"{s}/>' if style else ""
        space = ' xml:space="preserve"' if value != value.strip() else ""
        text = value.translate(_ESCAPES)
        return f'<c r="{ref}"{s} t="inlineStr"><is><t{space}>{text}</t></is></c>'
    if isinstance(value, bool):
        return f'<c r="{ref}"{s} t="b"><v>{value:d}</v></c>'
    number = _number(value)
    if number is None:
        return f'<c r="{ref}"{s}/>' if style else ""
    return f'<c r="{ref}"{s}><v>{number}</v></c>'


def _number(value: Any) -> str | None:
    """A number cell's text, None for an empty cell (None, NaN, infinity)."""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if isfinite(value) else None
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else None
    if isinstance(value, date):  # a datetime too: naive, in UTC (cell_value)
        return repr(to_excel(value))  # type: ignore[no-untyped-call]
    if value is None:
        return None
    raise TypeError(f"no cell holds a {type(value).__name__}")
