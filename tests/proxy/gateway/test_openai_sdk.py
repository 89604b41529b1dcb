"""Every backend type through the official openai SDK; the ledger matches the upstream's usage."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.support import Gateway

BACKENDS = ["vllm-model", "tgi-model", "azure-mistral", "claude", "compat-model"]
EMBEDDING_BACKENDS = ["vllm-model", "azure-mistral", "compat-model"]
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Say hello"},
            {"type": "text", "text": "in five words"},
        ],
    },
]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


def client(gateway: Gateway, api_key: str, session_id: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Meter-Session": session_id},
    )


def assert_event_matches(event: dict[str, Any], usage: Any) -> None:
    details = getattr(usage, "prompt_tokens_details", None)
    cached = (details.cached_tokens or 0) if details else 0
    assert (event["input_tokens"], event["cache_read_tokens"], event["output_tokens"]) == (
        usage.prompt_tokens,
        cached,
        usage.completion_tokens,
    )
    assert event["usage_source"] == "upstream"
    assert event["status"] == "ok"


@pytest.mark.parametrize("model", BACKENDS)
def test_chat_non_stream_records_upstream_usage(gateway, api_key, session_id, model):
    resp = client(gateway, api_key, session_id).chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=50
    )
    assert resp.choices[0].message.content
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert_event_matches(event, resp.usage)
    assert (event["model"], event["user"], event["stream"]) == (model, "alice", False)


@pytest.mark.parametrize("model", BACKENDS)
def test_stream_without_include_usage_hides_usage_but_records_it(
    gateway, api_key, session_id, model
):
    c = client(gateway, api_key, session_id)
    expected = c.chat.completions.create(model=model, messages=MESSAGES).usage
    chunks = list(c.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert all(ch.usage is None for ch in chunks)
    assert all(ch.choices for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    assert text
    events = gateway.wait_events(2, "session = :s", s=session_id)
    streamed = [e for e in events if e["stream"]]
    assert_event_matches(streamed[0], expected)
    assert streamed[0]["ttft_s"] is not None


@pytest.mark.parametrize("model", BACKENDS)
def test_stream_with_include_usage_passes_usage_chunk(gateway, api_key, session_id, model):
    chunks = list(
        client(gateway, api_key, session_id).chat.completions.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert_event_matches(event, final.usage)


@pytest.mark.parametrize("model", BACKENDS)
def test_tool_call_round_trip(gateway, api_key, session_id, model):
    c = client(gateway, api_key, session_id)
    first = c.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup"
    assert isinstance(json.loads(call.function.arguments), dict)
    followup = [
        *MESSAGES,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "hello is 'hello'"},
    ]
    second = c.chat.completions.create(model=model, messages=followup, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content
    events = gateway.wait_events(2, "session = :s", s=session_id)
    assert [e["output_tokens"] for e in events] == [
        first.usage.completion_tokens,
        second.usage.completion_tokens,
    ]


@pytest.mark.parametrize("model", BACKENDS)
def test_streamed_tool_call_reassembles(gateway, api_key, session_id, model):
    chunks = list(
        client(gateway, api_key, session_id).chat.completions.create(
            model=model, messages=MESSAGES, tools=TOOLS, stream=True
        )
    )
    args = "".join(
        tc.function.arguments or ""
        for ch in chunks
        if ch.choices
        for tc in (ch.choices[0].delta.tool_calls or [])
    )
    assert json.loads(args) == {"query": "simulated"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("model", ["vllm-model", "compat-model"])
def test_n_stop_and_max_tokens_pass_through(gateway, api_key, session_id, model):
    resp = client(gateway, api_key, session_id).chat.completions.create(
        model=model, messages=MESSAGES, n=2, max_tokens=3
    )
    assert [c.index for c in resp.choices] == [0, 1]
    assert {c.finish_reason for c in resp.choices} == {"length"}
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert event["output_tokens"] == resp.usage.completion_tokens == 6


def test_stop_sequence_translated_for_anthropic(gateway, api_key, session_id, fakes):
    resp = client(gateway, api_key, session_id).chat.completions.create(
        model="claude", messages=MESSAGES, stop=["backend"], max_tokens=40
    )
    assert resp.choices[0].finish_reason == "stop"
    sent = fakes["anthropic"].requests[-1].body
    assert sent["stop_sequences"] == ["backend"]
    assert sent["system"] == [{"type": "text", "text": "You are terse."}]
    assert sent["max_tokens"] == 40


@pytest.mark.parametrize("model", EMBEDDING_BACKENDS)
def test_embeddings_record_usage(gateway, api_key, session_id, model):
    resp = client(gateway, api_key, session_id).embeddings.create(
        model=model, input=["one two three", "four five"]
    )
    assert len(resp.data) == 2
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["input_tokens"], event["output_tokens"]) == (resp.usage.prompt_tokens, 0)


def test_models_lists_configured_aliases(gateway, api_key, session_id):
    ids = [m.id for m in client(gateway, api_key, session_id).models.list()]
    assert ids == BACKENDS


def test_upstream_receives_usage_request_and_its_model_name(gateway, api_key, session_id, fakes):
    list(
        client(gateway, api_key, session_id).chat.completions.create(
            model="vllm-model",
            messages=MESSAGES,
            stream=True,
            metadata={"agent": "vibe", "ticket": "T-1"},
        )
    )
    sent = fakes["vllm"].requests[-1]
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["model"] == "mistralai/Mistral-7B-Instruct-v0.3"
    assert sent.body["metadata"] == {"ticket": "T-1"}
    assert sent.headers["authorization"] == "Bearer vllm-secret"


def test_azure_gets_api_version_key_and_drop_header(gateway, api_key, session_id, fakes):
    client(gateway, api_key, session_id).chat.completions.create(
        model="azure-mistral", messages=MESSAGES, user="bob"
    )
    sent = fakes["azure"].requests[-1]
    assert sent.query["api-version"]
    assert sent.headers["api-key"] == "azure-secret"
    assert sent.headers["extra-parameters"] == "drop"
