"""POST /v1/responses on every backend through the official openai SDK: the answer, the event
stream, tool calls, the session, refusals, fallback and cut streams; the ledger holds exactly
what each fake reported."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from proxy.simulated import FakeServer
from tests.conftest import backend_models
from tests.proxy.gateway.fake_usage import ledger_usage, reported_usage, requests_for
from tests.support import Gateway, wait_for

BACKENDS = {
    "vllm-model": "vllm",
    "tgi-model": "tgi",
    "azure-mistral": "azure",
    "claude": "anthropic",
    "compat-model": "vllm",
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "lookup",
        "description": "Look something up",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    }
]
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gateway(
    fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    dead = {"backend": "vllm", "model": "dead", "weight": 1000}
    dead["api_base"] = f"http://127.0.0.1:{_closed_port()}/v1"
    claude = backend_models(fakes)[3]["deployments"][0]
    extra = [{"name": "dead-then-claude", "deployments": [dead, {**claude, "weight": 1}]}]
    db = tmp_path_factory.mktemp("responses") / "tm.db"
    gw = Gateway(db, {"models": backend_models(fakes) + extra}).start()
    yield gw
    gw.stop()


def client(gateway: Gateway, key: str, session: str | None = None) -> openai.OpenAI:
    headers = {"X-Meter-Session": session} if session else {}
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=key, max_retries=0, default_headers=headers
    )


def assert_ledger_is_what_the_fake_reported(
    fake: FakeServer, events: list[dict[str, Any]], marker: str
) -> None:
    sent = requests_for(fake, marker)
    assert len(sent) == len(events)
    assert [ledger_usage(e) for e in events] == [reported_usage(fake, r) for r in sent]
    assert all(e["usage_source"] == "upstream" for e in events)


@pytest.mark.parametrize("model", BACKENDS)
def test_non_stream_answers_a_response_and_meters_the_upstream_counts(
    gateway, api_key, session_id, fakes, model
):
    resp = client(gateway, api_key, session_id).responses.create(
        model=model, instructions="Be terse.", input=f"hello {session_id}", max_output_tokens=50
    )
    assert resp.object == "response" and resp.status == "completed"
    assert resp.output_text.startswith("Simulated reply")
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert_ledger_is_what_the_fake_reported(fakes[BACKENDS[model]], [event], session_id)
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (
        event["input_tokens"],
        event["output_tokens"],
    )
    assert (event["model"], event["stream"], event["status"]) == (model, False, "ok")


@pytest.mark.parametrize("model", BACKENDS)
def test_stream_sends_the_full_event_sequence_in_order(gateway, api_key, session_id, fakes, model):
    with client(gateway, api_key, session_id).responses.stream(
        model=model, input=f"hello {session_id}"
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert [k for k in kinds if k != "response.output_text.delta"] == TEXT_EVENTS
    assert kinds.count("response.output_text.delta") == 12
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text and final.output_text.startswith("Simulated reply")
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert_ledger_is_what_the_fake_reported(fakes[BACKENDS[model]], [event], session_id)
    assert final.usage is not None and final.usage.output_tokens == event["output_tokens"]
    assert event["stream"] and event["ttft_s"] is not None


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", BACKENDS)
def test_function_call_round_trip(gateway, api_key, session_id, fakes, model, stream):
    c = client(gateway, api_key, session_id)
    history: list[Any] = [{"role": "user", "content": f"look up {session_id}"}]
    if stream:
        with c.responses.stream(model=model, input=history, tools=TOOLS) as s:
            kinds = [e.type for e in s]
            first = s.get_final_response()
        assert kinds[2:4] == [
            "response.output_item.added",
            "response.function_call_arguments.delta",
        ]
        assert kinds[-3:] == [
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    else:
        first = c.responses.create(model=model, input=history, tools=TOOLS)
    [call] = first.output
    assert call.type == "function_call" and call.name == "lookup"
    assert json.loads(call.arguments) == {"query": "simulated"}
    history += [
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": "found it"},
    ]
    second = c.responses.create(model=model, input=history, tools=TOOLS)
    assert second.output_text.startswith("Simulated reply")
    events = gateway.wait_events(2, "session = :s", s=session_id)
    assert_ledger_is_what_the_fake_reported(fakes[BACKENDS[model]], events, session_id)
    sent = requests_for(fakes[BACKENDS[model]], session_id)[-1].body or {}
    if model == "claude":
        assert [b["type"] for b in sent["messages"][-1]["content"]] == ["tool_result"]
    else:
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]


def test_input_items_become_chat_messages_in_order(gateway, api_key, session_id, fakes):
    items: list[Any] = [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "Be terse."}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": f"describe {session_id}"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "A dot."}],
        },
        {"role": "user", "content": "and now?"},
    ]
    client(gateway, api_key, session_id).responses.create(model="vllm-model", input=items)
    [sent] = requests_for(fakes["vllm"], session_id)
    assert sent.body is not None
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"describe {session_id}"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                },
            ],
        },
        {"role": "assistant", "content": "A dot."},
        {"role": "user", "content": "and now?"},
    ]


@pytest.mark.parametrize(
    ("headers", "body", "session"),
    [
        ({"session-id": "codex-1"}, {"prompt_cache_key": "other"}, "codex-1"),
        ({}, {"prompt_cache_key": "cache-7"}, "cache-7"),
        ({}, {"conversation": "conv_9"}, "conv_9"),
        ({}, {"conversation": {"id": "conv_10"}}, "conv_10"),
        ({"X-Meter-Session": "ours"}, {"prompt_cache_key": "cache-8"}, "ours"),
    ],
)
def test_session_comes_from_codex_header_or_body(gateway, api_key, headers, body, session):
    r = httpx.post(
        gateway.url + "/v1/responses",
        json={"model": "vllm-model", "input": "hi", **body},
        headers={"Authorization": f"Bearer {api_key}", **headers},
    )
    assert r.status_code == 200, r.text
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert event["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id is not supported"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "'file_search'"),
        ({"tools": [{"type": "computer_use_preview"}]}, "'computer_use_preview'"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "'item_reference'"),
        ({"input": []}, "input must be a non-empty"),
        ({"input": [{"role": "wizard", "content": "x"}]}, "role 'wizard'"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "'input_file'",
        ),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format"),
        ({"tool_choice": {"type": "mcp"}, "tools": TOOLS}, "tool_choice"),
    ],
)
def test_what_cannot_be_served_is_a_clear_openai_400(gateway, api_key, session_id, body, words):
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway, api_key, session_id).responses.create(
            **{"model": "vllm-model", "input": "hi", **body}
        )
    assert words in info.value.message
    assert info.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["http_status"]) == ("client_error", 400)


def test_codex_tool_kinds_are_mapped_or_dropped(gateway, api_key, session_id, fakes):
    tools: list[Any] = [
        {"type": "web_search", "external_web_access": False},
        {"type": "custom", "name": "apply_patch", "description": "Patch files"},
        {
            "type": "namespace",
            "name": "agents",
            "tools": [
                {
                    "type": "function",
                    "name": "spawn",
                    "parameters": {"type": "object", "properties": {}},
                }
            ],
        },
    ]
    c = client(gateway, api_key, session_id)
    resp = c.responses.create(model="vllm-model", input=f"patch {session_id}", tools=tools)
    [sent] = requests_for(fakes["vllm"], session_id)
    assert [t["function"]["name"] for t in (sent.body or {})["tools"]] == [
        "apply_patch",
        "agents__spawn",
    ]
    [call] = resp.output
    assert (call.type, call.name, call.input) == ("custom_tool_call", "apply_patch", "simulated")


def test_stored_response_paths_are_refused_and_not_metered(gateway, api_key, session_id):
    headers = {"Authorization": f"Bearer {api_key}", "X-Meter-Session": session_id}
    for method, path in [
        ("GET", "/v1/responses/resp_1"),
        ("DELETE", "/v1/responses/resp_1"),
        ("GET", "/v1/responses/resp_1/input_items"),
    ]:
        r = httpx.request(method, gateway.url + path, headers=headers)
        assert r.status_code == 400
        assert "does not store responses" in r.json()["error"]["message"]
    assert httpx.get(gateway.url + "/v1/responses/resp_1").status_code == 401
    client(gateway, api_key, session_id).responses.create(model="vllm-model", input="hi")
    assert len(gateway.wait_events(1, "session = :s", s=session_id)) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_before_the_first_byte_moves_to_the_next_backend(
    gateway, api_key, session_id, stream
):
    c = client(gateway, api_key, session_id)
    if stream:
        with c.responses.stream(model="dead-then-claude", input="hi") as s:
            text = s.get_final_response().output_text
    else:
        text = c.responses.create(model="dead-then-claude", input="hi").output_text
    assert "anthropic backend" in text
    first, second = gateway.wait_events(2, "session = :s", s=session_id)
    assert [first["status"], second["status"]] == ["upstream_error", "ok"]
    assert second["backend"] == "anthropic" and first["request_id"] == second["request_id"]


@pytest.mark.parametrize("model", ["vllm-model", "claude"])
def test_stream_cut_by_the_upstream_fails_and_is_metered(gateway, api_key, session_id, model):
    with client(gateway, api_key, session_id).responses.stream(
        model=model, input="hi [[fake:words=40]] [[fake:cut_after=3]]"
    ) as s:
        kinds = [e.type for e in s]
    assert kinds[-1] == "response.failed"
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["usage_source"]) == ("upstream_error", "estimated")
    assert event["output_tokens"] >= 3


@pytest.mark.parametrize(("model", "fake"), [("vllm-model", "vllm"), ("claude", "anthropic")])
def test_client_hang_up_cancels_and_meters_tokens_so_far(
    gateway, api_key, session_id, fakes, model, fake
):
    before = fakes[fake].stats.disconnected
    stream = client(gateway, api_key, session_id).responses.create(
        model=model, input="hi [[fake:words=200]] [[fake:chunk_delay=0.02]]", stream=True
    )
    deltas = 0
    for event in stream:
        deltas += event.type == "response.output_text.delta"
        if deltas == 5:
            break
    stream.close()
    wait_for(lambda: fakes[fake].stats.disconnected > before)
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["usage_source"]) == ("cancelled", "estimated")
    assert 5 <= event["output_tokens"] < 200


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "directives", "cached", "reasoning"),
    [
        ("vllm-model", "[[fake:cached=3]] [[fake:reasoning=4]]", 3, 4),
        ("azure-mistral", "[[fake:cached=2]] [[fake:reasoning=5]]", 2, 5),
        ("claude", "[[fake:cache_read=4]] [[fake:cache_write=2]]", 4, 0),
    ],
)
def test_cached_and_reasoning_tokens_are_in_usage_and_ledger(
    gateway, api_key, session_id, fakes, model, directives, cached, reasoning, stream
):
    c = client(gateway, api_key, session_id)
    prompt = f"a longer prompt for {session_id} {directives}"
    if stream:
        with c.responses.stream(model=model, input=prompt) as s:
            usage = s.get_final_response().usage
    else:
        usage = c.responses.create(model=model, input=prompt).usage
    assert usage is not None
    assert usage.input_tokens_details.cached_tokens == cached
    assert usage.output_tokens_details.reasoning_tokens == reasoning
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["cache_read_tokens"], event["reasoning_tokens"]) == (cached, reasoning)
    assert event["input_tokens"] == usage.input_tokens
    assert_ledger_is_what_the_fake_reported(fakes[BACKENDS[model]], [event], session_id)
