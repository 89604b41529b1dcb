"""The proxy's own time per request, as a response header when enabled."""

from __future__ import annotations

import httpx

from tests.conftest import backend_models
from tests.support import Gateway

HEADER = "x-tokenmeter-overhead-ms"


def post(gw: Gateway, key: str, *, stream: bool) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        timeout=30,
        json={
            "model": "vllm-model",
            "stream": stream,
            "messages": [{"role": "user", "content": "[[fake:delay=0.2]] hi"}],
        },
        headers={"Authorization": f"Bearer {key}"},
    )


def test_header_reports_overhead_excluding_the_upstream_wait(fakes, tmp_path):
    gw = Gateway(
        tmp_path / "tm.db", {"models": backend_models(fakes), "metrics": {"overhead_header": True}}
    ).start()
    try:
        key = gw.create_key(user="ops")
        for stream in (False, True):
            r = post(gw, key, stream=stream)
            overhead_ms = float(r.headers[HEADER])
            # the fake waits 200 ms before answering: none of that is the proxy's
            assert 0 <= overhead_ms < 100, (stream, overhead_ms)
    finally:
        gw.stop()


def test_header_is_off_by_default(gateway, api_key):
    assert HEADER not in post(gateway, api_key, stream=False).headers
