"""Budgets: spending limits per key, user, team or use case, and what the ledger says was spent.

A budget limits the spend (integer micro-dollars, from the ledger's own pricing) and optionally
the tokens (input + output) of its subject over a calendar period in UTC: the month (the
default), the ISO week (from Monday) or the day. Spend is read from the hourly rollups, which
periods always start on, so it equals the sum of the raw events to the micro-dollar.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import Connection, Engine, Table, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col
from sqlmodel import select as select_records

from metering.tables import BudgetRecord, UsageEventRecord, UsageRollupRecord

Scope = Literal["key", "user", "team", "use_case"]
Period = Literal["month", "week", "day"]
Status = Literal["ok", "soft", "exceeded"]  # soft: past the soft threshold
SCOPES: tuple[Scope, ...] = ("key", "user", "team", "use_case")
COLUMNS: dict[Scope, str] = {
    "key": "key_id",
    "user": "user",
    "team": "team",
    "use_case": "use_case",
}
PERIODS: tuple[Period, ...] = ("month", "week", "day")
DEFAULT_SOFT_RATIO = 0.8  # warn at 80 % of a limit, as LiteLLM's and Portkey's alerts default
_ROLLUPS: Table = UsageRollupRecord.__table__  # type: ignore[attr-defined]
_EVENTS: Table = UsageEventRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Budget:
    """A limit on one subject's spend per period; ``source`` is ``config`` or ``api``."""

    id: str
    scope: Scope
    subject: str
    period: Period
    limit_micro_usd: int | None
    limit_tokens: int | None
    soft_ratio: float = DEFAULT_SOFT_RATIO
    source: str = "config"

    @property
    def name(self) -> str:
        """How messages, headers and metrics name the budget: ``team:platform:month``."""
        return f"{self.scope}:{self.subject}:{self.period}"


@dataclass(frozen=True, slots=True)
class Spend:
    micro_usd: int = 0
    tokens: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.micro_usd + other.micro_usd, self.tokens + other.tokens)

    def __sub__(self, other: Spend) -> Spend:
        return Spend(self.micro_usd - other.micro_usd, self.tokens - other.tokens)


def period_start(period: Period, now: datetime) -> datetime:
    """The start (UTC) of the calendar period that contains ``now``."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def used_ratio(budget: Budget, spend: Spend) -> float:
    """The larger of spend / limit over the budget's limits (USD, tokens)."""
    pairs = ((spend.micro_usd, budget.limit_micro_usd), (spend.tokens, budget.limit_tokens))
    # a limit of 0 refuses everything: it is always fully used
    return max(
        (spent / limit if limit else 1.0 for spent, limit in pairs if limit is not None),
        default=0.0,
    )


def exceeded(budget: Budget, spend: Spend) -> bool:
    """At or past a limit: the next request is refused (a limit of 0 refuses everything)."""
    usd = budget.limit_micro_usd is not None and spend.micro_usd >= budget.limit_micro_usd
    tokens = budget.limit_tokens is not None and spend.tokens >= budget.limit_tokens
    return usd or tokens


def budget_status(budget: Budget, spend: Spend) -> Status:
    """``exceeded`` at or past a limit, ``soft`` past the soft threshold, else ``ok``: the
    status ``/admin/budgets`` and ``tokenmeter budgets list`` show."""
    if exceeded(budget, spend):
        return "exceeded"
    return "soft" if used_ratio(budget, spend) >= budget.soft_ratio else "ok"


def limit_status(spent: int, limit: int, soft_ratio: float) -> Status:
    """The status of one limit (micro-dollars or tokens) on its own, as ``budget_status``."""
    if spent >= limit:
        return "exceeded"
    return "soft" if spent / limit >= soft_ratio else "ok"


def read_spend(engine: Engine, budgets: Iterable[Budget], now: datetime) -> dict[str, Spend]:
    """Each budget's spend in its current period, by budget id: one query per scope and period."""
    with engine.connect() as conn:
        return _spend(conn, budgets, now)


