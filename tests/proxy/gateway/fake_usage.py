"""What a fake upstream reports for a request the gateway sent it, asked again directly.

The fakes are deterministic, so replaying the recorded upstream request (non-streaming) gives
the counts the fake reported the first time; tests compare the ledger with them.
"""

from __future__ import annotations

from typing import Any

import httpx

from proxy.gateway.relays.upstream_usage import anthropic_usage, openai_usage
from proxy.simulated import FakeServer
from proxy.simulated.recording import RecordedRequest

TOKEN_FIELDS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")


def reported_usage(fake: FakeServer, recorded: RecordedRequest) -> dict[str, int]:
    body = {**(recorded.body or {}), "stream": False}
    body.pop("stream_options", None)
    headers = {k: v for k, v in recorded.headers.items() if k not in ("content-length", "host")}
    r = httpx.post(fake.url + recorded.path, params=recorded.query, json=body, headers=headers)
    r.raise_for_status()
    usage: Any = r.json()["usage"]
    tokens = anthropic_usage(usage) if "input_tokens" in usage else openai_usage(usage)
    return {name: getattr(tokens, name) for name in TOKEN_FIELDS}


def ledger_usage(event: dict[str, Any]) -> dict[str, int]:
    return {name: event[name] for name in TOKEN_FIELDS}


def requests_for(fake: FakeServer, marker: str) -> list[RecordedRequest]:
    """The recorded upstream requests whose body mentions ``marker`` (a test's own prompt)."""
    return [r for r in fake.requests if r.body is not None and marker in str(r.body)]
