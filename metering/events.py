"""The usage event: one per request, never any prompt or completion text."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Literal

from cost.usage import TokenUsage

Status = Literal["ok", "client_error", "upstream_error", "timeout", "cancelled"]
UsageSource = Literal["upstream", "estimated"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_event_id(now_ns: int | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, Crockford base32, 26 characters.

    Time-ordered so the table's primary key grows monotonically (cheap inserts), unique so a
    replay of the journal can be made idempotent by id.
    """
    ms = (now_ns if now_ns is not None else time.time_ns()) // 1_000_000
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


@dataclass(slots=True)
class UsageEvent:
    """What one request cost, and whose it was.

    Timestamps are Unix seconds (UTC). ``cost_micro_usd`` is filled at ingestion from the price in
    force. ``overhead_s`` is the time the proxy spent that was not waiting on the upstream.
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
    cost_micro_usd: int = 0
    latency_s: float = 0.0
    ttft_s: float | None = None
    overhead_s: float = 0.0
