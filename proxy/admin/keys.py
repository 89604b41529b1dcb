"""/admin/keys: virtual keys minted, listed and revoked."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from pydantic import AfterValidator, BaseModel, Field

from metering.keys import create_key, list_keys, revoke_key
from metering.tables import ApiKeyPublic
from proxy.admin.guard import AdminRuntime
from proxy.gateway.attribution import MAX_LEN

router = APIRouter(prefix="/admin", tags=["admin"])


def _printable(value: str) -> str:
    # The pattern lets lone surrogates through (valid JSON escapes, invalid text): no database
    # driver can encode them, so they are refused here as any unprintable character is.
    if not value.isprintable():
        raise ValueError("must be printable text")
    return value


_Label = Annotated[
    str,
    Field(min_length=1, max_length=MAX_LEN, pattern=r"^[^\x00-\x1f\x7f]+$"),
    AfterValidator(_printable),
]
_KEY_ID_MAX = 64  # the column's width


class KeyCreate(BaseModel):
    user: _Label
    team: _Label | None = None
    use_case: _Label | None = None
    agent: _Label | None = None
    service: bool = Field(
        default=False,
        description="a service key (an app serving many people) bills the end users it declares",
    )


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
    # An id no key can have is answered without asking the database (PostgreSQL refuses a NUL).
    valid = 0 < len(key_id) <= _KEY_ID_MAX and key_id.isprintable()
    if not valid or not await asyncio.to_thread(revoke_key, rt.engine, key_id):
        raise HTTPException(404, f"no active key {key_id!r}")
    await rt.keys.reload()
    return {"id": key_id, "revoked": True}
