"""How a rollup row meets the row already stored for its key: sums add up, first/last times and
label bounds widen. Shared by the per-row (SQLite) and staged (PostgreSQL) batch paths."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, func

from metering.rollups import LABELS, SESSION_SUMS
from metering.tables import SESSIONS

SESSION_KEY = ("month", "session")


def on_conflict_add(stmt: Any, table: Table, keys: list[str], sums: tuple[str, ...]) -> Any:
    """``stmt`` (an INSERT into ``table``) adding ``sums`` into the row of an existing key."""
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={c: table.c[c] + stmt.excluded[c] for c in sums}
    )


def on_conflict_widen(stmt: Any, *, pg: bool) -> Any:
    """``stmt`` (an INSERT into the session rollup) merging into the session's existing row."""
    low, high = (func.least, func.greatest) if pg else (func.min, func.max)
    t, new = SESSIONS.c, stmt.excluded
    updates: dict[str, Any] = {c: t[c] + new[c] for c in SESSION_SUMS}
    updates["first_started_at"] = low(t.first_started_at, new.first_started_at)
    updates["last_started_at"] = high(t.last_started_at, new.last_started_at)
    for c in LABELS:
        updates[f"{c}_min"] = low(t[f"{c}_min"], new[f"{c}_min"])
        updates[f"{c}_max"] = high(t[f"{c}_max"], new[f"{c}_max"])
    return stmt.on_conflict_do_update(index_elements=list(SESSION_KEY), set_=updates)
