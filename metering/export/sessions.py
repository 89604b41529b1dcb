"""The export's session views: the one part read from raw events (rollups carry no session).

Read from the per-session monthly rollup; only the per-session token totals (an integer array)
and the top sessions are kept in memory, so memory grows with the number of sessions, not requests.
"""

from __future__ import annotations

import heapq
import math
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from sqlalchemy import Engine, Table, select

from metering.export.views import Column, View, share, usd
from metering.tables import UsageSessionMonthRecord

TOP_SESSIONS = 50
NO_SESSION = "unknown"  # what the gateway records when a request names no session
_SESSIONS: Table = UsageSessionMonthRecord.__table__  # type: ignore[attr-defined]


@dataclass(slots=True)
class EventTotals:
    """Requests, tokens and micro-dollars of the month as counted from the raw events."""

    requests: int = 0
    total_tokens: int = 0
    cost_micro_usd: int = 0


@dataclass(slots=True)
class _Ranked:
    tokens: int
    session: str
    row: tuple[Any, ...]

    def __lt__(self, other: _Ranked) -> bool:  # a heap of the largest; ties: smaller name wins
        return (self.tokens, other.session) < (other.tokens, self.session)


@dataclass(slots=True)
class SessionStats:
    """What the session views are made of."""

    tokens: array[int] = field(default_factory=lambda: array("q"))
    requests: int = 0
    cost_micro_usd: int = 0
    without_session: tuple[int, int] = (0, 0)  # requests, tokens
    top: list[_Ranked] = field(default_factory=list)
    events: EventTotals = field(default_factory=EventTotals)


def read_sessions(engine: Engine, *, start: datetime, end: datetime) -> SessionStats:
    """Group the events started in [start, end) by session.

    Every session's totals are read (four integers and the name: a month of 10M events has
    ~800k sessions, and each timestamp read costs more than the rest of its row); the labels
    and first/last times only for the top sessions, in a second query."""
    stats = SessionStats()
    month = start.astimezone(UTC).strftime("%Y-%m")
    top = stats.top
    for session, requests, tokens, cost in _totals(engine, month):
        requests, tokens, cost = int(requests), int(tokens), int(cost)
        stats.events.requests += requests
        stats.events.total_tokens += tokens
        stats.events.cost_micro_usd += cost
        if session == NO_SESSION:
            stats.without_session = (requests, tokens)
            continue
        stats.tokens.append(tokens)
        stats.requests += requests
        stats.cost_micro_usd += cost
        if len(top) < TOP_SESSIONS:
            heapq.heappush(top, _Ranked(tokens, session, (session, requests, tokens, cost)))
        elif (top[0].tokens, session) < (tokens, top[0].session):  # top[0] < this one
            heapq.heapreplace(top, _Ranked(tokens, session, (session, requests, tokens, cost)))
    details = _details(engine, month, [item.session for item in top])
    for item in top:
        item.row = (*item.row, *details[item.session])
    return stats


def _totals(engine: Engine, month: str) -> Iterator[Any]:
    """The month's sessions from their monthly rollup: time independent of request count."""
    t = _SESSIONS.c
    stmt = select(t.session, t.requests, t.total_tokens, t.cost_micro_usd).where(t.month == month)
    with engine.connect() as conn:
        yield from conn.execution_options(yield_per=10_000).execute(stmt)


def _details(engine: Engine, month: str, sessions: list[str]) -> dict[str, tuple[Any, ...]]:
    t = _SESSIONS.c
    stmt = select(
        t.session,
        *(t[f"{c}_{m}"] for c in ("user", "agent", "use_case") for m in ("min", "max")),
        t.first_started_at,
        t.last_started_at,
    ).where(t.month == month, t.session.in_(sessions))
    with engine.connect() as conn:
        return {row[0]: tuple(row[1:]) for row in conn.execute(stmt)}


