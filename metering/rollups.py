"""Rollups kept in the events' transaction, summed by the database from a batch's new events.

- hourly: sums per hour, use case, user, agent, key, team, end user, error code, model, backend,
  deployment and on_prem; daily: the same per UTC day (what windows of weeks and months read);
- per minute: requests and input/output tokens (the peaks the TCO projection sizes for);
- per session and UTC month: totals, first/last start, min/max of the labels (export views).

Both engines run the statements built here, ``INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO
UPDATE`` over the events the batch inserted and nothing else (PostgreSQL: what its insert
returned; SQLite: the batch's range of rowids), so a replayed batch, none of whose events is new,
adds nothing. Where a key's row exists, sums add up and first/last times and label bounds widen.
Hours, days, minutes and months are UTC: PostgreSQL truncates its timestamps, SQLite cuts the
text it stores (SQLAlchemy's ``YYYY-MM-DD HH:MM:SS.ffffff``, UTC). Label bounds compare code
points (``COLLATE "C"``; SQLite's default, bytes of UTF-8, is the same order). Rows go in sorted
by key, so concurrent PostgreSQL writers lock them in one order (no deadlocks between replicas).

Summing in the database, not in Python, is what keeps the ledger's CPU per event low:
``bench/ledger_ingest.py`` and the c=1 tail in docs/performance.md.
"""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from metering.tables import DAILY, MINUTES, ROLLUP_KEYS, ROLLUP_SUMS, ROLLUPS, SESSIONS

LABELS = ("user", "agent", "use_case")

_PG = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
_SQLITE = sqlite.pysqlite.dialect()


def rollup_statements(source: str, *, pg: bool) -> dict[str, str]:
    """The four rollup statements (hourly, daily, minutes, sessions) over the events of
    ``source``, the rest of a ``FROM`` clause: a table or CTE, with its ``WHERE`` if any."""
    preparer = (_PG if pg else _SQLITE).identifier_preparer

    def q(name: str) -> str:
        return str(preparer.quote(name))

    if pg:
        hour = "date_trunc('hour', started_at, 'UTC')"
        minute = "date_trunc('minute', started_at, 'UTC')"
        day = "date_trunc('day', started_at, 'UTC')"
        month = "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM')"
        collate, low, high = ' COLLATE "C"', "LEAST", "GREATEST"
    else:  # the stored text 'YYYY-MM-DD HH:MM:SS.ffffff', cut and completed
        hour = "substr(started_at, 1, 13) || ':00:00.000000'"
        minute = "substr(started_at, 1, 16) || ':00.000000'"
        day = "substr(started_at, 1, 10) || ' 00:00:00.000000'"
        month = "substr(started_at, 1, 7)"
        collate, low, high = "", "min", "max"
    labels = [q(k) for k in ROLLUP_KEYS[1:]]
    sums = [
        "COUNT(*)",
        "COUNT(*) FILTER (WHERE status <> 'ok')",
        # unpriced: spent tokens with no price known (a request that spent none cost nothing)
        "COUNT(*) FILTER (WHERE cost_micro_usd IS NULL"
        " AND (input_tokens <> 0 OR output_tokens <> 0))",
        *(f"COALESCE(SUM({q(c)}), 0)" for c in ROLLUP_SUMS[3:]),
    ]
    session = [
        month,
        q("session"),
        "COUNT(*)",
        "SUM(input_tokens + output_tokens)",
        "COALESCE(SUM(cost_micro_usd), 0)",
        *(f"{f}({q(c)}{collate})" for c in LABELS for f in ("MIN", "MAX")),
        "MIN(started_at)",
        "MAX(started_at)",
    ]
    minutes = [minute, "COUNT(*)", "SUM(input_tokens)", "SUM(output_tokens)"]

    def rollup(table: Table, values: list[str], n_keys: int) -> str:
        columns = [c.name for c in table.columns]
        order = ", ".join(str(i + 1) for i in range(n_keys))
        merges = []
        for c in columns[n_keys:]:
            old, new = f"{q(table.name)}.{q(c)}", f"excluded.{q(c)}"
            if c.endswith("_min") or c == "first_started_at":
                merges.append(f"{q(c)} = {low}({old}, {new})")
            elif c.endswith("_max") or c == "last_started_at":
                merges.append(f"{q(c)} = {high}({old}, {new})")
            else:
                merges.append(f"{q(c)} = {old} + {new}")
        return (
            f"INSERT INTO {q(table.name)} ({', '.join(map(q, columns))}) "
            f"SELECT {', '.join(values)} FROM {source} GROUP BY {order} ORDER BY {order} "
            f"ON CONFLICT ({', '.join(map(q, columns[:n_keys]))}) DO UPDATE SET {', '.join(merges)}"
        )

    n = len(ROLLUP_KEYS)
    return {
        "hourly": rollup(ROLLUPS, [hour, *labels, *sums], n),
        "daily": rollup(DAILY, [day, *labels, *sums], n),
        "minutes": rollup(MINUTES, minutes, 1),
        "sessions": rollup(SESSIONS, session, 2),
    }