def read_spend_seen(
    engine: Engine, budgets: Iterable[Budget], now: datetime, event_ids: Sequence[str]
) -> tuple[dict[str, Spend], set[str]]:
    """``read_spend`` and which of ``event_ids`` the database holds, from one snapshot: a
    process counting its own recent events on top of the spend can then drop exactly those the
    spend already includes (never counted twice, never dropped before they are in it)."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            conn.begin()
        else:  # pysqlite begins no transaction before a SELECT by itself
            conn.exec_driver_sql("BEGIN")
        try:
            spend = _spend(conn, budgets, now)
            seen: set[str] = set()
            ids = _EVENTS.c.id
            for i in range(0, len(event_ids), 500):
                chunk = list(event_ids[i : i + 500])
                seen.update(conn.execute(select(ids).where(ids.in_(chunk))).scalars())
        finally:
            conn.rollback()
    return spend, seen


def _spend(conn: Connection, budgets: Iterable[Budget], now: datetime) -> dict[str, Spend]:
    groups: dict[tuple[Scope, Period], list[Budget]] = {}
    for b in budgets:
        groups.setdefault((b.scope, b.period), []).append(b)
    out: dict[str, Spend] = {}
    r = _ROLLUPS.c
    for (scope, period), members in groups.items():
        subjects = sorted({b.subject for b in members})
        key = r[COLUMNS[scope]]
        stmt = (
            select(
                key,
                func.coalesce(func.sum(r.cost_micro_usd), 0),
                func.coalesce(func.sum(r.input_tokens + r.output_tokens), 0),
            )
            .where(r.hour >= period_start(period, now), key.in_(subjects))
            .group_by(key)
        )
        found = {row[0]: Spend(int(row[1]), int(row[2])) for row in conn.execute(stmt)}
        for b in members:
            out[b.id] = found.get(b.subject, Spend())
    return out


class BudgetConflict(ValueError):
    """A budget for this scope, subject and period exists already."""


def create_budget(
    engine: Engine,
    *,
    scope: Scope,
    subject: str,
    period: Period = "month",
    limit_micro_usd: int | None = None,
    limit_tokens: int | None = None,
    soft_ratio: float = DEFAULT_SOFT_RATIO,
) -> Budget:
    """Store a budget set through the admin API or CLI; BudgetConflict if one exists."""
    if limit_micro_usd is None and limit_tokens is None:
        raise ValueError("a budget needs a USD limit, a token limit, or both")
    record = BudgetRecord(
        id="bud_" + secrets.token_hex(8),
        scope=scope,
        subject=subject,
        period=period,
        limit_micro_usd=limit_micro_usd,
        limit_tokens=limit_tokens,
        soft_ratio=soft_ratio,
        created_at=datetime.now(UTC),
    )
    with Session(engine) as session:
        session.add(record)
        try:
            session.commit()
        except IntegrityError as exc:
            raise BudgetConflict(
                f"a {period} budget for {scope} {subject!r} exists already"
            ) from exc
        return _budget(record)


def list_budgets(engine: Engine) -> list[Budget]:
    with Session(engine) as session:
        stmt = select_records(BudgetRecord).order_by(col(BudgetRecord.created_at))
        return [_budget(r) for r in session.exec(stmt).all()]


def delete_budget(engine: Engine, budget_id: str) -> bool:
    with Session(engine) as session:
        result = session.exec(delete(BudgetRecord).where(col(BudgetRecord.id) == budget_id))
        session.commit()
        return bool(result.rowcount)


def _budget(r: BudgetRecord) -> Budget:
    return Budget(
        id=r.id,
        scope=r.scope,  # type: ignore[arg-type]
        subject=r.subject,
        period=r.period,  # type: ignore[arg-type]
        limit_micro_usd=r.limit_micro_usd,
        limit_tokens=r.limit_tokens,
        soft_ratio=r.soft_ratio,
        source="api",
    )
