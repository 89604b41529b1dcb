"""``tokenmeter serve``: the gateway under uvicorn, with its simulated backends when needed."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proxy.cli.common import ConfigOpt, fail, load, open_ledger
from proxy.cli.cpus import format_cpus, pin, usable_cpus
from proxy.config.settings import ConfigError, ModelConfig, Settings

if TYPE_CHECKING:
    from cost.pricebook import Pricebook

log = logging.getLogger("tokenmeter")


def serve(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(envvar="TOKENMETER_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TOKENMETER_PORT")] = 4100,
    workers: Annotated[int, typer.Option(min=1, envvar="TOKENMETER_WORKERS")] = 1,
    log_level: Annotated[str, typer.Option(envvar="TOKENMETER_LOG_LEVEL")] = "info",
    cpus: Annotated[
        str | None,
        typer.Option(envvar="TOKENMETER_CPUS", help="the workers' CPUs, as taskset -c: 0 or 0-3,6"),
    ] = None,
    ledger_cpus: Annotated[
        str | None,
        typer.Option(
            envvar="TOKENMETER_LEDGER_CPUS",
            help="the ledger process's CPUs; by default those serve was given",
        ),
    ] = None,
) -> None:
    """Run the gateway."""
    import uvicorn

    from proxy.app import ENV_CONFIG, ENV_LOG_LEVEL
    from proxy.config.catalogue import auth_required, effective_models
    from proxy.config.observability import configure_logging
    from proxy.gateway.drain import SERVER_GRACE_S
    from proxy.simulated.launcher import ENV_BASES, encode_bases, run_simulated

    configure_logging(log_level)
    worker_cpus = usable_cpus("--cpus", cpus)
    ledger_at = usable_cpus("--ledger-cpus", ledger_cpus)
    if worker_cpus is not None and ledger_at is None:  # a restarted ledger keeps serve's CPUs
        ledger_at = frozenset(os.sched_getaffinity(0))
    _raise_open_file_limit()
    os.environ[ENV_LOG_LEVEL] = log_level
    settings = load(config)
    models = effective_models(settings)
    from proxy.config.pricebook import build_pricebook

    book = build_pricebook(settings, models)  # reads the price map: once, for both checks
    _check_tco(settings, models, book)
    _preflight(settings, models, book)
    _check_admin_key(settings, models)
    # migrate SQLite once here, not racing in every worker; refuse an outdated shared database
    # (or one that does not answer) with one clear line before any worker starts
    open_ledger(settings).dispose()
    with (
        _stops_in_order(),
        _metrics_shared_between(workers),
        run_simulated(models) as bases,
        _ledger_process(settings, config, log_level, ledger_at),
    ):
        _announce(settings, models, bases)
        if ledger_cpus is not None and not settings.storage.ledger_process:
            log.warning(
                "--ledger-cpus %s: there is no ledger process to place (storage.ledger is inline "
                "or the journal is off): the workers write the database, on their CPUs",
                ledger_cpus,
            )
        elif worker_cpus is not None or ledger_cpus is not None:
            log.info(
                "workers on CPU %s; ledger process on CPU %s",
                format_cpus(worker_cpus or os.sched_getaffinity(0)),
                format_cpus(ledger_at or os.sched_getaffinity(0)),
            )
        pin(worker_cpus)  # the workers start from this thread, and inherit it
        os.environ[ENV_BASES] = encode_bases(bases)
        if config is not None:
            os.environ[ENV_CONFIG] = str(config.resolve())
        if not auth_required(settings, models):
            log.warning("!" * 72)
            log.warning(
                "OPEN MODE: requests WITHOUT a valid virtual key are accepted (as key "
                "'anonymous'), and the user a client declares is the one billed. This is the "
                "default only when every backend is simulated; set auth.required "
                "(TOKENMETER_AUTH__REQUIRED=true) to require keys."
            )
            if settings.effective_admin_key is None and _all_simulated(models):
                log.warning(
                    "OPEN MODE: the admin API (/admin/*: keys, budgets, usage, exports) answers "
                    "loopback clients WITHOUT an admin key; set TOKENMETER_ADMIN_KEY to guard it."
                )
            log.warning("!" * 72)
        uvicorn.run(
            "proxy.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http=http_protocol(settings),  # type: ignore[arg-type]
            log_level=log_level,
            access_log=False,
            # the app cuts (and meters) streams at its drain deadline: the server waits longer
            timeout_graceful_shutdown=int(settings.limits.drain_timeout_s + SERVER_GRACE_S),
        )


def http_protocol(settings: Settings) -> object:
    """httptools with bounded request heads (proxy/gateway/http_limits.py); a partial pickles, so
    ``--workers`` processes get the same limits."""
    import functools

    from proxy.gateway.http_limits import HeadLimits, LimitedHttpToolsProtocol

    lim = settings.limits
    limits = HeadLimits(lim.max_header_bytes, lim.max_headers, lim.header_timeout_s)
    return functools.partial(LimitedHttpToolsProtocol, limits=limits)


def _raise_open_file_limit() -> None:
    """Each open stream holds two descriptors (client and upstream): at a default soft limit of
    1,024 one worker would hold under 500 streams. Raise it to the hard limit (workers and the
    upstream pool, sized from it, inherit it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("open-file limit stays at %d (%s)", soft, exc)


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


@contextmanager
def _stops_in_order() -> Iterator[None]:
    """uvicorn raises the SIGTERM or SIGINT it stopped on again once it is done, for the
    handler it found to end the process: ours unwinds serve's contexts first (the ledger process
    drains the workers' last events), then ends the process by that signal as before."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except _Stopped as exc:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.signal(exc.signum, signal.SIG_DFL)
        signal.raise_signal(exc.signum)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _ledger_process(
    settings: Settings, config: Path | None, log_level: str, cpus: frozenset[int] | None
) -> Iterator[None]:
    """The ledger process beside the workers (storage.ledger: process), restarted if it dies;
    stopped after the workers, so its last drain takes their last events."""
    if not settings.storage.ledger_process:
        yield
        return
    from proxy.cli.supervise import Supervised

    cmd = [sys.executable, "-m", "proxy", "ledger", "run", "--parent-pid", str(os.getpid())]
    cmd += ["--log-level", log_level, *(["--config", str(config)] if config else [])]
    cmd += ["--cpus", format_cpus(cpus)] if cpus is not None else []
    child = Supervised("ledger process", cmd).start()
    try:
        yield
    finally:
        child.stop(timeout_s=60)


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


def _check_tco(settings: Settings, models: list[ModelConfig], book: Pricebook) -> None:
    """Stop on an unusable TCO plan; log each missing or deprecated price key once, at start."""
    from proxy.gateway.projector import tco_inputs

    try:
        inputs = tco_inputs(settings.tco, book, models)
    except ConfigError as exc:
        fail(str(exc), code=2)
    for warning in inputs.warnings:
        # a deployment missing from the price map is warned about by the preflight, with its
        # price key and alias (and only when no pricing rule prices it)
        if not warning.startswith("deployment ") or "no entry in the price map" not in warning:
            log.warning("prices: %s", warning)


def _all_simulated(models: list[ModelConfig]) -> bool:
    return all(d.simulated for m in models for d in m.deployments)


def _check_admin_key(settings: Settings, models: list[ModelConfig]) -> None:
    """Real backends spend real money: refuse to serve them with an unguarded admin API."""
    if settings.effective_admin_key or _all_simulated(models):
        return
    if settings.auth.allow_no_admin_key:
        log.warning("no admin key set: the admin API (/admin/*) is disabled (answers 401)")
        return
    fail(
        "real backends are configured but no admin key is set: set TOKENMETER_ADMIN_KEY "
        "(or auth.admin_key), or allow serving without the admin API with "
        "auth.allow_no_admin_key: true (TOKENMETER_AUTH__ALLOW_NO_ADMIN_KEY=true)",
        code=2,
    )


def _preflight(settings: Settings, models: list[ModelConfig], book: Pricebook) -> None:
    from proxy.cli.preflight import (
        StartupError,
        check_api_keys,
        check_journal_dir,
        unpriced_deployments,
    )
    from proxy.gateway.observability.telemetry import check_tracing_installed

    for warning in unpriced_deployments(book, models):
        log.warning("%s", warning)

    try:
        check_api_keys(models)
        if settings.tracing.enabled:
            check_tracing_installed()
        check_journal_dir(settings.storage)
    except ConfigError as exc:
        fail(str(exc), code=2)
    except StartupError as exc:
        fail(str(exc), code=exc.code)


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
