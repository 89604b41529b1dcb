"""A bug of ours is still one event: a catch-all answers 500 in the client family's shape,
records ``internal_error`` with the exception class in ``error_detail`` and counts it in
``tokenmeter_internal_errors_total``, once. Faults are injected into the real request path of a
real server (no upstream or test double stands in for the gateway), with the ledger on SQLite and
on PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

import proxy.gateway.relays.openai_relay as openai_relay
import proxy.gateway.routes as routes
from proxy.gateway.relays.upstream_usage import AnthropicUsageTracker
from proxy.gateway.responses.events import ResponseStream
from proxy.gateway.translation.messages_stream import MessagesStream
from proxy.simulated import FakeServer
from tests.conftest import backend_models
from tests.support import Gateway, pg_database


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(request, fakes: dict[str, FakeServer], tmp_path_factory) -> Iterator[Gateway]:
    config = {"models": backend_models(fakes)}
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(pg_database(request.getfixturevalue("pg_admin_url")))
            config["storage"] = {"url": url}
        gw = Gateway(tmp_path_factory.mktemp("internal") / "tm.db", config).start()
        stack.callback(gw.stop)
        yield gw


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


def assert_recorded(gateway, session_id: str, before: float) -> dict:
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["http_status"]) == ("internal_error", 500)
    assert (event["error_code"], event["error_detail"]) == ("internal_error", "LookupError")
    assert internal_errors(gateway, "LookupError") == before + 1
    return event


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
    event = assert_recorded(gateway, session_id, before)
    assert event["model"] == "vllm-model"


def test_a_failure_before_any_deployment_is_recorded_too(gateway, api_key, session_id, monkeypatch):
    before = internal_errors(gateway, "LookupError")
    monkeypatch.setattr(routes, "admit", boom)  # after authentication, before the fallback
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}", "X-Meter-Session": session_id},
        json={"model": "vllm-model", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    event = assert_recorded(gateway, session_id, before)
    assert event["deployment"] == "none"


def test_a_failing_native_handler_answers_in_anthropic_shape(
    gateway, api_key, session_id, monkeypatch
):
    before = internal_errors(gateway, "LookupError")
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
    assert_recorded(gateway, session_id, before)


def test_a_stream_failing_midway_ends_in_shape_and_is_metered(
    gateway, api_key, session_id, monkeypatch
):
    before = internal_errors(gateway, "LookupError")
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
    event = assert_recorded(gateway, session_id, before)
    assert event["output_tokens"] > 0  # the chunks before the fault are counted


MESSAGES = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    ("path", "model", "target"),
    [
        ("/v1/chat/completions", "claude", (AnthropicUsageTracker, "on_event")),
        ("/v1/messages", "claude", (AnthropicUsageTracker, "on_event")),
        ("/v1/messages", "vllm-model", (MessagesStream, "on_chunk")),
        ("/v1/responses", "vllm-model", (ResponseStream, "on_chunk")),
        ("/v1/responses", "claude", (AnthropicUsageTracker, "on_event")),
    ],
    ids=[
        "chat-on-anthropic",
        "messages-native",
        "messages-on-chat",
        "responses-on-chat",
        "responses-on-anthropic",
    ],
)
def test_every_stream_relay_ends_a_fault_in_shape_and_records_it(
    gateway, api_key, session_id, monkeypatch, path, model, target
):
    before = internal_errors(gateway, "LookupError")
    monkeypatch.setattr(*target, boom)
    body = {"model": model, "max_tokens": 5, "stream": True}
    body |= {"input": "x"} if path == "/v1/responses" else {"messages": MESSAGES}
    headers = {
        "Authorization": f"Bearer {api_key}",
        "X-Meter-Session": session_id,
        "anthropic-version": "2023-06-01",
    }
    with httpx.stream("POST", gateway.url + path, json=body, headers=headers) as r:
        answer = r.read()
    assert r.status_code == 200  # the stream had started: the fault is its last event
    assert b"internal error (LookupError)" in answer
    assert_recorded(gateway, session_id, before)


def test_usage_groups_by_error_detail_from_the_events(gateway, api_key, session_id, monkeypatch):
    monkeypatch.setattr(routes, "forward_json", boom)
    httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}", "X-Meter-Session": session_id},
        json={"model": "vllm-model", "messages": MESSAGES},
    )
    gateway.wait_events(1, "session = :s", s=session_id)
    r = httpx.get(
        gateway.url + "/admin/usage",
        params={"group_by": "error_code,error_detail"},
        headers=gateway.admin_headers,
    )
    assert r.status_code == 200 and r.json()["source"] == "events"
    rows = {(g["error_code"], g["error_detail"]): g["requests"] for g in r.json()["rows"]}
    recorded = gateway.events("error_detail = 'LookupError'")
    assert rows[("internal_error", "LookupError")] == len(recorded)
