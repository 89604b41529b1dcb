"""Engine creation: SQLite in WAL mode (the embedded default) or PostgreSQL through psycopg 3."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlmodel import create_engine

from metering import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

if TYPE_CHECKING:
    from alembic.config import Config

# The newest migration in metering/migrations/versions (a test keeps the two equal). Alembic
# itself (11 MB of a ~110 MB worker) is imported only when a migration is to be run.
HEAD_REVISION = "0009"


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; ``postgresql://`` is taken to mean psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # A bounded connect timeout: during an outage the writer retries, it must not hang.
    return create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        # No server-side prepared statements: after five runs PostgreSQL switches them to a generic
        # plan, and for the writer's `id IN (...)` of a thousand ids that plan scanned the whole
        # events table (ingest fell from 10k to under 1k events/s past 50k events).
        connect_args={"connect_timeout": 5, "prepare_threshold": None},
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the proxy's reads (auth, admin queries) run while the writer commits; NORMAL
    # sync is durable against process crashes in WAL mode, which is what the journal protects.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


MIGRATIONS = Path(__file__).with_name("migrations")


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (Alembic)."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), revision)


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at (None before the first migration)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def head_revision() -> str:
    return HEAD_REVISION


class SchemaOutdated(RuntimeError):
    """A shared database's schema is behind this release: run ``tokenmeter db upgrade``."""


def prepare_schema(engine: Engine) -> None:
    """Migrate an embedded SQLite ledger; refuse a shared database that is not migrated (several
    replicas must not race to migrate it: that is ``tokenmeter db upgrade``'s job)."""
    current, head = schema_revision(engine), head_revision()
    if engine.dialect.name == "sqlite":
        if current != head:
            upgrade_schema(engine)
        return
    if current != head:
        raise SchemaOutdated(
            f"database schema is at revision {current}, this release needs {head}: "
            "run `tokenmeter db upgrade`"
        )
