"""Usage events for ledger tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from cost.usage import TokenUsage
from metering.events import UsageEvent, new_event_id

T0 = 1_790_000_000.0  # 2026-09-21, a fixed start so hours are reproducible


def make_event(rng: random.Random | None = None, **fields: Any) -> UsageEvent:
    rng = rng or random.Random()
    started = fields.pop("started_at", T0 + rng.uniform(0, 3 * 3600))
    usage = fields.pop(
        "usage",
        TokenUsage(
            input_tokens=rng.randint(0, 5000),
            cache_read_tokens=0,
            output_tokens=rng.randint(0, 2000),
            reasoning_tokens=0,
        ),
    )
    base: dict[str, Any] = {
        "id": new_event_id(int(started * 1e9)),
        "started_at": started,
        "finished_at": started + 0.5,
        "key_id": rng.choice(["key_a", "key_b"]),
        "user": rng.choice(["alice", "bob", "carol"]),
        "agent": rng.choice(["vibe", "kb-search"]),
        "session": f"s{rng.randint(0, 9)}",
        "use_case": rng.choice(["coding", "rag"]),
        "model": "m",
        "backend": "vllm",
        "deployment": "vllm/m",
        "upstream_model": "m",
        "on_prem": True,
        "stream": rng.random() < 0.5,
        "status": rng.choice(["ok", "ok", "ok", "upstream_error", "cancelled"]),
        "http_status": 200,
        "usage": usage,
        "cost_micro_usd": rng.randint(0, 10_000),
        "latency_s": 0.5,
    }
    base.update(fields)
    return UsageEvent(**base)


def event_row(event: UsageEvent) -> dict[str, Any]:
    """The event as SQLAlchemy's own insert takes it (datetimes, not Unix seconds)."""
    row = event.flat()
    row["started_at"] = datetime.fromtimestamp(event.started_at, UTC)
    row["finished_at"] = datetime.fromtimestamp(event.finished_at, UTC)
    return row
