"""The export's files: XLSX; CSV and Parquet as one plain file per view in a directory, or the
same files in one zip (the HTTP download, ``csv.zip`` / ``parquet.zip``).

A directory or zip also holds ``README.txt``, the views' and columns' descriptions;
docs/export.md has the same. Money is float64 USD beside the exact int64 micro-dollars, so that
pandas and DuckDB compute with it directly. openpyxl and pyarrow are imported only when their
format is written.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from metering.export.month import MonthExport, Progress
from metering.export.views import METRICS, Kind, View

DIR_FORMATS = ("csv", "parquet")  # a directory of plain files (the command line)
FILE_FORMATS = ("xlsx", "csv.zip", "parquet.zip")  # one file
FORMATS = ("xlsx", "csv", "parquet", "csv.zip", "parquet.zip")
_ZIP = "application/zip"
MEDIA_TYPES = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": _ZIP,
    "parquet": _ZIP,
    "csv.zip": _ZIP,
    "parquet.zip": _ZIP,
}


def file_name(month: str, fmt: str) -> str:
    """tokenmeter-2026-10.xlsx, .csv.zip, .parquet.zip; a directory tokenmeter-2026-10-csv/."""
    if fmt == "xlsx":
        return f"tokenmeter-{month}.xlsx"
    return f"tokenmeter-{month}.{fmt.removesuffix('.zip')}.zip"


def dir_name(month: str, fmt: str) -> str:
    """The default directory of ``--format csv|parquet``: tokenmeter-2026-10-csv."""
    return f"tokenmeter-{month}-{fmt}"


def write_export(
    export: MonthExport, fmt: str, out: BinaryIO, *, progress: Progress | None = None
) -> None:
    """Write ``export`` to ``out`` as one file: xlsx, or a zip of the csv or parquet files
    (``csv`` and ``parquet`` mean their zip here: a stream holds one file)."""
    step = progress or (lambda _: None)
    if fmt == "xlsx":
        from metering.export.xlsx import write_xlsx

        write_xlsx(export, out, progress=step)
        return
    plain = _plain(fmt)
    encode = _csv_bytes if plain == "csv" else _parquet_bytes()
    compression = zipfile.ZIP_DEFLATED if plain == "csv" else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        zf.writestr("README.txt", describe(export))
        for view in export.views:
            step(f"writing {view.name}")
            zf.writestr(f"{view.name}.{plain}", encode(view, str(export.month)))


def write_export_dir(
    export: MonthExport, fmt: str, directory: Path, *, progress: Progress | None = None
) -> list[Path]:
    """Write one ``<view>.csv`` or ``<view>.parquet`` per view, and README.txt, into
    ``directory`` (made if missing). Each file is written whole, then renamed into place, so a
    reader never sees half a file."""
    step = progress or (lambda _: None)
    plain = _plain(fmt)
    encode = _csv_bytes if plain == "csv" else _parquet_bytes()
    directory.mkdir(parents=True, exist_ok=True)
    written = [_write_whole(directory / "README.txt", describe(export).encode())]
    for view in export.views:
        step(f"writing {view.name}")
        path = directory / f"{view.name}.{plain}"
        written.append(_write_whole(path, encode(view, str(export.month))))
    return written


def _write_whole(path: Path, content: bytes) -> Path:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(content)
    os.replace(tmp, path)
    return path


def _plain(fmt: str) -> str:
    plain = fmt.removesuffix(".zip")
    if fmt not in FORMATS or plain not in DIR_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    return plain


def describe(export: MonthExport) -> str:
    """The views and their columns, in words."""
    lines = [
        f"tokenmeter export of {export.month} (UTC). {export.headline}.",
        "Money: *_micro_usd columns are exact integers; *_usd columns are USD in cents allotted"
        " so that every column adds up to its rounded total (largest remainder).",
        "",
    ]
    lines.append("The metric columns, wherever '(metrics)' appears below:")
    lines += [f"  {c.name} ({c.kind}): {c.doc}" for c in METRICS]
    lines.append("")
    for view in export.views:
        lines.append(f"{view.name}: {view.doc}")
        shown = False
        for c in view.columns:
            if c not in METRICS:
                lines.append(f"  {c.name} ({c.kind}): {c.doc}")
            elif not shown:
                lines.append("  (metrics)")
                shown = True
        lines.append("")
    return "\n".join(lines)


def _csv_bytes(view: View, month: str) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(c.name for c in view.columns)
    writer.writerows([_csv_cell(v) for v in row] for row in view.rows)
    return buf.getvalue().encode()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _arrow(values: Sequence[Any]) -> list[Any]:
    # Decimal cents become floats for Arrow's float64; the nearest double of a cent amount.
    return [float(v) if isinstance(v, Decimal) else v for v in values]


def _parquet_bytes() -> Callable[[View, str], bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types: dict[Kind, Any] = {
        "str": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "share": pa.float64(),
        "usd": pa.float64(),  # cents as float64: pandas and DuckDB compute with it directly
        "bool": pa.bool_(),
        "time": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
    }

    def encode(view: View, month: str) -> bytes:
        fields = [
            pa.field(c.name, types[c.kind], metadata={"doc": c.doc, "kind": c.kind})
            for c in view.columns
        ]
        columns = list(zip(*view.rows, strict=True)) or [() for _ in fields]
        table = pa.table(
            [pa.array(_arrow(col), type=f.type) for col, f in zip(columns, fields, strict=True)],
            schema=pa.schema(fields, metadata={"view": view.name, "doc": view.doc, "month": month}),
        )
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        return buf.getvalue()

    return encode
