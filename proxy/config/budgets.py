"""Turns the config file's budgets (``budgets.limits``) into ``metering.budgets.Budget``: the
gateway enforces them, ``tokenmeter budgets list`` and the monthly export show them."""

from __future__ import annotations

from metering.budgets import Budget
from proxy.config.settings import BudgetSettings

_MICRO_PER_USD = 1_000_000


def config_budgets(settings: BudgetSettings) -> list[Budget]:
    """One Budget per configured limit, its id ``config:<scope>:<subject>:<period>``."""
    return [
        Budget(
            id=f"config:{b.scope}:{b.subject}:{b.period}",
            scope=b.scope,
            subject=b.subject,
            period=b.period,
            limit_micro_usd=None if b.limit_usd is None else int(b.limit_usd * _MICRO_PER_USD),
            limit_tokens=b.limit_tokens,
            soft_ratio=b.soft_ratio,
        )
        for b in settings.limits
    ]
