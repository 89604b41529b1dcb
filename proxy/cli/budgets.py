"""``tokenmeter budgets``: spending limits created, listed with their spend, and deleted.

Budgets made here live in the ledger (as through ``/admin/budgets``); running servers pick them
up within ``budgets.refresh_interval_s``. Budgets of the config file are listed too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

import typer

from proxy.cli.common import ConfigOpt, fail, load, open_ledger, table

budgets_cli = typer.Typer(help="Manage budgets (spending limits).", no_args_is_help=True)

_SCOPES = ("key", "user", "team", "use_case")
_PERIODS = ("month", "week", "day")


@budgets_cli.command("create")
def budgets_create(
    scope: Annotated[str, typer.Option(help="key, user, team or use_case")],
    subject: Annotated[str, typer.Option(help="the key id, user, team or use case")],
    usd: Annotated[Decimal | None, typer.Option(help="limit in USD per period")] = None,
    tokens: Annotated[int | None, typer.Option(help="limit in tokens (input + output)")] = None,
    period: Annotated[str, typer.Option(help="month, week or day (UTC calendar)")] = "month",
    soft: Annotated[float, typer.Option(help="warn from this share of a limit on")] = 0.8,
    config: ConfigOpt = None,
) -> None:
    """Create a budget."""
    from metering.budgets import BudgetConflict, create_budget

    if scope not in _SCOPES:
        fail(f"--scope must be one of {', '.join(_SCOPES)}", code=2)
    if period not in _PERIODS:
        fail(f"--period must be one of {', '.join(_PERIODS)}", code=2)
    if usd is None and tokens is None:
        fail("give --usd, --tokens, or both", code=2)
    if (usd is not None and usd < 0) or (tokens is not None and tokens < 0) or not 0 < soft <= 1:
        fail("limits must be >= 0 and --soft in (0, 1]", code=2)
    try:
        budget = create_budget(
            open_ledger(load(config)),
            scope=scope,  # type: ignore[arg-type]
            subject=subject,
            period=period,  # type: ignore[arg-type]
            limit_micro_usd=None if usd is None else int(usd * 1_000_000),
            limit_tokens=tokens,
            soft_ratio=soft,
        )
    except BudgetConflict as exc:
        fail(str(exc), code=1)
    typer.echo(f"created {budget.id}: {budget.name}")


@budgets_cli.command("list")
def budgets_list(config: ConfigOpt = None) -> None:
    """List budgets with what the ledger says was spent in the current period."""
    from metering.budgets import budget_status, list_budgets, read_spend, used_ratio
    from proxy.config.budgets import config_budgets

    settings = load(config)
    engine = open_ledger(settings)
    budgets = config_budgets(settings.budgets) + list_budgets(engine)
    spend = read_spend(engine, budgets, datetime.now(UTC))
    rows = []
    for b in budgets:
        s = spend[b.id]
        spent = _amounts(
            s.micro_usd if b.limit_micro_usd is not None else None,
            s.tokens if b.limit_tokens is not None else None,
        )
        limit = _amounts(b.limit_micro_usd, b.limit_tokens)
        # a budget of the config file is named by what it limits (its id says no more)
        shown_id = "config" if b.id.startswith("config:") else b.id
        rows.append(
            (shown_id, b.name, limit, spent, f"{used_ratio(b, s):.0%}", budget_status(b, s))
        )
    header = ("id", "budget", "limit", "spent", "used", "status")
    typer.echo(table(header, rows, right=(2, 3, 4)))


def _amounts(micro_usd: int | None, tokens: int | None) -> str:
    parts = []
    if micro_usd is not None:
        parts.append(f"${micro_usd / 1e6:,.2f}")
    if tokens is not None:
        parts.append(f"{tokens:,} tok")
    return " + ".join(parts)


@budgets_cli.command("delete")
def budgets_delete(budget_id: str, config: ConfigOpt = None) -> None:
    """Delete a budget made through the CLI or the admin API."""
    from metering.budgets import delete_budget

    if budget_id.startswith("config:"):
        fail("a budget from the config file is removed there", code=2)
    if not delete_budget(open_ledger(load(config)), budget_id):
        fail(f"no budget {budget_id!r}", code=1)
    typer.echo(f"deleted {budget_id}")
