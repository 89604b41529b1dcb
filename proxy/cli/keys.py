"""``tokenmeter keys``: virtual keys, created, listed and revoked in the ledger."""

from __future__ import annotations

from typing import Annotated

import typer

from proxy.cli.common import ConfigOpt, load, open_ledger, table

keys_cli = typer.Typer(help="Manage virtual keys.", no_args_is_help=True)


@keys_cli.command("create")
def keys_create(
    user: Annotated[str, typer.Option(help="user the key belongs to")],
    team: Annotated[str | None, typer.Option()] = None,
    use_case: Annotated[str | None, typer.Option("--use-case")] = None,
    agent: Annotated[str | None, typer.Option()] = None,
    service: Annotated[
        bool, typer.Option(help="bill the end users the client declares, not the key's user")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    from metering.keys import create_key

    engine = open_ledger(load(config))
    public, key = create_key(
        engine, user=user, team=team, use_case=use_case, agent=agent, service=service
    )
    typer.echo(
        f"created {public.id} for user {public.user}; store the key now, it is not shown again:",
        err=True,
    )
    typer.echo(key)


@keys_cli.command("list")
def keys_list(config: ConfigOpt = None) -> None:
    """List keys (never the keys themselves)."""
    from metering.keys import list_keys

    rows = list_keys(open_ledger(load(config)))
    typer.echo(
        table(
            ("id", "prefix", "user", "team", "use_case", "kind", "status"),
            (
                (
                    k.id,
                    k.prefix,
                    k.user,
                    k.team or "-",
                    k.use_case or "-",
                    "service" if k.service else "user",
                    f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active",
                )
                for k in rows
            ),
        )
    )


@keys_cli.command("revoke")
def keys_revoke(key_id: str, config: ConfigOpt = None) -> None:
    """Revoke a key; running servers refuse it within their refresh interval."""
    from metering.keys import revoke_key

    if not revoke_key(open_ledger(load(config)), key_id):
        typer.echo(f"error: no active key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
