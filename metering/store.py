"""Engine creation: SQLite in WAL mode (the embedded default) or PostgreSQL through psycopg 3."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel, create_engine

from metering import tables  # noqa: F401  (registers the tables on SQLModel.metadata)


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; ``postgresql://`` is taken to mean psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the proxy's reads (auth, admin queries) run while the writer commits; NORMAL
    # sync is durable against process crashes in WAL mode, which is what the journal protects.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def init_schema(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)
