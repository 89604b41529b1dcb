"""Admin API: virtual keys and usage reports, guarded by TOKENMETER_ADMIN_KEY."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from metering.compare import compare_deployments
from metering.keys import create_key, list_keys, revoke_key
from metering.queries import GROUP_COLUMNS, usage_summary
from metering.tables import ApiKeyPublic
from proxy.attribution import MAX_LEN
from proxy.auth import check_admin
from proxy.errors import ProxyError
from proxy.pilot import pilot_report
from proxy.runtime import Runtime


def _runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    try:
        check_admin(request.headers, rt.settings.effective_admin_key, open_mode=rt.open_mode)
    except ProxyError as exc:
        raise HTTPException(exc.status, exc.message) from exc
    return rt


AdminRuntime = Annotated[Runtime, Depends(_runtime)]
router = APIRouter(prefix="/admin", tags=["admin"])

_Label = Annotated[str, Field(min_length=1, max_length=MAX_LEN, pattern=r"^[^\x00-\x1f\x7f]+$")]


class KeyCreate(BaseModel):
    user: _Label
    team: _Label | None = None
    use_case: _Label | None = None
    agent: _Label | None = None


class KeyCreated(ApiKeyPublic):
    key: str = Field(description="the key itself; shown this once, stored only as a hash")


@router.post("/keys", status_code=201)
async def post_key(body: KeyCreate, rt: AdminRuntime) -> KeyCreated:
    public, key = await asyncio.to_thread(create_key, rt.engine, **body.model_dump())
    await rt.keys.reload()
    return KeyCreated(**public.model_dump(), key=key)


@router.get("/keys")
async def get_keys(rt: AdminRuntime) -> list[ApiKeyPublic]:
    return await asyncio.to_thread(list_keys, rt.engine)


@router.delete("/keys/{key_id}")
async def delete_key(key_id: str, rt: AdminRuntime) -> dict[str, Any]:
    if not await asyncio.to_thread(revoke_key, rt.engine, key_id):
        raise HTTPException(404, f"no active key {key_id!r}")
    await rt.keys.reload()
    return {"id": key_id, "revoked": True}


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
    return latest


@router.get("/compare")
async def get_compare(
    rt: AdminRuntime,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The pilot report: each deployment's latency, errors and cost per 1k tokens."""
    projection = rt.projector.latest or await rt.projector.refresh()
    rows = await asyncio.to_thread(
        compare_deployments, rt.engine, model=model, since=_utc(since), until=_utc(until)
    )
    return pilot_report(rows, projection, model=model, since=since, until=until)
