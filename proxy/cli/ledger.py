"""``tokenmeter ledger``: the ledger process, and its quarantine inspected and replayed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from proxy.cli.common import ConfigOpt, fail, load, open_ledger, table

if TYPE_CHECKING:
    from metering.service import LedgerService
    from proxy.config.settings import Settings

ledger_cli = typer.Typer(
    help="The ledger: its process, and its quarantine of refused events.", no_args_is_help=True
)
quarantine_cli = typer.Typer(
    help="Events the database refused on their data (see docs/ledger.md).", no_args_is_help=True
)
ledger_cli.add_typer(quarantine_cli, name="quarantine")


def ledger_service(settings: Settings, *, parent_pid: int | None = None) -> LedgerService:
    """The ledger process's work for these settings (its database engine opened)."""
    import os
    from pathlib import Path

    from metering.service import LedgerService
    from metering.store import create_db_engine

    storage = settings.storage
    on_quarantined = on_backlog = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # serve with several workers: they read it
        from prometheus_client import CollectorRegistry

        from metering.metrics import backlog_gauges, quarantined_counter

        registry = CollectorRegistry()
        on_quarantined = quarantined_counter(registry).inc
        events, size = backlog_gauges(registry)

        def on_backlog(n: int, nbytes: int) -> None:
            events.set(n)
            size.set(nbytes)

    return LedgerService(
        create_db_engine(storage.url),
        Path(storage.journal_dir),
        max_batch=storage.batch_max_events,
        flush_interval_s=storage.flush_interval_s,
        retention_days=storage.retention_days,
        window_days=settings.tco.window_days,
        window_interval_s=settings.tco.interval_s,
        parent_pid=parent_pid,
        on_quarantined=on_quarantined,
        on_backlog=on_backlog,
    )


@ledger_cli.command("run")
def ledger_run(
    config: ConfigOpt = None,
    parent_pid: Annotated[
        int | None, typer.Option(hidden=True, help="stop when this process is gone (serve)")
    ] = None,
    log_level: Annotated[str, typer.Option(envvar="TOKENMETER_LOG_LEVEL")] = "info",
    cpus: Annotated[
        str | None,
        typer.Option(envvar="TOKENMETER_LEDGER_CPUS", help="its CPUs, as taskset -c: 1 or 2-3"),
    ] = None,
) -> None:
    """Move the journal into the database (serve starts this itself; run it alone to drain a
    journal, or as its own service beside the gateway's workers)."""
    import asyncio
    import signal

    from proxy.cli.cpus import pin, usable_cpus
    from proxy.config.observability import configure_logging

    configure_logging(log_level)
    pin(usable_cpus("--cpus", cpus))  # before any thread starts: they inherit it
    settings = load(config)
    if not settings.storage.journal:
        fail("storage.journal is off: there is no journal for a ledger process to move", code=2)
    open_ledger(settings).dispose()  # migrate, or refuse an outdated database, first
    service = ledger_service(settings, parent_pid=parent_pid)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    asyncio.run(main())


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
    cells = (
        (e.id, f"{e.quarantined_at:%Y-%m-%d %H:%M}", str(e.attempts), e.error) for e in entries
    )
    typer.echo(table(("id", "quarantined (UTC)", "tries", "error"), cells, right=(2,)))
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
