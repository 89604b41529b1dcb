"""Events the database refuses on their data: isolated from their batch, kept, never retried
blindly.

One row the database cannot take (a NUL in a string on PostgreSQL, a count past 64 bits, a
``true`` where a number goes) would otherwise fail its whole batch forever and stop all metering.
``insert_isolating`` bisects a batch that fails on data, commits the rows that go in, and hands
each bad one to the quarantine: a line in ``quarantine.jsonl`` beside the journal (appended and
synced first, so nothing is lost if the database then refuses the quarantine row too) and a row
of ``ledger_quarantine`` with the error. A failure that is not about the data (the database
down, a schema behind the code) is raised: that batch waits, whole, in the journal.

``tokenmeter ledger quarantine list|retry`` reads the table and replays it after a fix.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, delete, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from metering.events import new_event_id
from metering.ingest import insert_rows
from metering.tables import QuarantineRecord

log = logging.getLogger(__name__)

QUARANTINE: Table = QuarantineRecord.__table__  # type: ignore[attr-defined]
QUARANTINE_FILE = "quarantine.jsonl"
_MAX_ERROR_CHARS = 2000
# PostgreSQL SQLSTATEs about one value, not the database: class 22 (data exception), 23
# (integrity), 42804 (datatype mismatch), 42846 (cannot coerce, e.g. boolean to bigint).
_DATA_SQLSTATES = ("22", "23", "42804", "42846")
_DATA_PYTHON = (TypeError, ValueError, OverflowError, KeyError, AttributeError, UnicodeError)


def is_data_error(exc: BaseException) -> bool:
    """True when ``exc`` is about the rows of a batch, so isolating them can help."""
    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or ""
        return bool(state) and state.startswith(_DATA_SQLSTATES)
    if isinstance(exc, sa_exc.StatementError):  # raised while binding a value, before the driver
        return isinstance(exc.orig, _DATA_PYTHON)
    return isinstance(exc, _DATA_PYTHON)


@dataclass(frozen=True, slots=True)
class QuarantinedEvent:
    id: str
    quarantined_at: datetime
    error: str
    attempts: int
    row: dict[str, Any] | None  # None: the payload is not an event row (an unreadable line)
    raw: str


class Quarantine:
    """Where refused rows go: the file beside the journal (if there is one) and the table."""

    def __init__(self, engine: Engine, directory: Path | None) -> None:
        self._engine = engine
        self.path = directory / QUARANTINE_FILE if directory is not None else None
        self.on_quarantined: Callable[[int], None] | None = None  # the metric, wired by the app

    def put(self, row: Mapping[str, Any], error: str) -> None:
        """Keep ``row`` with ``error``; raises if neither the file nor the table can take it."""
        payload = encode_payload(row)
        event_id = row.get("id")
        key = event_id if isinstance(event_id, str) and 0 < len(event_id) <= 64 else None
        self.put_raw(key or "raw-" + new_event_id(), payload, error)

    def put_raw(self, key: str, payload: str, error: str) -> None:
        error = _printable(error)[:_MAX_ERROR_CHARS]
        at = datetime.now(UTC)
        if self.path is not None:
            line = json.dumps({"id": key, "at": at.isoformat(), "error": error, "payload": payload})
            _append_synced(self.path, line.encode() + b"\n")
        _insert(self._engine, {"id": key, "quarantined_at": at, "error": error, "payload": payload})
        log.error("ledger: event %s quarantined: %s", key, error)
        if self.on_quarantined is not None:
            self.on_quarantined(1)


def insert_isolating(
    engine: Engine, rows: Sequence[Mapping[str, Any]], quarantine: Quarantine
) -> int:
    """``insert_rows``, except that rows the database refuses on their data are bisected out
    and quarantined; returns how many were new. Other failures are raised, nothing committed
    for the failing half (the journal keeps it)."""
    try:
        return insert_rows(engine, rows)
    except Exception as exc:
        if not is_data_error(exc):
            raise
        if len(rows) == 1:
            quarantine.put(rows[0], describe(exc))
            return 0
    mid = len(rows) // 2
    return insert_isolating(engine, rows[:mid], quarantine) + insert_isolating(
        engine, rows[mid:], quarantine
    )


def describe(exc: BaseException) -> str:
    """The error without SQLAlchemy's echo of the statement and every parameter."""
    orig = exc.orig if isinstance(exc, sa_exc.StatementError) and exc.orig is not None else exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first}"


def encode_payload(row: Mapping[str, Any]) -> str:
    # stdlib json: takes any int, escapes NULs and lone surrogates, so the text always stores
    return json.dumps(dict(row), default=repr, ensure_ascii=True)


def list_quarantined(engine: Engine, *, limit: int | None = None) -> list[QuarantinedEvent]:
    stmt = select(QUARANTINE).order_by(QUARANTINE.c.quarantined_at, QUARANTINE.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        return [_entry(dict(r._mapping)) for r in conn.execute(stmt)]


def retry_quarantined(engine: Engine, *, ids: Sequence[str] = ()) -> tuple[int, int]:
    """Replay quarantined events (all, or ``ids``) one by one: each that the database now takes
    is inserted (idempotently) and leaves the quarantine; the others stay, with the new error.
    Returns (replayed, still quarantined)."""
    replayed = failed = 0
    for entry in list_quarantined(engine):
        if ids and entry.id not in ids:
            continue
        try:
            if entry.row is None:
                raise ValueError("not an event row")
            insert_rows(engine, [entry.row])
        except Exception as exc:
            if not is_data_error(exc):
                raise
            _update_error(engine, entry.id, describe(exc))
            failed += 1
            continue
        with engine.begin() as conn:
            conn.execute(delete(QUARANTINE).where(QUARANTINE.c.id == entry.id))
        replayed += 1
    return replayed, failed


def _entry(m: Mapping[str, Any]) -> QuarantinedEvent:
    try:
        row = json.loads(m["payload"])
    except ValueError:
        row = None
    at = m["quarantined_at"]
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return QuarantinedEvent(
        id=m["id"],
        quarantined_at=at,
        error=m["error"],
        attempts=m["attempts"],
        row=row if isinstance(row, dict) else None,
        raw=m["payload"],
    )


def _insert(engine: Engine, values: dict[str, Any]) -> None:
    dml = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dml.insert(QUARANTINE).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={"error": stmt.excluded.error, "attempts": QUARANTINE.c.attempts + 1},
    )
    with engine.begin() as conn:
        conn.execute(stmt)


def _update_error(engine: Engine, key: str, error: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(QUARANTINE)
            .where(QUARANTINE.c.id == key)
            .values(error=_printable(error)[:_MAX_ERROR_CHARS], attempts=QUARANTINE.c.attempts + 1)
        )


def _append_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
