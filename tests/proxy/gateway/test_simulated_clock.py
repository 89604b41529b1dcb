"""The demo's simulated clock goes through the real metering path, and only when enabled."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from tests.conftest import backend_models
from tests.support import Gateway

T = 1_600_000_000  # 2020-09-13: a year the live clock cannot produce


def post(gw: Gateway, key: str, session: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "vllm-model", "messages": [{"role": "user", "content": "hi"}]},
        headers={
            "Authorization": f"Bearer {key}",
            "X-Meter-Session": session,
            "X-Tokenmeter-Simulated-Time": str(T),
        },
    )


def started(gw: Gateway, session: str) -> datetime:
    [event] = gw.wait_events(1, "session = :s", s=session)
    value = event["started_at"]
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC)


def test_header_sets_the_start_when_enabled(fakes, tmp_path):
    gw = Gateway(tmp_path / "a.db", {"models": backend_models(fakes), "simulated_clock": True})
    gw.start()
    try:
        assert post(gw, gw.create_key(user="demo"), "s1").status_code == 200
        assert started(gw, "s1") == datetime.fromtimestamp(T, UTC)
    finally:
        gw.stop()


def test_header_is_ignored_by_default(gateway, api_key):
    assert post(gateway, api_key, "s-clock-off").status_code == 200
    assert started(gateway, "s-clock-off").year == datetime.now(UTC).year
