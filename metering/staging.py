"""PostgreSQL's batch path: a batch is copied (``COPY``) into a staging table, then moved into
the ledger and summed into the rollups by one statement.

Why: one statement per row cost PostgreSQL a bind and execute round per event and per rollup
row, and summing the rollups in Python cost the writer more CPU than the database spent
(``bench/ledger_ingest.py``: 59 µs of writer CPU per event, 27 in the database). ``COPY``
streams the batch; then ``INSERT ... ON CONFLICT (id) DO NOTHING RETURNING`` moves the events
and the same statement's later parts group only the rows it returned into the hourly, daily,
minute and session rollups (``metering.rollups``, which SQLite's path runs too), so a replayed
batch changes nothing.

The staging table is temporary (private to the connection), created on a connection's first
batch from our table definition (not from the database's, so a later migration cannot change
its shape under a pooled connection) and emptied at every commit (``ON COMMIT DELETE ROWS``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Column, Connection, MetaData, Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from metering.rollups import rollup_statements
from metering.tables import EVENT_COLUMNS, EVENTS, event_values

_DIALECT = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
_STAGED = "tokenmeter_staging"  # the connection's info key: its staging table exists


def copy_rows(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert flat event rows (unique ids) and their rollups in ``conn``'s transaction; returns
    how many were new."""
    import psycopg  # here: a SQLite ledger never pays its import (~170 ms of every start)

    sql = _statements()
    info = conn.connection.info
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if not info.get(_STAGED):
            cur.execute(sql.create)
            info[_STAGED] = True
        _copy(cur, sql.copy, (event_values(r, _utc) for r in rows))
        row = cur.execute(sql.move).fetchone()
        return int(row[0]) if row else 0
    except psycopg.Error as exc:
        info.pop(_STAGED, None)  # a rolled-back first batch takes its CREATE with it
        # as SQLAlchemy would have raised it, so callers tell data errors from outages
        raise sa_exc.DBAPIError.instance(
            None, None, exc, psycopg.Error, dialect=conn.dialect
        ) from exc
    except BaseException:
        info.pop(_STAGED, None)
        raise
    finally:
        cur.close()


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _copy(cur: Any, statement: str, values: Iterable[Sequence[Any]]) -> None:
    with cur.copy(statement) as copy:
        for v in values:
            copy.write_row(v)


class _Statements:
    def __init__(self) -> None:
        stage = Table(
            "staging_usage_events",
            MetaData(),
            *(Column(c.name, c.type) for c in EVENTS.columns),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DELETE ROWS",
        )
        self.create = str(CreateTable(stage, if_not_exists=True).compile(dialect=_DIALECT))
        self.copy = f"COPY {stage.name} ({_names(EVENT_COLUMNS)}) FROM STDIN"
        self.move = _move_sql(stage.name)


def _q(name: str) -> str:
    return str(_DIALECT.identifier_preparer.quote(name))


def _names(names: Iterable[str]) -> str:
    return ", ".join(_q(n) for n in names)


def _move_sql(stage: str) -> str:
    rollups = rollup_statements("new", pg=True)
    return (
        f"WITH new AS (INSERT INTO {_q(EVENTS.name)} ({_names(EVENT_COLUMNS)}) "
        f"SELECT {_names(EVENT_COLUMNS)} FROM {stage} "
        f"ON CONFLICT (id) DO NOTHING RETURNING *), "
        + ", ".join(f"{name} AS ({sql})" for name, sql in rollups.items())
        + " SELECT COUNT(*) FROM new"
    )


@cache
def _statements() -> _Statements:
    return _Statements()
