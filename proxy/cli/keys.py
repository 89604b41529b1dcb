"""``tokenmeter keys``: virtual keys, created, listed and revoked in the ledger."""

from __future__ import annotations

from typing import Annotated

import typer

from proxy.cli.common import ConfigOpt, load, open_ledger

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
        f"{'id':<22} {'prefix':<12} {'user':<20} {'team':<12} {'use_case':<14} {'kind':<8} status"
    )
    for k in rows:
        status = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
        typer.echo(
            f"{k.id:<22} {k.prefix:<12} {k.user:<20} {k.team or '-':<12} "
            f"{k.use_case or '-':<14} {'service' if k.service else 'user':<8} {status}"
        )


@keys_cli.command("revoke")
def keys_revoke(key_id: str, config: ConfigOpt = None) -> None:
    """Revoke a key; running servers refuse it within their refresh interval."""
    from metering.keys import revoke_key

    if not revoke_key(open_ledger(load(config)), key_id):
        typer.echo(f"error: no active key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
