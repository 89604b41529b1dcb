"""/admin/budgets: spending limits set, listed with their spend, and removed."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field, model_validator

from metering.budgets import DEFAULT_SOFT_RATIO, BudgetConflict, create_budget, delete_budget
from proxy.admin.guard import AdminRuntime
from proxy.gateway.attribution import MAX_LEN
from proxy.gateway.governance.budgets import BudgetState

router = APIRouter(prefix="/admin", tags=["admin"])


class BudgetCreate(BaseModel):
    scope: Literal["key", "user", "team", "use_case"]
    subject: Annotated[str, Field(min_length=1, max_length=MAX_LEN)]
    period: Literal["month", "week", "day"] = "month"
    limit_usd: Decimal | None = Field(default=None, ge=0)
    limit_tokens: int | None = Field(default=None, ge=0)
    soft_ratio: float = Field(default=DEFAULT_SOFT_RATIO, gt=0, le=1)

    @model_validator(mode="after")
    def _has_limit(self) -> BudgetCreate:
        if self.limit_usd is None and self.limit_tokens is None:
            raise ValueError("a budget needs limit_usd, limit_tokens, or both")
        return self


def budget_json(state: BudgetState) -> dict[str, Any]:
    b, s = state.budget, state.spend
    return {
        "id": b.id,
        "name": b.name,
        "source": b.source,
        "scope": b.scope,
        "subject": b.subject,
        "period": b.period,
        "limit_usd": None if b.limit_micro_usd is None else b.limit_micro_usd / 1e6,
        "limit_micro_usd": b.limit_micro_usd,
        "limit_tokens": b.limit_tokens,
        "soft_ratio": b.soft_ratio,
        "spent_micro_usd": s.micro_usd,
        "spent_usd": s.micro_usd / 1e6,
        "spent_tokens": s.tokens,
        "used_ratio": state.ratio,
        "status": state.status,
    }


@router.get("/budgets")
async def get_budgets(rt: AdminRuntime, fresh: bool = False) -> list[dict[str, Any]]:
    """Every budget (config and API) with this replica's view of its spend and status."""
    if fresh:
        await rt.budgets.refresh()
    return [budget_json(s) for s in rt.budgets.states()]


@router.post("/budgets", status_code=201)
async def post_budget(body: BudgetCreate, rt: AdminRuntime) -> dict[str, Any]:
    if any(
        (b.scope, b.subject, b.period) == (body.scope, body.subject, body.period)
        for b in rt.budgets.config
    ):
        raise HTTPException(
            409,
            f"a {body.period} budget for {body.scope} {body.subject!r} is set in the config file",
        )
    micro = None if body.limit_usd is None else int(body.limit_usd * 1_000_000)
    try:
        budget = await asyncio.to_thread(
            create_budget,
            rt.engine,
            scope=body.scope,
            subject=body.subject,
            period=body.period,
            limit_micro_usd=micro,
            limit_tokens=body.limit_tokens,
            soft_ratio=body.soft_ratio,
        )
    except BudgetConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    await rt.budgets.refresh()
    return next(budget_json(s) for s in rt.budgets.states() if s.budget.id == budget.id)


@router.delete("/budgets/{budget_id}")
async def remove_budget(budget_id: str, rt: AdminRuntime) -> dict[str, Any]:
    if budget_id.startswith("config:"):
        raise HTTPException(409, "a budget from the config file is removed there")
    if not await asyncio.to_thread(delete_budget, rt.engine, budget_id):
        raise HTTPException(404, f"no budget {budget_id!r}")
    await rt.budgets.refresh()
    return {"id": budget_id, "deleted": True}