SESSIONS_COLUMNS = (
    Column("sessions", "int", "sessions with requests in the month (X-Meter-Session)"),
    Column("requests", "int", "requests in those sessions"),
    Column("total_tokens", "int", "tokens in those sessions"),
    Column("cost_micro_usd", "int", "cost of those sessions in micro-dollars, exact"),
    Column("cost_usd", "usd", "the same in USD, rounded half up to the cent"),
    *(
        Column(f"tokens_{name}", "int", f"tokens per session: {doc}")
        for name, doc in (
            ("min", "smallest"),
            ("p50", "median (nearest rank)"),
            ("p90", "90th percentile (nearest rank)"),
            ("p99", "99th percentile (nearest rank)"),
            ("max", "largest"),
        )
    ),
    Column("tokens_mean", "float", "tokens per session: mean"),
    Column("requests_per_session", "float", "requests per session: mean"),
    Column("requests_without_session", "int", "requests that named no session"),
    Column("tokens_without_session", "int", "tokens of the requests that named no session"),
)
DISTRIBUTION_COLUMNS = (
    Column("tokens_from", "int", "bucket lower bound, tokens per session (inclusive)"),
    Column("tokens_to", "int", "bucket upper bound (exclusive)"),
    Column("sessions", "int", "sessions in the bucket"),
    Column("session_share", "share", "share of all sessions"),
    Column("total_tokens", "int", "tokens of the sessions in the bucket"),
    Column("token_share", "share", "share of all session tokens"),
)
TOP_COLUMNS = (
    Column("rank", "int", "rank by total_tokens"),
    Column("session", "str", "the session id"),
    Column("user", "str", "its user; (several) when more than one"),
    Column("agent", "str", "its agent; (several) when more than one"),
    Column("use_case", "str", "its use case; (several) when more than one"),
    Column("requests", "int", "requests in the session"),
    Column("total_tokens", "int", "tokens in the session"),
    Column("token_share", "share", "share of the month's total_tokens"),
    Column("cost_micro_usd", "int", "cost in micro-dollars, exact"),
    Column(
        "cost_usd", "usd", "cost in USD, in cents that add up over the rows (largest remainder)"
    ),
    Column("first_request", "time", "start of its first request in the month (UTC)"),
    Column("last_request", "time", "start of its last request in the month (UTC)"),
)


def session_views(stats: SessionStats, *, month_tokens: int) -> list[View]:
    """sessions (one row), session_distribution (buckets) and top_sessions."""
    ordered = sorted(stats.tokens)
    summary = [_summary_row(stats, ordered)]
    return [
        View("sessions", "sessions: count and tokens per session", SESSIONS_COLUMNS, summary),
        View("session_distribution", "sessions by tokens", DISTRIBUTION_COLUMNS, _buckets(ordered)),
        View("top_sessions", "the largest sessions", TOP_COLUMNS, _top_rows(stats, month_tokens)),
    ]


def _summary_row(stats: SessionStats, ordered: list[int]) -> tuple[Any, ...]:
    n = len(ordered)
    return (
        n,
        stats.requests,
        sum(ordered),
        stats.cost_micro_usd,
        usd(stats.cost_micro_usd),
        *(_nearest_rank(ordered, p) for p in (0, 50, 90, 99, 100)),
        sum(ordered) / n if n else 0.0,
        stats.requests / n if n else 0.0,
        *stats.without_session,
    )


def _nearest_rank(ordered: list[int], percentile: int) -> int:
    if not ordered:
        return 0
    return ordered[max(0, math.ceil(percentile / 100 * len(ordered)) - 1)]


def bucket_edges(largest: int) -> list[int]:
    """0, 100, 200, 500, 1000, 2000, 5000, ... up to the first edge past ``largest``."""
    edges, scale = [0], 100
    while edges[-1] <= largest:
        edges.extend(m * scale for m in (1, 2, 5))
        scale *= 10
    while len(edges) > 2 and edges[-2] > largest:
        edges.pop()
    return edges


def _first_bucket(edges: list[int], smallest: int) -> int:
    """Index of the bucket holding ``smallest``: the histogram starts there."""
    return bisect_left(edges, smallest + 1) - 1


def _buckets(ordered: list[int]) -> list[tuple[Any, ...]]:
    if not ordered:
        return []
    edges, n, tokens = bucket_edges(ordered[-1]), len(ordered), sum(ordered)
    edges = edges[_first_bucket(edges, ordered[0]) :]
    rows = []
    for lo, hi in pairwise(edges):
        i, j = bisect_left(ordered, lo), bisect_left(ordered, hi)
        in_bucket = sum(ordered[i:j])
        rows.append((lo, hi, j - i, share(j - i, n), in_bucket, share(in_bucket, tokens)))
    return rows


def _top_rows(stats: SessionStats, month_tokens: int) -> list[tuple[Any, ...]]:
    rows = []
    for rank, item in enumerate(sorted(stats.top, reverse=True), start=1):
        session, requests, tokens, cost, *names, first, last = item.row
        labels = [
            lo if lo == hi else "(several)" for lo, hi in zip(names[::2], names[1::2], strict=True)
        ]
        rows.append(
            (
                rank,
                session,
                *labels,
                requests,
                tokens,
                share(tokens, month_tokens),
                cost,
                usd(cost),
                _utc(first),
                _utc(last),
            )
        )
    return rows


def _utc(value: datetime | str) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
