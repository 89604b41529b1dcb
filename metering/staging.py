"""PostgreSQL's batch path: a batch is copied (``COPY``) into staging tables, then moved into
the ledger with one ``INSERT ... SELECT`` per table.

Why: one statement per row cost PostgreSQL a bind and execute round per event and per rollup
row; ``COPY`` streams the whole batch and each table takes it in one statement. The events go
in first, ``ON CONFLICT (id) DO NOTHING RETURNING id``: only the events that were new are
summed into the rollups, so a replayed batch changes nothing. Rollup rows go in sorted by key,
so concurrent writers lock them in one order.

The staging tables are temporary (private to the connection), created on a connection's first
batch from our table definitions (not from the database's, so a later migration cannot change
their shape under a pooled connection) and emptied at every commit (``ON COMMIT DELETE ROWS``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import psycopg
from sqlalchemy import Column, Connection, MetaData, Table, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from metering.rollups import MINUTE_SUMS, summarize
from metering.tables import EVENTS, MINUTES, ROLLUP_KEYS, ROLLUP_SUMS, ROLLUPS, SESSIONS
from metering.upserts import SESSION_KEY, on_conflict_add, on_conflict_widen

_DIALECT = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
_STAGED = "tokenmeter_staging"  # the connection's info key: its staging tables exist
_EVENT_COLUMNS = [c.name for c in EVENTS.columns]
_EVENT_TIMES = frozenset({"started_at", "finished_at"})


def copy_rows(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert flat event rows (unique ids) and their rollups in ``conn``'s transaction; returns
    how many were new."""
    sql = _statements()
    info = conn.connection.info
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if not info.get(_STAGED):
            for ddl in sql.create:
                cur.execute(ddl)
            info[_STAGED] = True
        _copy(cur, sql.events.copy, (_event_values(r) for r in rows))
        new_ids = {r[0] for r in cur.execute(sql.events.move)}
        if not new_ids:
            return 0
        rollups = summarize(r for r in rows if r["id"] in new_ids)
        for step, part in zip(
            sql.rollups, (rollups.hourly, rollups.minutes, rollups.sessions), strict=True
        ):
            _copy(cur, step.copy, ([r[c] for c in step.columns] for r in part))
            cur.execute(step.move)
        return len(new_ids)
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
    return [
        datetime.fromtimestamp(row[c], UTC) if c in _EVENT_TIMES else row[c] for c in _EVENT_COLUMNS
    ]


def _copy(cur: Any, statement: str, values: Iterable[Sequence[Any]]) -> None:
    with cur.copy(statement) as copy:
        for v in values:
            copy.write_row(v)


@dataclass(frozen=True, slots=True)
class _Step:
    """One table's part of a batch: COPY its rows into the stage, then move them on."""

    columns: list[str]
    copy: str
    move: str


class _Statements:
    def __init__(self) -> None:
        stages = {t.name: _stage(t) for t in (EVENTS, ROLLUPS, MINUTES, SESSIONS)}
        self.create = [
            str(CreateTable(s, if_not_exists=True).compile(dialect=_DIALECT))
            for s in stages.values()
        ]
        moved = postgresql.insert(EVENTS).from_select(_EVENT_COLUMNS, stages[EVENTS.name])
        self.events = _Step(
            _EVENT_COLUMNS,
            _copy_sql(stages[EVENTS.name]),
            _compiled(moved.on_conflict_do_nothing(index_elements=["id"]).returning(EVENTS.c.id)),
        )
        hourly, minutes, sessions = (
            _sorted_insert(t, stages[t.name], keys)
            for t, keys in ((ROLLUPS, ROLLUP_KEYS), (MINUTES, ("minute",)), (SESSIONS, SESSION_KEY))
        )
        self.rollups = [
            _rollup_step(stages, on_conflict_add(hourly, ROLLUPS, list(ROLLUP_KEYS), ROLLUP_SUMS)),
            _rollup_step(stages, on_conflict_add(minutes, MINUTES, ["minute"], MINUTE_SUMS)),
            _rollup_step(stages, on_conflict_widen(sessions, pg=True)),
        ]


def _sorted_insert(table: Table, stage: Table, keys: Sequence[str]) -> Any:
    names = [c.name for c in table.columns]
    rows = select(*(stage.c[n] for n in names)).order_by(*(stage.c[k] for k in keys))
    return postgresql.insert(table).from_select(names, rows)


def _rollup_step(stages: Mapping[str, Table], stmt: Any) -> _Step:
    stage = stages[stmt.table.name]
    return _Step([c.name for c in stage.columns], _copy_sql(stage), _compiled(stmt))


def _stage(table: Table) -> Table:
    """A temporary twin of ``table``: its columns and types, no keys, emptied at commit."""
    return Table(
        f"staging_{table.name}",
        MetaData(),
        *(Column(c.name, c.type) for c in table.columns),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DELETE ROWS",
    )


def _copy_sql(stage: Table) -> str:
    columns = ", ".join(_DIALECT.identifier_preparer.quote(c.name) for c in stage.columns)
    return f"COPY {stage.name} ({columns}) FROM STDIN"


def _compiled(stmt: Any) -> str:
    return str(stmt.compile(dialect=_DIALECT))


@cache
def _statements() -> _Statements:
    return _Statements()
