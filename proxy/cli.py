"""The ``tokenmeter`` command line."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from proxy.cli_extra import register_extra_commands
from proxy.settings import ConfigError, Settings, load_settings

cli = typer.Typer(
    help="tokenmeter: an LLM gateway that meters every token.",
    no_args_is_help=True,
    add_completion=False,
)
keys_cli = typer.Typer(help="Manage virtual keys.", no_args_is_help=True)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")
cli.add_typer(db_cli, name="db")
register_extra_commands(cli)  # export, demo

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file", envvar="TOKENMETER_CONFIG")
]
log = logging.getLogger("tokenmeter")


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@cli.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(envvar="TOKENMETER_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TOKENMETER_PORT")] = 4100,
    workers: Annotated[int, typer.Option(min=1, envvar="TOKENMETER_WORKERS")] = 1,
    log_level: Annotated[str, typer.Option(envvar="TOKENMETER_LOG_LEVEL")] = "info",
) -> None:
    """Run the gateway."""
    import uvicorn

    from proxy.app import ENV_CONFIG, auth_required, effective_models
    from proxy.simulation import ENV_BASES, encode_bases, run_simulated

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = _settings(config)
    models = effective_models(settings)
    _check_tco(settings, models)
    if workers > 1 or not settings.storage.url.startswith("sqlite"):
        # migrate SQLite once here, not racing in every worker; refuse an outdated shared
        # database with a clear message before any worker starts
        _engine(config).dispose()
    with _metrics_shared_between(workers), run_simulated(models) as bases:
        _announce(settings, models, bases)
        os.environ[ENV_BASES] = encode_bases(bases)
        if config is not None:
            os.environ[ENV_CONFIG] = str(config.resolve())
        if not auth_required(settings, models):
            log.warning("!" * 72)
            log.warning(
                "OPEN MODE: requests WITHOUT a valid virtual key are accepted (as key "
                "'anonymous'). This is the default only when every backend is simulated; set "
                "auth.required (TOKENMETER_AUTH__REQUIRED=true) to require keys."
            )
            log.warning("!" * 72)
        uvicorn.run(
            "proxy.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=10,
        )


@contextmanager
def _metrics_shared_between(workers: int) -> Iterator[None]:
    """Several workers: prometheus_client's multiprocess mode, in a directory of ours (removed
    when serve exits) unless the operator set PROMETHEUS_MULTIPROC_DIR."""
    if workers == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    path = tempfile.mkdtemp(prefix="tokenmeter-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(path, ignore_errors=True)


def _check_tco(settings: Settings, models: list) -> None:  # type: ignore[type-arg]
    from proxy.pricing_setup import build_pricebook
    from proxy.projector import tco_inputs

    try:
        tco_inputs(settings.tco, build_pricebook(settings, models))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _announce(settings: Settings, models: list, bases: dict[str, str]) -> None:  # type: ignore[type-arg]
    log.info("ledger: %s", _redact(settings.storage.url))
    for m in models:
        for i, d in enumerate(m.deployments):
            where = (
                f"SIMULATED at {bases[f'{m.name}#{i}']}" if d.simulated else d.api_base or "default"
            )
            log.info("model %-14s -> %s %s (%s)", m.name, d.backend, d.model, where)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@keys_cli.command("create")
def keys_create(
    user: Annotated[str, typer.Option(help="user the key belongs to")],
    team: Annotated[str | None, typer.Option()] = None,
    use_case: Annotated[str | None, typer.Option("--use-case")] = None,
    agent: Annotated[str | None, typer.Option()] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    from metering.keys import create_key

    engine = _engine(config)
    public, key = create_key(engine, user=user, team=team, use_case=use_case, agent=agent)
    typer.echo(
        f"created {public.id} for user {public.user}; store the key now, it is not shown again:",
        err=True,
    )
    typer.echo(key)


@keys_cli.command("list")
def keys_list(config: ConfigOpt = None) -> None:
    """List keys (never the keys themselves)."""
    from metering.keys import list_keys

    rows = list_keys(_engine(config))
    typer.echo(f"{'id':<22} {'prefix':<12} {'user':<20} {'team':<12} {'use_case':<14} status")
    for k in rows:
        status = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
        typer.echo(
            f"{k.id:<22} {k.prefix:<12} {k.user:<20} {k.team or '-':<12} "
            f"{k.use_case or '-':<14} {status}"
        )


@keys_cli.command("revoke")
def keys_revoke(key_id: str, config: ConfigOpt = None) -> None:
    """Revoke a key; running servers refuse it within their refresh interval."""
    from metering.keys import revoke_key

    if not revoke_key(_engine(config), key_id):
        typer.echo(f"error: no active key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@cli.command()
def prices(config: ConfigOpt = None) -> None:
    """Show each deployment's price key and prices (USD per million tokens) in force now."""
    import time

    from proxy.app import effective_models
    from proxy.pricing_setup import build_pricebook

    settings = _settings(config)
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


@cli.command()
def tco(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the projection as JSON")] = False,
) -> None:
    """The live hosted vs. on-prem projection of the traffic in the ledger."""
    import json

    from proxy.app import effective_models
    from proxy.pricing_setup import build_pricebook
    from proxy.projector import project_now
    from proxy.tco_report import render_tco

    settings = _settings(config)
    book = build_pricebook(settings, effective_models(settings))
    try:
        result = project_now(_engine(config), settings.tco, book)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(result, indent=2) if as_json else render_tco(result))


@cli.command()
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
    from proxy.app import effective_models
    from proxy.pilot import pilot_report
    from proxy.pricing_setup import build_pricebook
    from proxy.projector import project_now

    settings = _settings(config)
    engine = _engine(config)
    since, until = (_as_utc(t) for t in (since, until))
    rows = compare_deployments(engine, model=model, since=since, until=until)
    book = build_pricebook(settings, effective_models(settings))
    report = pilot_report(
        rows, project_now(engine, settings.tco, book), model=model, since=since, until=until
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


def _as_utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@db_cli.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Bring the database schema up to date."""
    from metering.store import create_db_engine, head_revision, upgrade_schema

    engine = create_db_engine(_settings(config).storage.url)
    upgrade_schema(engine)
    typer.echo(f"schema at revision {head_revision()}")


def _engine(config: Path | None):  # type: ignore[no-untyped-def]
    from metering.store import SchemaOutdated, create_db_engine, prepare_schema

    engine = create_db_engine(_settings(config).storage.url)
    try:
        prepare_schema(engine)
    except SchemaOutdated as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    return engine


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
