"""``tokenmeter serve``: the gateway under uvicorn, with its simulated backends when needed."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from proxy.cli.common import ConfigOpt, fail, load, open_ledger
from proxy.config.settings import ConfigError, ModelConfig, Settings

log = logging.getLogger("tokenmeter")


def serve(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(envvar="TOKENMETER_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TOKENMETER_PORT")] = 4100,
    workers: Annotated[int, typer.Option(min=1, envvar="TOKENMETER_WORKERS")] = 1,
    log_level: Annotated[str, typer.Option(envvar="TOKENMETER_LOG_LEVEL")] = "info",
) -> None:
    """Run the gateway."""
    import uvicorn

    from proxy.app import ENV_CONFIG
    from proxy.config.catalogue import auth_required, effective_models
    from proxy.simulated.launcher import ENV_BASES, encode_bases, run_simulated

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load(config)
    models = effective_models(settings)
    _check_tco(settings, models)
    if workers > 1 or not settings.storage.url.startswith("sqlite"):
        # migrate SQLite once here, not racing in every worker; refuse an outdated shared
        # database with a clear message before any worker starts
        open_ledger(settings).dispose()
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


def _check_tco(settings: Settings, models: list[ModelConfig]) -> None:
    """Stop on an unusable TCO plan; log each missing or deprecated price key once, at start."""
    from proxy.config.pricebook import build_pricebook
    from proxy.gateway.projector import tco_inputs

    try:
        inputs = tco_inputs(settings.tco, build_pricebook(settings, models), models)
    except ConfigError as exc:
        fail(str(exc), code=2)
    for warning in inputs.warnings:
        log.warning("prices: %s", warning)


def _announce(settings: Settings, models: list[ModelConfig], bases: dict[str, str]) -> None:
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
