"""PostgreSQL's batch path: a batch is copied (``COPY``) into a staging table, then moved into
the ledger and summed into the rollups by one statement.

Why: one statement per row cost PostgreSQL a bind and execute round per event and per rollup
row, and summing the rollups in Python cost the writer more CPU than the database spent
(``bench/ledger_ingest.py``: 59 µs of writer CPU per event, 27 in the database). ``COPY``
streams the batch; then ``INSERT ... ON CONFLICT (id) DO NOTHING RETURNING`` moves the events
and the same statement's later parts group only the rows it returned into the hourly, daily,
minute and session rollups, so a replayed batch changes nothing. Rollup rows go in sorted by key, so
concurrent writers lock them in one order. The sums follow ``metering.rollups.summarize``
(hours, minutes and months in UTC; label bounds in code point order, ``COLLATE "C"``).

The staging table is temporary (private to the connection), created on a connection's first
batch from our table definition (not from the database's, so a later migration cannot change
its shape under a pooled connection) and emptied at every commit (``ON COMMIT DELETE ROWS``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

import psycopg
from sqlalchemy import BigInteger, Column, Connection, Integer, MetaData, Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from metering.rollups import LABELS
from metering.tables import DAILY, EVENTS, MINUTES, ROLLUP_KEYS, ROLLUP_SUMS, ROLLUPS, SESSIONS

_DIALECT = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
_STAGED = "tokenmeter_staging"  # the connection's info key: its staging table exists
_EVENT_COLUMNS = [c.name for c in EVENTS.columns]
_EVENT_TIMES = frozenset({"started_at", "finished_at"})
# COPY's text format would read "12" into a count; the per-row path refused it, so do we.
_INTEGERS = frozenset(c.name for c in EVENTS.columns if isinstance(c.type, BigInteger | Integer))


def copy_rows(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert flat event rows (unique ids) and their rollups in ``conn``'s transaction; returns
    how many were new."""
    sql = _statements()
    info = conn.connection.info
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if not info.get(_STAGED):
            cur.execute(sql.create)
            info[_STAGED] = True
        _copy(cur, sql.copy, (_event_values(r) for r in rows))
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


def _event_values(row: Mapping[str, Any]) -> list[Any]:
    values = []
    for c in _EVENT_COLUMNS:
        v = row[c]
        if c in _EVENT_TIMES:
            v = datetime.fromtimestamp(v, UTC)
        elif c in _INTEGERS and v is not None and type(v) is not int:
            raise TypeError(f"{c} must be an integer, not {type(v).__name__}")
        values.append(v)
    return values


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
        self.copy = f"COPY {stage.name} ({_names(_EVENT_COLUMNS)}) FROM STDIN"
        self.move = _move_sql(stage.name)


def _q(name: str) -> str:
    return str(_DIALECT.identifier_preparer.quote(name))


def _names(names: Iterable[str]) -> str:
    return ", ".join(_q(n) for n in names)


def _move_sql(stage: str) -> str:
    hour = "date_trunc('hour', started_at, 'UTC')"
    minute = "date_trunc('minute', started_at, 'UTC')"
    day = "date_trunc('day', started_at, 'UTC')"
    month = "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM')"
    hourly_keys = [hour, *(_q(k) for k in ROLLUP_KEYS[1:])]
    hourly_sums = [
        "COUNT(*)",
        "COUNT(*) FILTER (WHERE status <> 'ok')",
        "COUNT(*) FILTER (WHERE cost_micro_usd IS NULL"
        " AND (input_tokens <> 0 OR output_tokens <> 0))",
        *(f"COALESCE(SUM({_q(c)}), 0)" for c in ROLLUP_SUMS[3:]),
    ]
    minute_sums = ["COUNT(*)", "SUM(input_tokens)", "SUM(output_tokens)"]
    session_values = [
        month,
        _q("session"),
        "COUNT(*)",
        "SUM(input_tokens + output_tokens)",
        "COALESCE(SUM(cost_micro_usd), 0)",
        *(f'{f}({_q(c)} COLLATE "C")' for c in LABELS for f in ("MIN", "MAX")),
        "MIN(started_at)",
        "MAX(started_at)",
    ]
    return (
        f"WITH new AS (INSERT INTO {_q(EVENTS.name)} ({_names(_EVENT_COLUMNS)}) "
        f"SELECT {_names(_EVENT_COLUMNS)} FROM {stage} "
        f"ON CONFLICT (id) DO NOTHING RETURNING *), "
        f"hourly AS ({_rollup(ROLLUPS, hourly_keys, hourly_sums, len(ROLLUP_KEYS))}), "
        f"daily AS ({_rollup(DAILY, [day, *hourly_keys[1:]], hourly_sums, len(ROLLUP_KEYS))}), "
        f"minutes AS ({_rollup(MINUTES, [minute], minute_sums, 1)}), "
        f"sessions AS ({_rollup(SESSIONS, session_values[:2], session_values[2:], 2)}) "
        "SELECT COUNT(*) FROM new"
    )


def _rollup(table: Table, keys: list[str], values: list[str], n_keys: int) -> str:
    """INSERT INTO ``table`` the rows of ``new`` grouped by ``keys``, merged into stored rows."""
    columns = [c.name for c in table.columns]
    order = ", ".join(str(i + 1) for i in range(n_keys))
    merge = _merges(table, columns[n_keys:])
    return (
        f"INSERT INTO {_q(table.name)} ({_names(columns)}) "
        f"SELECT {', '.join([*keys, *values])} FROM new GROUP BY {order} ORDER BY {order} "
        f"ON CONFLICT ({_names(columns[:n_keys])}) DO UPDATE SET {merge}"
    )


def _merges(table: Table, columns: list[str]) -> str:
    """As ``metering.upserts``: sums add up, first/last and label bounds widen."""
    t = _q(table.name)
    out = []
    for c in columns:
        old, new = f"{t}.{_q(c)}", f"excluded.{_q(c)}"
        if c.endswith("_min") or c == "first_started_at":
            out.append(f"{_q(c)} = LEAST({old}, {new})")
        elif c.endswith("_max") or c == "last_started_at":
            out.append(f"{_q(c)} = GREATEST({old}, {new})")
        else:
            out.append(f"{_q(c)} = {old} + {new}")
    return ", ".join(out)


@cache
def _statements() -> _Statements:
    return _Statements()
