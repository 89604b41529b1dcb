"""The export's files: CSV (a zip of one file per view), Parquet (likewise) and XLSX.

Each zip also holds ``README.txt``, the views' and columns' descriptions; docs/export.md has the
same. openpyxl and pyarrow are imported only when their format is written.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable
from datetime import datetime
from typing import Any, BinaryIO

from metering.export.month import MonthExport, Progress
from metering.export.views import METRICS, Kind, View

FORMATS = ("csv", "xlsx", "parquet")
MEDIA_TYPES = {
    "csv": "application/zip",
    "parquet": "application/zip",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def file_name(month: str, fmt: str) -> str:
    """tokenmeter-2026-10.xlsx, tokenmeter-2026-10.csv.zip, tokenmeter-2026-10.parquet.zip."""
    return f"tokenmeter-{month}.xlsx" if fmt == "xlsx" else f"tokenmeter-{month}.{fmt}.zip"


def write_export(
    export: MonthExport, fmt: str, out: BinaryIO, *, progress: Progress | None = None
) -> None:
    """Write ``export`` to ``out`` in ``fmt`` (one of FORMATS)."""
    step = progress or (lambda _: None)
    if fmt == "xlsx":
        from metering.export.xlsx import write_xlsx

        write_xlsx(export, out, progress=step)
        return
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    encode = _csv_bytes if fmt == "csv" else _parquet_bytes()
    compression = zipfile.ZIP_DEFLATED if fmt == "csv" else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        zf.writestr("README.txt", describe(export))
        for view in export.views:
            step(f"writing {view.name}")
            zf.writestr(f"{view.name}.{fmt}", encode(view, str(export.month)))


def describe(export: MonthExport) -> str:
    """The views and their columns, in words."""
    lines = [
        f"tokenmeter export of {export.month} (UTC). {export.headline}.",
        "Money: cost_micro_usd is exact; cost_usd is rounded half up to the cent per row.",
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
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parquet_bytes() -> Callable[[View, str], bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types: dict[Kind, Any] = {
        "str": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "share": pa.float64(),
        "usd": pa.decimal128(18, 2),
        "bool": pa.bool_(),
        "time": pa.timestamp("us", tz="UTC"),
    }

    def encode(view: View, month: str) -> bytes:
        fields = [
            pa.field(c.name, types[c.kind], metadata={"doc": c.doc, "kind": c.kind})
            for c in view.columns
        ]
        columns = list(zip(*view.rows, strict=True)) or [() for _ in fields]
        table = pa.table(
            [pa.array(list(col), type=f.type) for col, f in zip(columns, fields, strict=True)],
            schema=pa.schema(fields, metadata={"view": view.name, "doc": view.doc, "month": month}),
        )
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        return buf.getvalue()

    return encode
