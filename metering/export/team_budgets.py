"""Budget vs actual per team (cost centre): the month's spend next to the team's monthly budgets.

A monthly export compares against **monthly** budgets only: a weekly or daily budget limits
periods that a calendar month holds several of (and cuts across its edges), so it is named in
``other_budgets`` and not compared. The budgets are those set when the export runs, from the
config file and the ledger's budgets table: the ledger keeps no history of limits.

A team with several monthly budgets (one in the config file, one in the ledger) is compared
against the smallest USD limit and the smallest token limit among them; each status is the
worst of its budgets', so ``status`` is what ``/admin/budgets`` shows for the worst of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from metering.budgets import Budget, Spend, Status, budget_status, limit_status
from metering.export.cents import cents
from metering.export.views import Column, Sums, View, cost_micro, total_tokens, usd, zero_sums

_SEVERITY: dict[Status, int] = {"ok": 0, "soft": 1, "exceeded": 2}
_STATUS = "ok, soft (past the soft threshold) or exceeded; empty: no such limit"
# What a reader compares first (actual, the USD limit, the token limit, the status), then the
# exact micro-dollars and the budgets' ids.
COLUMNS = (
    Column("team", "str", "the team (cost centre); also teams with a budget and no requests"),
    Column("requests", "int", "requests this month"),
    Column("total_tokens", "int", "tokens this month (input + output)"),
    Column("cost_usd", "usd", "cost this month in USD"),
    Column("budget_usd", "usd", "the monthly USD limit"),
    Column("remaining_usd", "usd", "budget_usd - cost_usd"),
    Column("cost_used_share", "share", "cost_micro_usd / budget_micro_usd"),
    Column("cost_status", "str", f"the USD limit: {_STATUS}"),
    Column("budget_tokens", "int", "the monthly token limit (input + output)"),
    Column("remaining_tokens", "int", "budget_tokens - total_tokens (< 0: over)"),
    Column("token_used_share", "share", "total_tokens / budget_tokens"),
    Column("token_status", "str", f"the token limit: {_STATUS}"),
    Column("status", "str", "the worst of the team's monthly budgets, as /admin/budgets"),
    Column("cost_micro_usd", "int", "cost this month in micro-dollars, exact"),
    Column("budget_micro_usd", "int", "the monthly USD limit in micro-dollars"),
    Column("remaining_micro_usd", "int", "budget_micro_usd - cost_micro_usd (< 0: over)"),
    Column("budgets", "str", "the team's monthly budgets compared (ids); empty: none"),
    Column("other_budgets", "str", "the team's weekly and daily budgets, not compared"),
)
SUMMED = ("requests", "total_tokens", "cost_micro_usd", "cost_usd")


def team_budgets_view(teams: Mapping[str, Sums], budgets: Iterable[Budget]) -> View:
    """One row per team with requests in the month or a monthly budget, largest cost first;
    the budget columns empty for a team without a monthly budget."""
    monthly: dict[str, list[Budget]] = {}
    other: dict[str, list[Budget]] = {}
    for b in budgets:
        if b.scope == "team":
            (monthly if b.period == "month" else other).setdefault(b.subject, []).append(b)
    sums = {team: teams.get(team, zero_sums()) for team in {*teams, *monthly}}
    order = sorted(sums, key=lambda team: (-cost_micro(sums[team]), team))
    spent = cents([cost_micro(sums[team]) for team in order])
    rows = [
        _row(team, sums[team], cost_usd, monthly.get(team, []), other.get(team, []))
        for team, cost_usd in zip(order, spent, strict=True)
    ]
    return View("team_budgets", "per team, budget vs actual", COLUMNS, rows, summed=SUMMED)


def _row(
    team: str, s: Sums, cost_usd: Decimal, monthly: list[Budget], other: list[Budget]
) -> tuple[Any, ...]:
    spend = Spend(cost_micro(s), total_tokens(s))
    values: dict[str, Any] = dict.fromkeys(c.name for c in COLUMNS)  # empty unless set
    values.update(
        team=team,
        requests=s[0],
        total_tokens=spend.tokens,
        cost_usd=cost_usd,
        cost_micro_usd=spend.micro_usd,
        other_budgets="; ".join(_limits(b) for b in sorted(other, key=_by_period)) or None,
    )
    if monthly:
        values["budgets"] = ", ".join(b.id for b in monthly)
        values["status"] = _worst(budget_status(b, spend) for b in monthly)
    by_usd = _compare(spend.micro_usd, [(b.limit_micro_usd, b.soft_ratio) for b in monthly])
    if by_usd is not None:
        limit, remaining, used, status = by_usd
        values.update(
            budget_micro_usd=limit,
            budget_usd=usd(limit),
            remaining_micro_usd=remaining,
            remaining_usd=usd(limit) - cost_usd,
            cost_used_share=used,
            cost_status=status,
        )
    by_tokens = _compare(spend.tokens, [(b.limit_tokens, b.soft_ratio) for b in monthly])
    if by_tokens is not None:
        names = ("budget_tokens", "remaining_tokens", "token_used_share", "token_status")
        values.update(zip(names, by_tokens, strict=True))
    return tuple(values[c.name] for c in COLUMNS)


def _compare(
    spent: int, limits: list[tuple[int | None, float]]
) -> tuple[int, int, float, Status] | None:
    """The smallest of the limits (None: not limited), what remains of it, its used share and
    the worst status over all of them; None without a limit."""
    given = [(limit, soft) for limit, soft in limits if limit is not None]
    if not given:
        return None
    smallest = min(limit for limit, _ in given)
    status = _worst(limit_status(spent, limit, soft) for limit, soft in given)
    return smallest, smallest - spent, _used(spent, smallest), status


def _by_period(b: Budget) -> tuple[str, str]:
    return b.period, b.id


def _used(spent: int, limit: int) -> float:
    # a limit of 0 refuses everything: it is always fully used (as metering.budgets.used_ratio)
    return spent / limit if limit else 1.0


def _worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=_SEVERITY.__getitem__)


def _limits(b: Budget) -> str:
    parts = []
    if b.limit_micro_usd is not None:
        parts.append(f"${usd(b.limit_micro_usd):,}")
    if b.limit_tokens is not None:
        parts.append(f"{b.limit_tokens:,} tokens")
    return f"{b.name} {' + '.join(parts)}"
