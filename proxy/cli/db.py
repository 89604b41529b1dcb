"""``tokenmeter db``: the ledger's schema."""

from __future__ import annotations

import typer

from proxy.cli.common import ConfigOpt, load, open_ledger

db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_cli.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Bring the database schema up to date."""
    from metering.store import head_revision

    open_ledger(load(config), upgrade=True).dispose()
    typer.echo(f"schema at revision {head_revision()}")
