"""``tokenmeter ledger``: the ledger's quarantine, inspected and replayed after a fix."""

from __future__ import annotations

from typing import Annotated

import typer

from proxy.cli.common import ConfigOpt, load, open_ledger

ledger_cli = typer.Typer(help="The ledger: its quarantine of refused events.", no_args_is_help=True)
quarantine_cli = typer.Typer(
    help="Events the database refused on their data (see docs/ledger.md).", no_args_is_help=True
)
ledger_cli.add_typer(quarantine_cli, name="quarantine")


@quarantine_cli.command("list")
def quarantine_list(
    limit: Annotated[int | None, typer.Option(min=1, help="show at most this many")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    config: ConfigOpt = None,
) -> None:
    """Quarantined events, oldest first, with the error that put each there."""
    import json

    from metering.quarantine import list_quarantined

    entries = list_quarantined(open_ledger(load(config)), limit=limit)
    if json_out:
        for e in entries:
            record = {
                "id": e.id,
                "quarantined_at": e.quarantined_at.isoformat(),
                "attempts": e.attempts,
                "error": e.error,
                "event": e.row if e.row is not None else e.raw,
            }
            typer.echo(json.dumps(record, ensure_ascii=True))
        return
    typer.echo(f"{'id':<28} {'quarantined (UTC)':<20} {'tries':>5}  error")
    for e in entries:
        typer.echo(f"{e.id:<28} {e.quarantined_at:%Y-%m-%d %H:%M:%S} {e.attempts:>5}  {e.error}")
    typer.echo(f"{len(entries)} quarantined event(s)", err=True)


@quarantine_cli.command("retry")
def quarantine_retry(
    ids: Annotated[list[str] | None, typer.Argument(help="event ids (default: all)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Replay quarantined events into the ledger; those the database still refuses stay."""
    from metering.quarantine import retry_quarantined

    replayed, failed = retry_quarantined(open_ledger(load(config)), ids=ids or ())
    typer.echo(f"replayed {replayed}, still quarantined {failed}")
    if failed:
        raise typer.Exit(1)
