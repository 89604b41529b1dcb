"""What every command shares: the --config option, settings, the ledger, failing clearly."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from proxy.config.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from metering.live_tco import TcoInputs

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file", envvar="TOKENMETER_CONFIG")
]


def fail(message: str, *, code: int) -> NoReturn:
    """One line on stderr and the exit code: 2 for bad input or configuration, 1 otherwise."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        fail(str(exc), code=2)


def ledger_name(url: str) -> str:
    """The ledger as a user recognises it: a SQLite file's full path, or the URL without its
    password."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return f"sqlite:///{Path(parsed.database).resolve()}"
    return parsed.render_as_string(hide_password=True)


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite ledger URL; None for another engine (or a URL the preflight refuses)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def open_ledger(settings: Settings, *, upgrade: bool = False, create: bool = True) -> Engine:
    """The ledger's engine, its schema brought up to date (or refused when outdated); one line
    and exit 2 or 3 when the database URL is unsupported or the database does not answer.

    With ``create=False`` a SQLite ledger file that does not exist is refused instead of made:
    the commands that only read (export, reconcile) must not leave an empty database behind in
    whatever folder they were run from.
    """
    from metering.store import SchemaOutdated
    from proxy.cli.preflight import StartupError, connect_ledger

    if not create and (path := _sqlite_file(settings.storage.url)) and not path.is_file():
        fail(
            f"no ledger at {ledger_name(settings.storage.url)}: point storage.url at it "
            "(--config, or TOKENMETER_STORAGE__URL)",
            code=2,
        )
    try:
        return connect_ledger(settings.storage.url, upgrade=upgrade)
    except SchemaOutdated as exc:
        fail(str(exc), code=2)
    except StartupError as exc:
        fail(str(exc), code=exc.code)


def tco_inputs(settings: Settings) -> TcoInputs:
    """The configured TCO plan and hosted option, or a clear exit naming the bad key."""
    from proxy.config.catalogue import effective_models
    from proxy.config.pricebook import build_pricebook
    from proxy.gateway.projector import tco_inputs as configured_inputs

    models = effective_models(settings)
    book = build_pricebook(settings, models)
    try:
        return configured_inputs(settings.tco, book, models)
    except ConfigError as exc:
        fail(str(exc), code=2)


def as_utc(value: datetime | None) -> datetime | None:
    """A naive time from the command line is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, right: Sequence[int] = ()
) -> str:
    """Columns as wide as their widest cell, two spaces apart (``right``: right-aligned column
    indices); the last column is not padded, so a long one wraps in the terminal alone."""
    body = [list(map(str, r)) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=False)]
    lines = []
    for cells in [list(header), *body]:
        out = [
            c.rjust(w) if i in right else (c if i == len(cells) - 1 else c.ljust(w))
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        ]
        lines.append("  ".join(out).rstrip())
    return "\n".join(lines)


def wrap(text: str, *, indent: str = "") -> str:
    """A line of prose wrapped at 80 columns, continuation lines indented by ``indent``."""
    import textwrap

    return textwrap.fill(text, 80, subsequent_indent=indent + "  ", initial_indent=indent)
