"""GET /admin/exports/YYYY-MM.{xlsx,csv,parquet,csv.zip,parquet.zip}: the monthly finance export,
as one file to download (csv and parquet as their zip)."""

from __future__ import annotations

import asyncio
import io

from fastapi import APIRouter, HTTPException
from starlette.responses import Response

from metering.export.files import FORMATS, MEDIA_TYPES, file_name, write_export
from metering.export.month import ExportError, Month, build_month_export
from proxy.admin.guard import AdminRuntime
from proxy.config.catalogue import effective_models
from proxy.config.pricebook import build_pricebook
from proxy.gateway.projector import tco_inputs
from proxy.gateway.runtime import Runtime

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/exports/{name}", response_class=Response)
async def get_export(name: str, rt: AdminRuntime) -> Response:
    """The month's export (docs/export.md); 404 for a month that is unknown or empty."""
    month, _, fmt = name.partition(".")
    if fmt not in FORMATS:
        raise HTTPException(
            404, f"no export {name!r}: ask for /admin/exports/YYYY-MM.{{{','.join(FORMATS)}}}"
        )
    try:
        body = await asyncio.to_thread(render_export, rt, month, fmt)
    except ExportError as exc:
        raise HTTPException(404, str(exc)) from exc
    disposition = f'attachment; filename="{file_name(month, fmt)}"'
    return Response(body, media_type=MEDIA_TYPES[fmt], headers={"Content-Disposition": disposition})


def render_export(rt: Runtime, month: str, fmt: str) -> bytes:
    """The export file's bytes; ExportError when the month is unknown or empty."""
    parsed = Month.parse(month)
    settings = rt.settings
    models = effective_models(settings)
    book = build_pricebook(settings, models)
    tco = tco_inputs(settings.tco, book, models)
    export = build_month_export(rt.engine, parsed, tco=tco, config_budgets=rt.budgets.config)
    buf = io.BytesIO()
    write_export(export, fmt, buf)
    return buf.getvalue()
