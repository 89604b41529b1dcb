"""Database tables. The schema is the ledger's contract with finance: integers for tokens and
micro-dollars, so sums are exact on every engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, Table, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class UsageEventRecord(SQLModel, table=True):
    __tablename__ = "usage_events"
    __table_args__ = (Index("ix_usage_events_started_at", "started_at"),)

    id: str = Field(primary_key=True, max_length=26)
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    key_id: str = Field(max_length=64)
    user: str = Field(max_length=128)
    agent: str = Field(max_length=128)
    session: str = Field(max_length=128)
    use_case: str = Field(max_length=128)
    model: str = Field(max_length=256)
    backend: str = Field(max_length=32)
    deployment: str = Field(max_length=256)
    upstream_model: str = Field(max_length=256)
    on_prem: bool
    stream: bool
    status: str = Field(max_length=16)
    http_status: int
    input_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    cache_read_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    cache_write_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    cache_write_1h_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    output_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    reasoning_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    usage_source: str = Field(max_length=16)
    cost_micro_usd: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    latency_s: float
    ttft_s: float | None = None
    overhead_s: float
    request_id: str = Field(default="", max_length=26)
    attempt: int = 1
    team: str = Field(default="unknown", max_length=128)
    end_user: str = Field(default="unknown", max_length=128)
    user_source: str = Field(default="unknown", max_length=16)
    error_code: str = Field(default="", max_length=64)
    error_detail: str = Field(default="", max_length=128)  # events.MAX_ERROR_DETAIL


class QuarantineRecord(SQLModel, table=True):
    """An event the database refused on its data (not on connectivity), kept with the error so
    `tokenmeter ledger quarantine retry` can replay it after a fix. ``payload`` is the event's
    flat row as JSON text (ASCII-escaped: it holds whatever the database refused, a NUL
    included)."""

    __tablename__ = "ledger_quarantine"

    id: str = Field(primary_key=True, max_length=64)
    quarantined_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    error: str = Field(sa_column=Column(Text, nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    attempts: int = 1


class ApiKeyBase(SQLModel):
    user: str = Field(max_length=128)
    team: str | None = Field(default=None, max_length=128)
    use_case: str | None = Field(default=None, max_length=128)
    agent: str | None = Field(default=None, max_length=128)
    service: bool = Field(
        default=False,
        description="a service key may attribute usage to the end users it declares",
    )


class ApiKeyRecord(ApiKeyBase, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=32)
    key_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class ApiKeyPublic(ApiKeyBase):
    """What an admin may see of a key: never the key, never its hash."""

    id: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class BudgetRecord(SQLModel, table=True):
    """A spending limit set through the admin API (config budgets are not stored here)."""

    __tablename__ = "budgets"
    __table_args__ = (
        UniqueConstraint("scope", "subject", "period", name="uq_budgets_scope_subject_period"),
    )

    id: str = Field(primary_key=True, max_length=32)
    scope: str = Field(max_length=16)
    subject: str = Field(max_length=128)
    period: str = Field(max_length=8)
    limit_micro_usd: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    limit_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    soft_ratio: float
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class MetaRecord(SQLModel, table=True):
    """Small counters shared by replicas, e.g. the keys generation that invalidates auth caches."""

    __tablename__ = "tokenmeter_meta"

    name: str = Field(primary_key=True, max_length=64)
    value: int = Field(sa_column=Column(BigInteger, nullable=False))


ROLLUP_KEYS = (
    "hour",
    "use_case",
    "user",
    "agent",
    "key_id",
    "team",
    "end_user",
    "error_code",
    "model",
    "backend",
    "deployment",
    "on_prem",
)
ROLLUP_SUMS = (
    "requests",
    "errors",
    "unpriced_requests",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_micro_usd",
)


class UsageRollupRecord(SQLModel, table=True):
    """Hourly sums of usage events, updated in the transaction that inserts the events."""

    __tablename__ = "usage_rollups_hourly"

    hour: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    use_case: str = Field(primary_key=True, max_length=128)
    user: str = Field(primary_key=True, max_length=128)
    agent: str = Field(primary_key=True, max_length=128)
    key_id: str = Field(primary_key=True, max_length=64)
    team: str = Field(primary_key=True, max_length=128)
    end_user: str = Field(primary_key=True, max_length=128)
    error_code: str = Field(primary_key=True, max_length=64)
    model: str = Field(primary_key=True, max_length=256)
    backend: str = Field(primary_key=True, max_length=32)
    deployment: str = Field(primary_key=True, max_length=256)
    on_prem: bool = Field(primary_key=True)
    requests: int = Field(sa_column=Column(BigInteger, nullable=False))
    errors: int = Field(sa_column=Column(BigInteger, nullable=False))
    unpriced_requests: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))
    input_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    cache_read_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    cache_write_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    cache_write_1h_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    output_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    reasoning_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    cost_micro_usd: int = Field(sa_column=Column(BigInteger, nullable=False))


class UsageMinuteRecord(SQLModel, table=True):
    """Tokens per minute: the peak rates the TCO projection sizes hardware for."""

    __tablename__ = "usage_minutes"

    minute: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    requests: int = Field(sa_column=Column(BigInteger, nullable=False))
    input_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    output_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))


class UsageSessionMonthRecord(SQLModel, table=True):
    """Each session's totals per month (UTC), for the export's session views."""

    __tablename__ = "usage_sessions_monthly"

    month: str = Field(primary_key=True, max_length=7)
    session: str = Field(primary_key=True, max_length=128)
    requests: int = Field(sa_column=Column(BigInteger, nullable=False))
    total_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    cost_micro_usd: int = Field(sa_column=Column(BigInteger, nullable=False))
    user_min: str = Field(max_length=128)
    user_max: str = Field(max_length=128)
    agent_min: str = Field(max_length=128)
    agent_max: str = Field(max_length=128)
    use_case_min: str = Field(max_length=128)
    use_case_max: str = Field(max_length=128)
    first_started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


ROLLUPS: Table = UsageRollupRecord.__table__  # type: ignore[attr-defined]
# The hourly rollups summed per UTC day (``day`` at 00:00 UTC): what long windows read.
DAILY = Table(
    "usage_rollups_daily",
    SQLModel.metadata,
    Column("day", DateTime(timezone=True), primary_key=True),
    *(
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in ROLLUPS.columns
        if c.name != "hour"
    ),
)
EVENTS: Table = UsageEventRecord.__table__  # type: ignore[attr-defined]
EVENT_COLUMNS = [c.name for c in EVENTS.columns]
MINUTES: Table = UsageMinuteRecord.__table__  # type: ignore[attr-defined]
SESSIONS: Table = UsageSessionMonthRecord.__table__  # type: ignore[attr-defined]


_event_row = itemgetter(*EVENT_COLUMNS)
_EVENT_TIMES = [EVENT_COLUMNS.index("started_at"), EVENT_COLUMNS.index("finished_at")]
_EVENT_INTEGERS = [i for i, c in enumerate(EVENTS.columns) if isinstance(c.type, Integer)]


def event_values(row: Mapping[str, Any], time: Callable[[float], Any]) -> list[Any]:
    """A flat event row's values in ``EVENT_COLUMNS`` order, its Unix times through ``time``.

    TypeError for a count that is not an integer: SQLite's column affinity and PostgreSQL's
    ``COPY`` text would both read "12" into one, and a bool is not a count either."""
    values = list(_event_row(row))
    for i in _EVENT_TIMES:
        values[i] = time(values[i])
    for i in _EVENT_INTEGERS:
        v = values[i]
        if type(v) is not int and v is not None:
            raise TypeError(f"{EVENT_COLUMNS[i]} must be an integer, not {type(v).__name__}")
    return values
