"""``tokenmeter demo``: a synthetic organisation's month through the gateway, then its report."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proxy.cli.common import fail, tco_inputs
from proxy.config.settings import Settings

if TYPE_CHECKING:
    from metering.export.month import Month
    from proxy.demo.org import PlannedRequest
    from proxy.demo.play import DemoOptions

DEMO_REQUESTS = 15_000  # about a minute on a 2-core machine


def demo(
    port: Annotated[int, typer.Option(help="gateway port on 127.0.0.1 (0: any free)")] = 4100,
    seed: Annotated[int | None, typer.Option(help="replay a month (default: random)")] = None,
    seats: Annotated[int, typer.Option(min=1, help="seats in the organisation")] = 200,
    month: Annotated[str | None, typer.Option(help="YYYY-MM (default: last month)")] = None,
    requests: Annotated[int, typer.Option(min=1, help="requests in the month")] = DEMO_REQUESTS,
    concurrency: Annotated[int, typer.Option(min=1, help="requests in flight")] = 32,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="ledger and log (default: a new temp directory)")
    ] = None,
    serve: Annotated[bool, typer.Option(help="keep serving after the report")] = True,
) -> None:
    """Play a synthetic organisation's month through the gateway on simulated backends, print
    the 80/20 split, the top use cases and the TCO verdict, then keep serving."""
    import random
    import tempfile

    from metering.export.month import Month, UnknownMonth
    from proxy.demo.gateway import GatewayError
    from proxy.demo.play import DemoOptions

    try:
        played = Month.parse(month) if month else _last_month()
    except UnknownMonth as exc:
        fail(str(exc), code=2)
    if directory is not None and (directory / "ledger.db").exists():
        fail(f"{directory} already holds a demo ledger: pass a new --dir", code=2)
    where = directory or Path(tempfile.mkdtemp(prefix="tokenmeter-demo-"))
    where.mkdir(parents=True, exist_ok=True)
    opts = DemoOptions(
        port=port,
        seed=random.randrange(10_000) if seed is None else seed,
        seats=seats,
        month=played,
        requests=requests,
        concurrency=concurrency,
        directory=where,
        serve=serve,
    )
    try:
        _play(opts)
    except GatewayError as exc:
        fail(str(exc), code=1)


def _play(opts: DemoOptions) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from proxy.demo.play import run_demo

    tco = tco_inputs(Settings.model_construct())  # the demo's gateway runs on the defaults
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    bar = Progress(*columns, transient=True, disable=not sys.stderr.isatty())
    task = bar.add_task(str(opts.month), total=opts.requests)

    def done(r: PlannedRequest) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(
            task, advance=1, description=f"{datetime.fromtimestamp(r.at, UTC):%a %d %b %H:%M}"
        )

    def say(text: str) -> None:
        bar.stop()
        typer.echo(text)

    _stop_on_signals()
    try:
        run_demo(opts, tco, progress=done, say=say)
    finally:
        bar.stop()


def _stop_on_signals() -> None:
    """SIGTERM, and SIGINT even where the shell ignores it (a background job), end the demo the
    way Ctrl-C does: the gateway child is shut down, never left running on its own."""
    import signal

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


def _last_month() -> Month:
    from metering.export.month import Month

    today = datetime.now(UTC)
    return Month(today.year - (today.month == 1), (today.month - 2) % 12 + 1)
