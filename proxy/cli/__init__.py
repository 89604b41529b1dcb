"""The ``tokenmeter`` command line: one module per command group, shared options in ``common``."""

from __future__ import annotations

import sys

import typer

from proxy.cli import budgets, db, demo, export, keys, ledger, reconcile, reports, serve

cli = typer.Typer(
    help="tokenmeter: an LLM gateway that meters every token.",
    no_args_is_help=True,
    add_completion=False,
)
cli.command()(serve.serve)
cli.add_typer(keys.keys_cli, name="keys")
cli.add_typer(budgets.budgets_cli, name="budgets")
cli.command()(reports.prices)
cli.command()(reports.tco)
cli.command()(reports.compare)
cli.command("export")(export.export)
cli.command("reconcile")(reconcile.reconcile)
cli.command("demo")(demo.demo)
cli.add_typer(db.db_cli, name="db")
cli.add_typer(ledger.ledger_cli, name="ledger")


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
