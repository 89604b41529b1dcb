"""/admin/usage, /admin/tco and /admin/compare: what the ledger and the cost model say now."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from metering.compare import compare_deployments
from metering.queries import GROUP_COLUMNS, usage_summary
from proxy.admin.guard import AdminRuntime
from proxy.admin.pilot import pilot_report

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/usage")
async def get_usage(
    rt: AdminRuntime,
    group_by: Annotated[
        str, Query(description=f"comma-separated: {', '.join(GROUP_COLUMNS)}")
    ] = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    try:
        source, rows = await asyncio.to_thread(
            usage_summary, rt.engine, group_by=groups, since=_utc(since), until=_utc(until)
        )
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    return {"group_by": groups, "since": since, "until": until, "source": source, "rows": rows}


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@router.get("/tco")
async def get_tco(rt: AdminRuntime, fresh: bool = False) -> dict[str, Any]:
    """The latest live projection (recomputed now with ``fresh=true``)."""
    latest = rt.projector.latest
    if fresh or latest is None:
        latest = await rt.projector.refresh()
    return latest.to_json()


@router.get("/compare")
async def get_compare(
    rt: AdminRuntime,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The pilot report: each deployment's latency, errors and cost per 1k tokens."""
    if model is not None and not (len(model) <= 256 and model.isprintable()):
        raise HTTPException(400, "model must be at most 256 printable characters")
    projection = rt.projector.latest or await rt.projector.refresh()
    rows = await asyncio.to_thread(
        compare_deployments, rt.engine, model=model, since=_utc(since), until=_utc(until)
    )
    return pilot_report(rows, projection, model=model, since=since, until=until)
