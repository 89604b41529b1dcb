"""``tokenmeter db``: the ledger's schema."""

from __future__ import annotations

import typer

from proxy.cli.common import ConfigOpt, load

db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_cli.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Bring the database schema up to date."""
    from metering.store import create_db_engine, head_revision, upgrade_schema

    engine = create_db_engine(load(config).storage.url)
    upgrade_schema(engine)
    typer.echo(f"schema at revision {head_revision()}")
