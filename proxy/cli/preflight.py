"""Start-up checks: each failure is one line naming what to fix, and an exit code.

Exit 2 is the configuration (an unsupported database URL, a provider key variable that is not
set); exit 3 is a dependency that is not there (the database does not answer, the journal
directory cannot be created or written). Without them the same mistakes surfaced as tracebacks
from inside a worker's lifespan, or not at all (a request sent upstream without its key).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.config.settings import ModelConfig, StorageSettings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from cost.pricebook import Pricebook

CONFIG_ERROR = 2
UNAVAILABLE = 3
SUPPORTED_DATABASES = ("sqlite", "postgresql")


class StartupError(Exception):
    """Why the command cannot start, and its exit code."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


def connect_ledger(url: str, *, upgrade: bool = False) -> Engine:
    """The ledger's engine with its schema prepared (or, with ``upgrade``, migrated); StartupError
    when the URL is unsupported (exit 2) or the database does not answer (exit 3)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    from metering.store import create_db_engine, prepare_schema, upgrade_schema

    try:
        backend = make_url(url).get_backend_name()
        if backend not in SUPPORTED_DATABASES:
            raise NoSuchModuleError(backend)
        engine = create_db_engine(url)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise StartupError(
            f"storage.url: unsupported database URL {_safe(url)!r} ({_first_line(exc)}): use "
            "sqlite:///PATH or postgresql://USER@HOST:PORT/DB",
            code=CONFIG_ERROR,
        ) from exc
    try:
        (upgrade_schema if upgrade else prepare_schema)(engine)
    except OperationalError as exc:
        engine.dispose()
        raise StartupError(
            f"{_where(url)} (storage.url): {_first_line(exc.orig or exc)}", code=UNAVAILABLE
        ) from exc
    return engine


def check_journal_dir(storage: StorageSettings) -> None:
    """The journal directory exists (created if need be) and takes a file."""
    if not storage.journal:
        return
    path = Path(storage.journal_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise StartupError(
            f"cannot use the journal directory {str(path)!r} (storage.journal_dir): "
            f"{exc.strerror or exc}",
            code=UNAVAILABLE,
        ) from exc


def check_api_keys(models: list[ModelConfig]) -> None:
    """Every non-simulated deployment that names an ``api_key_env`` finds it set."""
    for i, model in enumerate(models):
        for j, dep in enumerate(model.deployments):
            if dep.simulated or not dep.api_key_env or os.environ.get(dep.api_key_env):
                continue
            name = dep.name or f"{dep.backend}/{dep.model}"
            raise StartupError(
                f"models.{i}.deployments.{j} ({model.name}: {name}): api_key_env "
                f"{dep.api_key_env} is not set; export it, or mark the deployment simulated",
                code=CONFIG_ERROR,
            )


def _where(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"cannot open the ledger database {parsed.database or ':memory:'}"
    return f"cannot reach the ledger database at {parsed.host or 'localhost'}:{parsed.port or 5432}"


def _safe(url: str) -> str:
    """The URL without its password (also when it does not parse as a URL)."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def unpriced_deployments(book: Pricebook, models: list[ModelConfig]) -> list[str]:
    """A warning for each hosted deployment the price map cannot price: a ``price_key`` that a
    newer price map no longer has, or a model it never had. Such requests are recorded with an
    unknown cost; that is worth a warning at start, not a refusal to start."""
    warnings = []
    for model in models:
        for dep in model.deployments:
            if dep.is_on_prem or book.list_price(dep.model, dep.backend) is not None:
                continue
            rule = book.rule_at(dep.model, dep.backend, time.time())
            if rule is not None and rule.price is not None:
                continue
            name = dep.name or f"{dep.backend}/{dep.model}"
            what = f"price key {dep.price_key!r}" if dep.price_key else f"model {dep.model!r}"
            source = book.table.source
            warnings.append(
                f"deployment {name} of {model.name}: {what} is not in the price map ({source}); "
                "its requests are recorded with an unknown cost until a price_key or a pricing "
                "rule prices it (see `tokenmeter prices`)"
            )
    return warnings
