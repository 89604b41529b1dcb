"""Budgets on the request path: refuse at the hard limit before any upstream call, warn past
the soft threshold (response header, gauge, /admin/budgets).

A replica knows each budget's spend as the ledger had it at the last refresh (every
``budgets.refresh_interval_s``), plus every event it recorded itself that the database did not
hold yet. So one replica stops at the exact request that reaches a limit; with several, each
sees the others' spend one refresh late: a budget can be overshot by at most what the other
replicas spend in one refresh interval (plus the requests in flight when it trips, which are
never cut off). docs/governance.md states the bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from metering.budgets import (
    Budget,
    Spend,
    exceeded,
    list_budgets,
    period_start,
    read_spend_seen,
    used_ratio,
)
from metering.events import UsageEvent
from metering.ledger import Ledger
from proxy.gateway.errors import ProxyError

log = logging.getLogger(__name__)

BUDGET_HEADER = "x-tokenmeter-budget-warning"
_ADJECTIVE = {"month": "monthly", "week": "weekly", "day": "daily"}


@dataclass(frozen=True, slots=True)
class BudgetState:
    budget: Budget
    spend: Spend
    ratio: float
    status: str  # ok, soft (past the soft threshold) or exceeded


class BudgetGuard:
    def __init__(
        self, engine: Engine, ledger: Ledger, *, config: Sequence[Budget], refresh_interval_s: float
    ) -> None:
        self._engine = engine
        self._ledger = ledger
        self.config = list(config)
        self._interval_s = refresh_interval_s
        self._budgets: list[Budget] = list(config)
        self._db: dict[str, Spend] = {}
        # own events not yet known to be in the database's spend: (event id, its budget hits)
        self._local: deque[tuple[str, list[tuple[str, Spend]]]] = deque()
        self._local_sum: dict[str, Spend] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        ledger.listeners.append(self.observe)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="tokenmeter-budgets")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def refresh(self) -> None:
        """Re-read the budgets and their spend; drop the own events the spend now includes
        (asked in the same snapshot as the spend: each counted once, whenever it commits)."""
        budgets = self.config + await asyncio.to_thread(list_budgets, self._engine)
        ids = [event_id for event_id, _ in self._local]
        spend, seen = await asyncio.to_thread(
            read_spend_seen, self._engine, budgets, datetime.now(UTC), ids
        )
        if seen:
            self._local = deque(e for e in self._local if e[0] not in seen)
            self._local_sum = {}
            for _, hits in self._local:
                for budget_id, amount in hits:
                    self._local_sum[budget_id] = self._local_sum.get(budget_id, Spend()) + amount
        self._budgets, self._db = budgets, spend

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.refresh()
            except Exception as exc:  # the database may be down: enforce on the last known spend
                if not self._failing:
                    log.warning("budget refresh failed (%s); using the last known spend", exc)
                self._failing = True
            else:
                self._failing = False

    def observe(self, event: UsageEvent) -> None:
        """Count a recorded event against the budgets it falls under (in their period)."""
        started = datetime.fromtimestamp(event.started_at, UTC)
        now = datetime.now(UTC)
        amount = Spend(event.cost_micro_usd or 0, event.usage.total_tokens)
        hits = [
            (b.id, amount)
            for b in self._budgets
            if _subject(b, event.key_id, event.user, event.team, event.use_case) == b.subject
            and started >= period_start(b.period, now)
        ]
        if not hits or (not amount.micro_usd and not amount.tokens):
            return
        self._local.append((event.id, hits))
        for budget_id, spent in hits:
            self._local_sum[budget_id] = self._local_sum.get(budget_id, Spend()) + spent

    def spend(self, budget: Budget) -> Spend:
        return self._db.get(budget.id, Spend()) + self._local_sum.get(budget.id, Spend())

    def states(self) -> list[BudgetState]:
        return [self._state(b) for b in self._budgets]

    def _state(self, budget: Budget) -> BudgetState:
        spend = self.spend(budget)
        ratio = used_ratio(budget, spend)
        status = (
            "exceeded"
            if exceeded(budget, spend)
            else "soft"
            if ratio >= budget.soft_ratio
            else "ok"
        )
        return BudgetState(budget, spend, ratio, status)

    def admit(self, *, key_id: str, user: str, team: str, use_case: str) -> str | None:
        """Raise 429 budget_exceeded if a budget of this request is used up; else the warning
        header's value when one is past its soft threshold (None when none is)."""
        warnings = []
        for b in self._budgets:
            if _subject(b, key_id, user, team, use_case) != b.subject:
                continue
            state = self._state(b)
            if state.status == "exceeded":
                raise ProxyError(429, _refusal(state), code="budget_exceeded")
            if state.status == "soft":
                warnings.append(f"{b.name}={state.ratio:.0%}")
        return ", ".join(warnings) or None


def _subject(budget: Budget, key_id: str, user: str, team: str, use_case: str) -> str:
    return {"key": key_id, "user": user, "team": team, "use_case": use_case}[budget.scope]


def _refusal(state: BudgetState) -> str:
    b, s = state.budget, state.spend
    limits = []
    if b.limit_micro_usd is not None:
        limits.append(f"${s.micro_usd / 1e6:,.2f} of ${b.limit_micro_usd / 1e6:,.2f}")
    if b.limit_tokens is not None:
        limits.append(f"{s.tokens:,} of {b.limit_tokens:,} tokens")
    since = period_start(b.period, datetime.now(UTC))
    return (
        f"budget_exceeded: the {_ADJECTIVE[b.period]} budget {b.name} is used up "
        f"({'; '.join(limits)} spent since {since:%Y-%m-%d} UTC)"
    )
