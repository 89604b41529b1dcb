"""response_format on /v1/chat/completions and text.format on /v1/responses, on every backend:
Claude models with native structured output get ``output_config.format``, older ones a forced
tool whose input comes back as the message text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from proxy.gateway.translation.structured import JSON_TOOL, has_native_json_schema
from proxy.simulated import FakeServer
from tests.conftest import backend_models
from tests.proxy.gateway.fake_usage import ledger_usage, reported_usage, requests_for
from tests.support import Gateway

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
    },
    "required": ["city", "days", "tags"],
    "additionalProperties": False,
    "$defs": {"Tag": {"type": "string", "enum": ["sunny", "rainy"]}},
}
EXPECTED = {"city": "simulated", "days": 1, "tags": ["sunny"]}
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True},
}
FAKES = {
    "vllm-model": "vllm",
    "azure-mistral": "azure",
    "tgi-model": "tgi",
    "claude": "anthropic",
    "claude-old": "anthropic",
}


@pytest.fixture(scope="module")
def gateway(
    fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    models = backend_models(fakes)
    old = {**models[3]["deployments"][0], "model": "claude-3-5-haiku-20241022"}
    models.append({"name": "claude-old", "deployments": [old]})
    gw = Gateway(tmp_path_factory.mktemp("structured") / "tm.db", {"models": models}).start()
    yield gw
    gw.stop()


def client(gateway: Gateway, key: str, session: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=key,
        max_retries=0,
        default_headers={"X-Meter-Session": session},
    )


@pytest.mark.parametrize(
    ("model", "native"),
    [
        ("claude-sonnet-4-5", True),
        ("claude-sonnet-4-5-20250929", True),
        ("claude-opus-4-1-20250805", True),
        ("claude-haiku-4-5", True),
        ("claude-opus-5", True),
        ("claude-sonnet-4-20250514", False),
        ("claude-opus-4-20250514", False),
        ("claude-3-5-haiku-20241022", False),
        ("claude-3-7-sonnet-latest", False),
    ],
)
def test_native_structured_output_by_model_id(model, native):
    assert has_native_json_schema(model) is native


def upstream_body(fakes: dict[str, FakeServer], model: str, marker: str) -> dict[str, Any]:
    [sent] = requests_for(fakes[FAKES[model]], marker)
    return sent.body or {}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", FAKES)
def test_chat_json_schema_answers_json_text(gateway, api_key, session_id, fakes, model, stream):
    c = client(gateway, api_key, session_id)
    messages: list[Any] = [{"role": "user", "content": f"plan a trip {session_id}"}]
    if stream:
        chunks = c.chat.completions.create(
            model=model, messages=messages, response_format=JSON_SCHEMA_FORMAT, stream=True
        )
        parts = [(ch.choices[0].delta.content or "", ch.choices[0].finish_reason) for ch in chunks]
        text = "".join(p for p, _ in parts)
        finish = [f for _, f in parts if f][-1]
    else:
        resp = c.chat.completions.create(
            model=model, messages=messages, response_format=JSON_SCHEMA_FORMAT
        )
        text, finish = resp.choices[0].message.content or "", resp.choices[0].finish_reason
        assert not resp.choices[0].message.tool_calls
    assert json.loads(text) == EXPECTED and finish == "stop"
    sent = upstream_body(fakes, model, session_id)
    if model == "claude":
        assert sent["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
        assert "tools" not in sent
    elif model == "claude-old":
        assert [t["name"] for t in sent["tools"]] == [JSON_TOOL]
        assert sent["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    else:
        assert sent["response_format"] == JSON_SCHEMA_FORMAT
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert ledger_usage(event) == reported_usage(
        fakes[FAKES[model]], requests_for(fakes[FAKES[model]], session_id)[0]
    )


@pytest.mark.parametrize("model", ["claude", "claude-old"])
def test_chat_json_object_on_claude_is_a_forced_tool(gateway, api_key, session_id, fakes, model):
    resp = client(gateway, api_key, session_id).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"any json {session_id}"}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(resp.choices[0].message.content or ""), dict)
    sent = upstream_body(fakes, model, session_id)
    assert sent["tool_choice"] == {"type": "tool", "name": JSON_TOOL}


def test_json_tool_next_to_client_tools_leaves_the_choice_to_the_model(
    gateway, api_key, session_id, fakes
):
    tools: list[Any] = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    resp = client(gateway, api_key, session_id).chat.completions.create(
        model="claude-old",
        messages=[{"role": "user", "content": f"look {session_id}"}],
        tools=tools,
        response_format=JSON_SCHEMA_FORMAT,
    )
    assert resp.choices[0].finish_reason == "tool_calls"
    assert resp.choices[0].message.tool_calls[0].function.name == "lookup"  # type: ignore[index]
    sent = upstream_body(fakes, "claude-old", session_id)
    assert [t["name"] for t in sent["tools"]] == ["lookup", JSON_TOOL]
    assert "tool_choice" not in sent


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", FAKES)
def test_responses_text_format_answers_json_text(gateway, api_key, session_id, model, stream):
    c = client(gateway, api_key, session_id)
    fmt: Any = {"format": {"type": "json_schema", "name": "trip", "schema": SCHEMA, "strict": True}}
    if stream:
        with c.responses.stream(model=model, input=f"trip {session_id}", text=fmt) as s:
            resp = s.get_final_response()
    else:
        resp = c.responses.create(model=model, input=f"trip {session_id}", text=fmt)
    assert json.loads(resp.output_text) == EXPECTED
    assert [item.type for item in resp.output] == ["message"]
    assert resp.text is not None and resp.text.format.type == "json_schema"


def test_bad_json_schema_is_a_clear_400(gateway, api_key, session_id):
    with pytest.raises(openai.BadRequestError, match=r"json_schema\.schema"):
        client(gateway, api_key, session_id).chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x"}},  # type: ignore[typeddict-item]
        )
