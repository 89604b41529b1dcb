"""A bug of ours is still one event: a catch-all answers 500 in the client family's shape,
records ``internal_error`` and counts the exception class. Faults are injected into the real
request path of a real server (no upstream or test double stands in for the gateway)."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

import proxy.gateway.relays.openai_relay as openai_relay
import proxy.gateway.routes as routes


def internal_errors(gateway, exception: str) -> float:
    text = httpx.get(gateway.url + "/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "tokenmeter_internal_errors":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["exception"] == exception:
                    return sample.value
    return 0.0


def boom(*args, **kwargs):
    raise LookupError("injected fault")


def test_a_failing_handler_answers_500_and_is_recorded(gateway, api_key, session_id, monkeypatch):
    before = internal_errors(gateway, "LookupError")
    monkeypatch.setattr(routes, "forward_json", boom)
    client = openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Meter-Session": session_id},
    )
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="vllm-model", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body["code"] == "internal_error"
    assert "LookupError" in info.value.body["message"]
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["http_status"], event["model"]) == (
        "internal_error",
        500,
        "vllm-model",
    )
    assert internal_errors(gateway, "LookupError") == before + 1


def test_a_failing_native_handler_answers_in_anthropic_shape(
    gateway, api_key, session_id, monkeypatch
):
    monkeypatch.setattr(routes, "messages_native", boom)
    client = anthropic.Anthropic(
        base_url=gateway.url,
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Meter-Session": session_id},
    )
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(
            model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body["type"] == "error"
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert event["status"] == "internal_error"


def test_a_stream_failing_midway_ends_in_shape_and_is_metered(
    gateway, api_key, session_id, monkeypatch
):
    monkeypatch.setattr(openai_relay._UsageView, "filter", boom)
    client = openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Meter-Session": session_id},
    )
    stream = client.chat.completions.create(
        model="vllm-model", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="internal error"):
        for _ in stream:
            pass
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["http_status"]) == ("internal_error", 500)
    assert event["output_tokens"] > 0  # the chunks before the fault are counted
