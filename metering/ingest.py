"""One batch of events into the database: the events and their rollups in one transaction.

On PostgreSQL the batch is copied into a staging table and moved on by one statement
(``metering.staging``). On SQLite the events go to the driver's ``executemany`` as plain tuples in
column order, from one statement compiled once; the database then sums the rollups from the rows
that insert added (``metering.rollups``), found by their rowids. SQLAlchemy's per-row parameter
processing once cost ~90 µs per event, dict parameters and rollups summed in Python ~40 µs; a
360-event flush now costs ~25 µs per event from the journal's read to the commit, of which
SQLite's insert and rollup statements are ~15 (docs/performance.md, evening of 2026-12-02).
The values are bound as SQLAlchemy's own types would bind them, so every other reader (ORM,
Core, alembic, Grafana's SQL) sees the same columns.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from metering.rollups import rollup_statements
from metering.staging import copy_rows
from metering.tables import EVENT_COLUMNS, event_values
from metering.tables import EVENTS as EVENTS
from metering.tables import MINUTES as MINUTES
from metering.tables import ROLLUPS as ROLLUPS
from metering.tables import SESSIONS as SESSIONS


class _Statements:
    """The batch's SQL for SQLite."""

    def __init__(self) -> None:
        insert = sqlite.insert(EVENTS).on_conflict_do_nothing(index_elements=["id"])
        dialect = SQLiteDialect_pysqlite(paramstyle="qmark")
        self.events = str(insert.compile(dialect=dialect, column_keys=EVENT_COLUMNS))
        # the rows this batch's insert added: rowids are given in order (one more than the
        # largest), and the transaction holds the database's write lock from that insert on
        new = "usage_events WHERE rowid > ? AND rowid <= ?"
        self.rollups = list(rollup_statements(new, pg=False).values())


def _sqlite_datetime(t: float) -> str:
    """Unix time in SQLAlchemy's SQLite DATETIME storage format (UTC, always microseconds),
    rounded as ``datetime.fromtimestamp`` rounds (half to even), the second's text cached: a
    batch's events mostly share their second (a third of the ledger's CPU per event, before)."""
    frac, whole = math.modf(t)
    micro = round(frac * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    elif micro < 0:  # before 1970
        whole, micro = whole - 1, micro + 1_000_000
    return f"{_second(int(whole))}.{micro:06d}"


@lru_cache(maxsize=64)
def _second(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


@cache
def _statements() -> _Statements:
    return _Statements()


def insert_rows(engine: Engine, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert flat event rows and their rollups in one transaction; returns how many were new.

    Ids already in the table are skipped and left out of the rollups, so a replay changes
    nothing. (Only one writer ever holds a journal segment, so no other transaction inserts the
    same ids concurrently; ``ON CONFLICT DO NOTHING`` guards the events table regardless.)
    """
    if not rows:
        return 0
    unique = list({r["id"]: r for r in rows}.values())
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            return copy_rows(conn, unique)
        return _insert_sqlite(conn, [tuple(event_values(r, _sqlite_datetime)) for r in unique])


def _insert_sqlite(conn: Connection, values: list[tuple[Any, ...]]) -> int:
    """On the driver's cursor: SQLAlchemy's result set-up cost more than these statements."""
    sql = _statements()
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:  # the driver begins the transaction before the insert
        cur.executemany(sql.events, values)
        new = cur.rowcount
        if new:
            last = cur.execute("SELECT last_insert_rowid()").fetchone()[0]
            for statement in sql.rollups:
                cur.execute(statement, (last - new, last))
        return int(new)
    except sqlite3.Error as exc:  # as SQLAlchemy would have raised it: data errors told apart
        raise sa_exc.DBAPIError.instance(
            None, None, exc, sqlite3.Error, dialect=conn.dialect
        ) from exc
    finally:
        cur.close()
