"""Bad input and upstream failures: a clear error for the client, a record in the ledger."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import Gateway, wait_for

LONG = " ".join(f"w{i}" for i in range(30))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory) -> Iterator[Gateway]:
    vllm = fakes["vllm"].url + "/v1"
    gw = Gateway(
        tmp_path_factory.mktemp("fail") / "tm.db",
        {
            "limits": {"max_body_bytes": 64 * 1024},
            "models": [
                {
                    "name": "vllm-model",
                    "deployments": [
                        {
                            "backend": "vllm",
                            "model": "m",
                            "api_base": vllm,
                            "timeout_s": 0.5,
                            "api_key_env": "TM_TEST_VLLM_KEY",
                        }
                    ],
                },
                {
                    "name": "claude",
                    "deployments": [
                        {
                            "backend": "anthropic",
                            "model": "claude-sonnet-4-5",
                            "timeout_s": 0.5,
                            "api_base": fakes["anthropic"].url,
                            "api_key_env": "TM_TEST_ANTHROPIC_KEY",
                        }
                    ],
                },
                {
                    "name": "dead-model",
                    "deployments": [
                        {
                            "backend": "vllm",
                            "model": "m",
                            "api_base": f"http://127.0.0.1:{closed_port()}/v1",
                        }
                    ],
                },
            ],
        },
    ).start()
    yield gw
    gw.stop()


def client(gateway: Gateway, api_key: str, session_id: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Meter-Session": session_id},
    )


def chat(gateway, api_key, session_id, content, model="vllm-model", **kw):
    return client(gateway, api_key, session_id).chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **kw
    )


def post_raw(gateway, api_key, session_id, body: bytes) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        content=body,
        headers={
            "Authorization": f"Bearer {api_key}",
            "X-Meter-Session": session_id,
            "content-type": "application/json",
        },
    )


def test_malformed_json_is_400_in_openai_shape(gateway, api_key, session_id):
    r = post_raw(gateway, api_key, session_id, b'{"model": "vllm-model", "messages": [')
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["http_status"]) == ("client_error", 400)


def test_schema_violation_is_400(gateway, api_key, session_id):
    r = post_raw(gateway, api_key, session_id, b'{"model": "vllm-model", "messages": "hi"}')
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_unknown_model_is_404(gateway, api_key, session_id):
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        chat(gateway, api_key, session_id, "hi", model="no-such-model")


def test_body_over_limit_is_413(gateway, api_key, session_id):
    body = (
        b'{"model": "vllm-model", "messages": [{"role": "user", "content": "'
        + b"x" * 70_000
        + b'"}]}'
    )
    r = post_raw(gateway, api_key, session_id, body)
    assert r.status_code == 413 and "exceeds" in r.json()["error"]["message"]


def test_upstream_4xx_passes_through_with_its_message(gateway, api_key, session_id):
    with pytest.raises(openai.BadRequestError) as info:
        chat(gateway, api_key, session_id, "[[fake:status=400]]")
    assert info.value.status_code == 400 and info.value.message
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["http_status"]) == ("client_error", 400)


def test_upstream_5xx_is_502(gateway, api_key, session_id):
    with pytest.raises(openai.APIStatusError) as info:
        chat(gateway, api_key, session_id, "[[fake:status=500]]")
    assert info.value.status_code == 502
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["http_status"]) == ("upstream_error", 502)


def test_connection_refused_is_502(gateway, api_key, session_id):
    with pytest.raises(openai.APIStatusError) as info:
        chat(gateway, api_key, session_id, "hi", model="dead-model")
    assert info.value.status_code == 502
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert event["status"] == "upstream_error"


@pytest.mark.parametrize("model", ["vllm-model", "claude"])
def test_timeout_is_504(gateway, api_key, session_id, model):
    with pytest.raises(openai.APIStatusError) as info:
        chat(gateway, api_key, session_id, "[[fake:delay=2]]", model=model)
    assert info.value.status_code == 504
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["http_status"]) == ("timeout", 504)


def test_stall_mid_stream_is_recorded_as_timeout(gateway, api_key, session_id):
    with pytest.raises(openai.APIError, match="timed out"):
        list(chat(gateway, api_key, session_id, "[[fake:chunk_delay=2]]", stream=True))
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert event["status"] == "timeout"


@pytest.mark.parametrize("model", ["vllm-model", "claude"])
def test_upstream_cut_mid_stream_is_upstream_error_with_estimate(
    gateway, api_key, session_id, model
):
    with pytest.raises(openai.APIError):
        list(
            chat(
                gateway,
                api_key,
                session_id,
                f"{LONG} [[fake:cut_after=3]]",
                model=model,
                stream=True,
            )
        )
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["usage_source"]) == ("upstream_error", "estimated")
    assert event["output_tokens"] >= 3 and event["input_tokens"] > 0


@pytest.mark.parametrize(("model", "fake"), [("vllm-model", "vllm"), ("claude", "anthropic")])
def test_client_disconnect_cancels_upstream_and_records_tokens_so_far(
    gateway, api_key, session_id, fakes, model, fake
):
    before = fakes[fake].stats.disconnected
    stream = chat(
        gateway,
        api_key,
        session_id,
        f"{LONG} [[fake:words=200]] [[fake:chunk_delay=0.02]]",
        model=model,
        stream=True,
    )
    received = 0
    for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received == 5:
            break
    stream.close()
    wait_for(lambda: fakes[fake].stats.disconnected > before)
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["usage_source"]) == ("cancelled", "estimated")
    assert 5 <= event["output_tokens"] < 200
    assert event["input_tokens"] > 0


def test_invalid_config_names_the_key_and_exits_nonzero(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "models:\n  - name: x\n    deployments:\n"
        "      - {backend: vllm, model: m, timeout_s: -1, api_base: http://x}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "models.0.deployments.0.timeout_s" in proc.stderr
