"""OpenAI ⇄ Anthropic translation: request parity with litellm's, responses and streams."""

from __future__ import annotations

import os
from typing import Any

import pytest

from proxy.gateway.errors import ProxyError
from proxy.gateway.translation.translate import (
    StreamTranslator,
    to_anthropic_request,
    to_openai_response,
)

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look up",
        "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}},
    },
}
CASES: list[dict[str, Any]] = [
    {
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}],
        "max_tokens": 100,
    },
    {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ],
        "max_tokens": 10,
        "stop": ["x", "y"],
        "temperature": 0.5,
        "top_p": 0.9,
    },
    {
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": 1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
        "max_tokens": 50,
        "tools": [TOOL],
        "tool_choice": "required",
    },
    {
        "messages": [{"role": "user", "content": "pick"}],
        "max_tokens": 5,
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    },
    {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            }
        ],
        "max_tokens": 20,
    },
]


def litellm_request(body: dict[str, Any]) -> dict[str, Any]:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no network fetch at import
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig

    cfg = AnthropicConfig()
    params = {k: v for k, v in body.items() if k != "messages"}
    optional = cfg.map_openai_params(params, {}, "claude-sonnet-4-5", drop_params=False)
    return dict(cfg.transform_request("claude-sonnet-4-5", body["messages"], optional, {}, {}))


@pytest.mark.parametrize("body", CASES)
def test_request_matches_litellm_translation(body):
    ours = to_anthropic_request(body, model="claude-sonnet-4-5")
    theirs = litellm_request(body)
    for tool in theirs.get("tools", []):
        tool.pop("type", None)  # litellm marks user tools "custom"; the API's default
    for field in (
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
    ):
        assert ours.get(field) == theirs.get(field), field


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n > 1"),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_object"},
            },
            "response_format",
        ),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ],
)
def test_unsupported_requests_are_rejected_clearly(body, message):
    with pytest.raises(ProxyError, match=message) as info:
        to_anthropic_request(body, model="m")
    assert info.value.status == 400


def test_response_maps_tool_use_and_usage():
    out = to_openai_response(
        {
            "id": "msg_1",
            "stop_reason": "tool_use",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": 1}},
            ],
            "usage": {
                "input_tokens": 5,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
                "output_tokens": 7,
            },
        },
        model="claude",
    )
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "lookup",
        "arguments": '{"q":1}',
    }
    assert out["usage"]["prompt_tokens"] == 125
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 100}


def test_stream_translation_emits_openai_chunks_in_order():
    t = StreamTranslator(model="claude", include_usage=True)
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "lookup"},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"q":'},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
    ]
    deltas = [c["choices"][0] for e in events for c in t.on_event(e)]
    assert deltas[0]["delta"] == {"role": "assistant", "content": ""}
    assert deltas[1]["delta"] == {"content": "Hi"}
    assert deltas[2]["delta"]["tool_calls"][0]["id"] == "toolu_1"
    assert deltas[3]["delta"]["tool_calls"][0] == {"index": 0, "function": {"arguments": '{"q":'}}
    assert deltas[4]["finish_reason"] == "tool_calls"
    final = t.usage_chunk({"input_tokens": 3, "output_tokens": 9})
    assert final is not None and final["choices"] == []
    assert final["usage"]["completion_tokens"] == 9
