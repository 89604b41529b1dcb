"""The usage event: one per request, never any prompt or completion text."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from cost.usage import TokenUsage

Status = Literal["ok", "client_error", "upstream_error", "timeout", "cancelled", "internal_error"]
# invalid: the upstream reported counts that are not non-negative integers below a sane bound;
# what could be read is counted, the rest is 0, and the event says so.
UsageSource = Literal["upstream", "estimated", "invalid"]
# Where the paying user came from: the key itself, what the client declared (open mode, service
# keys), or neither ("unknown": nothing declared and no key user).
UserSource = Literal["key", "declared", "unknown"]

# The events table's column width: an exception class or a short reason, never free text.
MAX_ERROR_DETAIL = 128

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_id_lock = threading.Lock()
_last_id = 0  # the last id made now, as a number: the next sorts after it


def new_event_id(now_ns: int | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, Crockford base32, 26 characters.

    Time-ordered so the table's primary key grows monotonically (cheap inserts), unique so a
    replay of the journal can be made idempotent by id. Made now (no ``now_ns``), ids also
    strictly increase within the process, as the ULID spec's monotonic variant has it: one that
    would not sort after the last (the same millisecond, or the clock set back) is the last plus
    one, so the events of a request's attempts, made within a millisecond when an upstream
    refuses at once, sort in the order they were made.
    """
    global _last_id
    if now_ns is not None:
        value = (now_ns // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    else:
        with _id_lock:
            value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
            value = _last_id = value if value > _last_id else _last_id + 1
    return encode_id(value)


# Crockford digit pairs, so an id is 13 table lookups: a loop over its 26 digits was 3 % of a
# request's samples (py-spy, c=64)
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_PAIR_SHIFTS = tuple(range(120, -1, -10))


def encode_id(value: int) -> str:
    """A 128-bit id as 26 Crockford base32 digits, the first holding its top 3 bits."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


def error_detail(text: str) -> str:
    """``text`` as an event's ``error_detail``: non-printable characters escaped, then cut to
    ``MAX_ERROR_DETAIL`` characters (a longer or unprintable value would make the database refuse
    the whole event)."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text[:MAX_ERROR_DETAIL]


@dataclass(slots=True)
class UsageEvent:
    """What one request cost, and whose it was.

    Timestamps are Unix seconds (UTC). ``cost_micro_usd`` is filled at ingestion from the price in
    force when the request started; None when the model has no known price (never a silent 0).
    ``overhead_s`` is the time the proxy spent that was not waiting on the upstream.

    ``user`` and ``team`` are who pays; ``end_user`` is what the client declared about its own
    user (recorded apart, so a client cannot move its spend to someone else), ``user_source``
    says which of the two ``user`` is. ``error_code`` says why a request was refused ("" if not);
    ``error_detail`` narrows it down where the gateway knows more without reading the request or
    the upstream's body: the exception class of an ``internal_error``, the status an upstream
    failed with, why it could not be reached. Printable, at most ``MAX_ERROR_DETAIL`` characters
    (``error_detail()``).
    """

    id: str
    started_at: float
    finished_at: float
    key_id: str
    user: str
    agent: str
    session: str
    use_case: str
    model: str
    backend: str
    deployment: str
    upstream_model: str
    on_prem: bool
    stream: bool
    status: Status
    http_status: int
    usage: TokenUsage = field(default_factory=TokenUsage)
    usage_source: UsageSource = "upstream"
    cost_micro_usd: int | None = 0  # None: no price known for the model
    latency_s: float = 0.0
    ttft_s: float | None = None
    overhead_s: float = 0.0
    request_id: str = ""  # shared by the attempts of one request (fallback); "" before 0004
    attempt: int = 1
    team: str = "unknown"  # the key's team; the defaults complete journal lines of older versions
    end_user: str = "unknown"
    user_source: UserSource = "unknown"
    error_code: str = ""
    error_detail: str = ""  # "" in journal lines written before 0008

    def flat(self) -> dict[str, Any]:
        """Every field as a plain value, token counts spread out under their column names."""
        u = self.usage
        return {
            "id": self.id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "key_id": self.key_id,
            "user": self.user,
            "agent": self.agent,
            "session": self.session,
            "use_case": self.use_case,
            "model": self.model,
            "backend": self.backend,
            "deployment": self.deployment,
            "upstream_model": self.upstream_model,
            "on_prem": self.on_prem,
            "stream": self.stream,
            "status": self.status,
            "http_status": self.http_status,
            "input_tokens": u.input_tokens,
            "cache_read_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "cache_write_1h_tokens": u.cache_write_1h_tokens,
            "output_tokens": u.output_tokens,
            "reasoning_tokens": u.reasoning_tokens,
            "usage_source": self.usage_source,
            "cost_micro_usd": self.cost_micro_usd,
            "latency_s": self.latency_s,
            "ttft_s": self.ttft_s,
            "overhead_s": self.overhead_s,
            "request_id": self.request_id,
            "attempt": self.attempt,
            "team": self.team,
            "end_user": self.end_user,
            "user_source": self.user_source,
            "error_code": self.error_code,
            "error_detail": self.error_detail,
        }

    @classmethod
    def from_flat(cls, row: dict[str, Any]) -> UsageEvent:
        usage = TokenUsage(**{f: row.pop(f) for f in _TOKEN_FIELDS})
        return cls(**row, usage=usage)


_TOKEN_FIELDS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
)

# The keys of ``UsageEvent.flat()``: a journal line with exactly these is an event as written now.
FLAT_FIELDS = frozenset(
    [*(f.name for f in fields(UsageEvent) if f.name != "usage"), *_TOKEN_FIELDS]
)
