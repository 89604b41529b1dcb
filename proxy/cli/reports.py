"""``tokenmeter prices``, ``tco`` and ``compare``: what the ledger and the cost model say now."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from proxy.cli.common import ConfigOpt, as_utc, fail, load, open_ledger
from proxy.config.settings import ConfigError


def prices(config: ConfigOpt = None) -> None:
    """Show each deployment's price key and prices (USD per million tokens) in force now."""
    import time

    from proxy.config.catalogue import effective_models
    from proxy.config.pricebook import build_pricebook

    settings = load(config)
    models = effective_models(settings)
    book = build_pricebook(settings, models)
    typer.echo(f"prices: {book.table.source}")
    typer.echo(
        f"{'model':<16} {'deployment':<40} {'price key':<30} "
        f"{'in':>7} {'out':>7} {'c-read':>7} {'c-5m':>7} {'c-1h':>7}  rule"
    )
    now = time.time()
    for m in models:
        for d in m.deployments:
            name = d.name or f"{d.backend}/{d.model}"
            rule = book.rule_at(d.model, d.backend, now)
            price = rule.price if rule and rule.price else book.list_price(d.model, d.backend)
            if d.is_on_prem:
                typer.echo(f"{m.name:<16} {name:<40} {'on-prem: costed by the TCO model'}")
                continue
            if price is None:
                typer.echo(
                    f"{m.name:<16} {name:<40} UNKNOWN: cost recorded as unknown; "
                    "set price_key or a pricing rule"
                )
                continue
            per_m = [
                p * 1_000_000
                for p in (
                    price.input,
                    price.output,
                    price.cache_read,
                    price.cache_write_5m,
                    price.cache_write_1h,
                )
            ]
            off = f"-{rule.fraction_off:.1%}" if rule and rule.fraction_off else ""
            typer.echo(
                f"{m.name:<16} {name:<40} {price.key:<30} "
                + " ".join(f"{float(v):>7.3f}" for v in per_m)
                + f"  {off}"
            )


def tco(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the projection as JSON")] = False,
) -> None:
    """The live hosted vs. on-prem projection of the traffic in the ledger."""
    import json

    from proxy.cli.tco_report import render_tco
    from proxy.config.catalogue import effective_models
    from proxy.config.pricebook import build_pricebook
    from proxy.gateway.projector import project_now

    settings = load(config)
    models = effective_models(settings)
    book = build_pricebook(settings, models)
    try:
        result = project_now(open_ledger(settings), settings.tco, book, models)
    except ConfigError as exc:
        fail(str(exc), code=2)
    typer.echo(json.dumps(result.to_json(), indent=2) if as_json else render_tco(result))


def compare(
    model: Annotated[str | None, typer.Option(help="model alias (default: all)")] = None,
    since: Annotated[datetime | None, typer.Option(help="start, inclusive (UTC)")] = None,
    until: Annotated[datetime | None, typer.Option(help="end, exclusive (UTC)")] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The pilot report: latency, errors and cost per 1k tokens per deployment."""
    import json

    from metering.compare import compare_deployments
    from proxy.admin.pilot import pilot_report
    from proxy.config.catalogue import effective_models
    from proxy.config.pricebook import build_pricebook
    from proxy.gateway.projector import project_now

    settings = load(config)
    engine = open_ledger(settings)
    since, until = as_utc(since), as_utc(until)
    rows = compare_deployments(engine, model=model, since=since, until=until)
    models = effective_models(settings)
    book = build_pricebook(settings, models)
    report = pilot_report(
        rows, project_now(engine, settings.tco, book, models), model=model, since=since, until=until
    )
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    typer.echo(
        f"{'deployment':<44} {'reqs':>6} {'err%':>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'ttft50':>8} {'tok/s':>7} {'$/1k':>10}"
    )
    for r in report["deployments"]:
        cost = (
            r.get("onprem_usd_per_1k_tokens_measured")
            if r["on_prem"]
            else r["hosted_usd_per_1k_tokens"]
        )
        typer.echo(
            f"{r['deployment']:<44} {r['requests']:>6} {r['error_rate']:>6.1%} "
            f"{_ms(r['latency_s']['p50']):>8} {_ms(r['latency_s']['p95']):>8} "
            f"{_ms(r['ttft_s']['p50']):>8} {_num(r['output_tokens_per_s']):>7} "
            f"{_num(cost, 5):>10}"
        )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
