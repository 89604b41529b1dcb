"""Anthropic Messages on OpenAI-shaped backends, through the official anthropic SDK: the request
the upstream receives, the answer the client gets, and the one ledger row per upstream call."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.gateway.errors import ProxyError
from proxy.gateway.translation.messages_chat import call_id, to_chat_request, to_messages_response
from proxy.simulated import FakeServer
from tests.conftest import FAKE_KEYS, backend_models
from tests.support import Gateway, free_port, wait_for

CHAT_ALIASES = {
    "vllm-model": "vllm",
    "tgi-model": "tgi",
    "azure-mistral": "azure",
    "compat-model": "vllm",
}
BACKENDS = {"vllm-model": "vllm", "tgi-model": "tgi", "azure-mistral": "azure_mistral"}
TOOLS: list[Any] = [
    {
        "name": "search",
        "description": "Search the docs",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
        "cache_control": {"type": "ephemeral"},
    },
    {"name": "Read", "input_schema": {"type": "object", "properties": {}}},
]


def _deployment(backend: str, model: str, base: str, **extra: Any) -> dict[str, Any]:
    return {"backend": backend, "model": model, "api_base": base, **extra}


@pytest.fixture(scope="module")
def gw(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    vllm = fakes["vllm"].url + "/v1"
    key = {"api_key_env": "TM_TEST_VLLM_KEY"}
    models = [
        *backend_models(fakes),
        {
            "name": "pilot",
            "deployments": [
                _deployment(
                    "azure_mistral",
                    "mistral-large-3",
                    fakes["azure"].url + "/models",
                    api_key_env="TM_TEST_AZURE_KEY",
                    weight=3,
                ),
                _deployment("vllm", "mistralai/Mistral-Large-Instruct-2411", vllm, weight=1, **key),
            ],
        },
        {
            "name": "falls-back",
            "deployments": [
                _deployment("vllm", "dead", f"http://127.0.0.1:{free_port()}/v1", weight=10),
                _deployment(
                    "tgi",
                    "mistralai/Mistral-Small-24B-Instruct-2501",
                    fakes["tgi"].url + "/v1",
                    weight=1,
                ),
            ],
        },
        {
            "name": "vllm-native",
            "deployments": [
                _deployment(
                    "vllm",
                    "mistralai/Mistral-Large-Instruct-2411",
                    fakes["anthropic"].url + "/v1",
                    native_messages=True,
                    api_key_env="TM_TEST_ANTHROPIC_KEY",
                ),
            ],
        },
    ]
    gateway = Gateway(tmp_path_factory.mktemp("mc") / "tokenmeter.db", {"models": models}).start()
    yield gateway
    gateway.stop()


@pytest.fixture
def session() -> str:
    return "s-" + uuid.uuid4().hex[:12]


def client(gw: Gateway, session: str) -> anthropic.Anthropic:
    key = gw.create_key(user="dev")
    return anthropic.Anthropic(
        base_url=gw.url, api_key=key, max_retries=0, default_headers={"X-Meter-Session": session}
    )


def replay_usage(fake: FakeServer, key: str) -> dict[str, Any]:
    """The fake's own count for the request the gateway sent it, asked again directly."""
    sent = fake.requests[-1]
    body = {**(sent.body or {}), "stream": False}
    body.pop("stream_options", None)
    headers = {"authorization": f"Bearer {key}", "api-key": key} if key else {}
    r = httpx.post(f"{fake.url}{sent.path}", json=body, headers=headers, params=sent.query)
    assert r.status_code == 200, r.text
    return dict(r.json()["usage"])


@pytest.mark.parametrize("alias", list(CHAT_ALIASES))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_text_on_every_openai_shaped_backend(gw, fakes, session, alias, stream):
    c = client(gw, session)
    kwargs: dict[str, Any] = {
        "model": alias,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Say hello [[fake:words=7]]"}],
    }
    if stream:
        with c.messages.stream(**kwargs) as s:
            text = "".join(s.text_stream)
            msg = s.get_final_message()
        assert text == msg.content[0].text  # type: ignore[union-attr]
    else:
        msg = c.messages.create(**kwargs)
    assert msg.type == "message" and msg.role == "assistant" and msg.model == alias
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "end_turn"
    fake = fakes[CHAT_ALIASES[alias]]
    sent = fake.requests[-1]
    assert sent.path.endswith("/chat/completions")
    assert sent.body is not None and sent.body["messages"][-1]["role"] == "user"
    usage = replay_usage(fake, FAKE_KEYS[CHAT_ALIASES[alias]])
    [event] = gw.wait_events(1, "session = :s", s=session)
    assert (event["input_tokens"], event["output_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert (event["status"], event["model"], event["stream"]) == ("ok", alias, stream)
    if alias in BACKENDS:
        assert event["backend"] == BACKENDS[alias]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_cached_prompt_tokens_are_cache_reads(gw, session, stream):
    c = client(gw, session)
    kwargs: dict[str, Any] = {
        "model": "vllm-model",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "w " * 60 + "[[fake:cached=32]]"}],
    }
    if stream:
        with c.messages.stream(**kwargs) as s:
            msg = s.get_final_message()
    else:
        msg = c.messages.create(**kwargs)
    assert msg.usage.cache_read_input_tokens == 32
    [event] = gw.wait_events(1, "session = :s", s=session)
    assert event["cache_read_tokens"] == 32
    assert event["input_tokens"] == msg.usage.input_tokens + 32


@pytest.mark.parametrize("alias", ["vllm-model", "azure-mistral", "tgi-model"])
def test_streamed_tool_call_arrives_as_tool_use_with_input_json_deltas(gw, session, alias):
    c = client(gw, session)
    kinds: list[str] = []
    partial: list[str] = []
    with c.messages.stream(
        model=alias,
        max_tokens=100,
        tools=TOOLS,
        messages=[{"role": "user", "content": "find the docs"}],
    ) as s:
        for event in s:
            kinds.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partial.append(event.delta.partial_json)
        msg = s.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_stop", "message_delta"} <= set(kinds)
    assert len(partial) >= 2  # the arguments were reassembled from several deltas
    [block] = msg.content
    assert block.type == "tool_use" and block.name == "search"
    assert block.input == {"query": "simulated"} and block.id
    assert msg.stop_reason == "tool_use"
    [event] = gw.wait_events(1, "session = :s", s=session)
    assert event["output_tokens"] == msg.usage.output_tokens > 0


def test_non_streamed_tool_call_and_tool_result_round_trip(gw, fakes, session):
    c = client(gw, session)
    first = c.messages.create(
        model="vllm-model",
        max_tokens=100,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "search"},
        messages=[{"role": "user", "content": "find"}],
    )
    [use] = first.content
    assert use.type == "tool_use" and use.input == {"query": "simulated"}
    sent = fakes["vllm"].requests[-1].body
    assert sent is not None
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "search"}}
    assert sent["tools"][0] == {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the docs",
            "parameters": TOOLS[0]["input_schema"],
        },
    }
    second = c.messages.create(
        model="vllm-model",
        max_tokens=100,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "find"},
            {"role": "assistant", "content": [use.model_dump()]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": use.id,
                        "content": [{"type": "text", "text": "found it"}],
                    },
                ],
            },
        ],
    )
    assert second.content[0].type == "text" and second.stop_reason == "end_turn"
    sent = fakes["vllm"].requests[-1].body
    assert sent is not None
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][1]["tool_calls"][0]["id"] == call_id(use.id)
    assert sent["messages"][1]["tool_calls"][0]["function"] == {
        "name": "search",
        "arguments": '{"query":"simulated"}',
    }
    assert sent["messages"][2] == {
        "role": "tool",
        "tool_call_id": call_id(use.id),
        "content": "found it",
    }
    assert len(gw.wait_events(2, "session = :s", s=session)) == 2


def test_request_fields_are_mapped_and_the_rest_dropped(gw, fakes, session):
    c = client(gw, session)
    c.messages.create(
        model="vllm-model",
        max_tokens=33,
        extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 40},
        cache_control={"type": "ephemeral"},
        stop_sequences=["END"],
        system=[
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Answer in English."},
        ],
        thinking={"type": "enabled", "budget_tokens": 1024},
        metadata={"user_id": "someone"},
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        tools=TOOLS,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "What is this?",
                        "cache_control": {"type": "ephemeral"},
                    },
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": "iVBORw0KGgo=",
                        },
                    },
                ],
            },
        ],
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    sent = fakes["vllm"].requests[-1]
    body = sent.body
    assert body is not None
    assert body["messages"][0] == {
        "role": "system",
        "content": "You are terse.\n\nAnswer in English.",
    }
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["top_k"]) == (
        33,
        0.2,
        0.9,
        40,
    )
    assert body["stop"] == ["END"]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert body["model"] == "mistralai/Mistral-7B-Instruct-v0.3"
    for dropped in ("thinking", "metadata", "system", "stop_sequences", "top_k_unused"):
        if dropped != "top_k_unused":
            assert dropped not in body
    assert "cache_control" not in str(body)
    assert "anthropic-beta" not in sent.headers


def test_top_k_is_not_sent_to_azure(gw, fakes, session):
    client(gw, session).messages.create(
        model="azure-mistral",
        max_tokens=10,
        extra_body={"top_k": 5},
        messages=[{"role": "user", "content": "hi"}],
    )
    assert "top_k" not in (fakes["azure"].requests[-1].body or {})


def test_upstream_rejection_is_an_anthropic_error(gw, session):
    c = client(gw, session)
    with pytest.raises(anthropic.BadRequestError) as exc:
        c.messages.create(
            model="vllm-model",
            max_tokens=10,
            messages=[{"role": "user", "content": "[[fake:status=400]]"}],
        )
    body = exc.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    [event] = gw.wait_events(1, "session = :s", s=session)
    assert (event["status"], event["http_status"]) == ("client_error", 400)


def test_upstream_failure_is_an_anthropic_5xx(gw, session):
    c = client(gw, session)
    with pytest.raises(anthropic.InternalServerError) as exc:
        c.messages.create(
            model="tgi-model",
            max_tokens=10,
            messages=[{"role": "user", "content": "[[fake:status=500]]"}],
        )
    assert exc.value.response.json()["type"] == "error"


def test_document_block_is_a_clear_400(gw, session):
    c = client(gw, session)
    with pytest.raises(anthropic.BadRequestError) as exc:
        c.messages.create(
            model="vllm-model",
            max_tokens=10,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBERi0=",
                            },
                        }
                    ],
                }
            ],
        )
    assert "document" in exc.value.response.json()["error"]["message"]


def test_stream_cut_by_the_upstream_ends_with_an_error_event(gw, session):
    key = gw.create_key(user="dev")
    with httpx.stream(
        "POST",
        gw.url + "/v1/messages",
        headers={"x-api-key": key, "X-Meter-Session": session},
        json={
            "model": "vllm-model",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "[[fake:words=20]] [[fake:cut_after=3]]"}],
        },
    ) as r:
        text = "".join(r.iter_text())
    assert "event: message_start" in text and "event: error" in text
    assert "message_stop" not in text
    [event] = gw.wait_events(1, "session = :s", s=session)
    assert event["status"] == "upstream_error" and event["usage_source"] == "estimated"


def test_weighted_routing_applies_to_messages(gw, session):
    c = client(gw, session)
    for _ in range(8):
        c.messages.create(model="pilot", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    events = gw.wait_events(8, "session = :s", s=session)
    backends = sorted(e["backend"] for e in events)
    assert backends == ["azure_mistral"] * 6 + ["vllm"] * 2
    assert all(e["on_prem"] == (e["backend"] == "vllm") for e in events)


def test_fallback_applies_to_messages(gw, session):
    msg = client(gw, session).messages.create(
        model="falls-back", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert msg.content
    first, second = gw.wait_events(2, "session = :s", s=session)
    assert (first["status"], first["deployment"]) == ("upstream_error", "vllm/dead")
    assert (second["status"], second["backend"]) == ("ok", "tgi")
    assert first["request_id"] == second["request_id"]


def test_native_messages_deployment_is_forwarded_as_is(gw, fakes, session):
    msg = client(gw, session).messages.create(
        model="vllm-native",
        max_tokens=5,
        messages=[{"role": "user", "content": "x"}],
        metadata={"user_id": "u"},
    )
    assert msg.content
    sent = fakes["anthropic"].requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.body is not None and sent.body["model"] == "mistralai/Mistral-Large-Instruct-2411"
    [event] = gw.wait_events(1, "session = :s", s=session)
    assert (event["backend"], event["input_tokens"]) == ("vllm", msg.usage.input_tokens)


def test_count_tokens_on_a_chat_backend_is_an_estimate(gw, session):
    c = client(gw, session)
    count = c.messages.count_tokens(
        model="vllm-model", messages=[{"role": "user", "content": "x" * 400}]
    )
    assert count.input_tokens == 100


def test_tool_results_come_before_the_turns_text():
    body = to_chat_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "and then"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": "a",
                            "is_error": True,
                        },
                        {"type": "tool_result", "tool_use_id": "t2"},
                    ],
                },
            ]
        },
        model="m",
        backend="vllm",
    )
    assert body["messages"] == [
        {"role": "tool", "tool_call_id": call_id("t1"), "content": "Error: a"},
        {"role": "tool", "tool_call_id": call_id("t2"), "content": ""},
        {"role": "user", "content": "and then"},
    ]


@pytest.mark.parametrize(
    ("finish", "stop_reason", "expected"),
    [
        ("stop", None, ("end_turn", None)),
        ("stop", "END", ("stop_sequence", "END")),
        ("length", None, ("max_tokens", None)),
        ("tool_calls", None, ("tool_use", None)),
        ("content_filter", None, ("refusal", None)),
    ],
)
def test_finish_reasons_map_to_stop_reasons(finish, stop_reason, expected):
    data = {
        "id": "x",
        "choices": [
            {"message": {"content": "hi"}, "finish_reason": finish, "stop_reason": stop_reason}
        ],
    }
    msg = to_messages_response(data, model="m", stop_sequences=["END"])
    assert (msg["stop_reason"], msg["stop_sequence"]) == expected


def test_invalid_tool_arguments_are_kept_as_text():
    data = {
        "choices": [
            {
                "message": {
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{not json"}}]
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    [block] = to_messages_response(data, model="m", stop_sequences=[])["content"]
    assert block["input"] == {"arguments": "{not json"}


def test_system_messages_inside_messages_become_system_messages():
    """Claude Code 2.x puts system reminders among the messages."""
    body = to_chat_request(
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "system", "content": [{"type": "text", "text": "reminder"}]},
                {"role": "system", "content": "plain"},
            ]
        },
        model="m",
        backend="vllm",
    )
    assert body["messages"][1:] == [
        {"role": "system", "content": "reminder"},
        {"role": "system", "content": "plain"},
    ]


@pytest.mark.parametrize(
    "message",
    [{"role": "tool", "content": "x"}, {"role": "user", "content": 5}],
    ids=["unknown-role", "content-not-text"],
)
def test_malformed_messages_are_400_naming_the_message(message):
    with pytest.raises(ProxyError) as exc:
        to_chat_request({"messages": [message]}, model="m", backend="vllm")
    assert exc.value.status == 400 and "messages.0" in exc.value.message


# --- an upstream that misbehaves ----------------------------------------------------------------


def _chunk(delta: dict[str, Any], **extra: Any) -> bytes:
    body = {"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": None}], **extra}
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def _odd_upstream(request: Request) -> Response:
    body = await request.json()
    prompt = body["messages"][-1]["content"]
    if prompt == "not-json":
        return Response(b"<html>oops</html>", media_type="application/json")
    frames = [_chunk({"role": "assistant", "content": ""}), b"data: {not json\n\n"]
    frames.append(_chunk({"content": "partial"}))
    if prompt == "error-chunk":
        frames.append(b'data: {"error": {"message": "CUDA out of memory", "code": 500}}\n\n')
    else:
        frames.append(_chunk({}, usage={"prompt_tokens": 9, "completion_tokens": 1}))
        frames.append(b"data: [DONE]\n\n")
    return Response(b"".join(frames), media_type="text/event-stream")


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    upstream = FakeServer(
        Starlette(routes=[Route("/v1/chat/completions", _odd_upstream, methods=["POST"])])
    ).start()
    models = [{"name": "odd", "deployments": [_deployment("vllm", "m", upstream.url + "/v1")]}]
    config = {"models": models, "auth": {"required": False}}
    gateway = Gateway(tmp_path_factory.mktemp("odd") / "tokenmeter.db", config).start()
    yield gateway
    gateway.stop()
    upstream.stop()


def _post(gw: Gateway, session: str, prompt: str, stream: bool) -> httpx.Response:
    body = {
        "model": "odd",
        "max_tokens": 5,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
    }
    return httpx.post(gw.url + "/v1/messages", json=body, headers={"X-Meter-Session": session})


def test_non_json_200_is_an_anthropic_502(odd, session):
    r = _post(odd, session, "not-json", stream=False)
    assert r.status_code == 502 and r.json()["type"] == "error"
    [event] = odd.wait_events(1, "session = :s", s=session)
    assert event["status"] == "upstream_error"


def test_garbage_chunks_are_skipped(odd, session):
    text = _post(odd, session, "fine", stream=True).text
    assert '"text":"partial"' in text and "event: message_stop" in text
    [event] = odd.wait_events(1, "session = :s", s=session)
    assert (event["status"], event["input_tokens"], event["output_tokens"]) == ("ok", 9, 1)


def test_error_chunk_mid_stream_ends_with_an_anthropic_error_event(odd, session):
    text = _post(odd, session, "error-chunk", stream=True).text
    assert "event: error" in text and "CUDA out of memory" in text
    assert "message_stop" not in text
    [event] = odd.wait_events(1, "session = :s", s=session)
    assert (event["status"], event["usage_source"]) == ("upstream_error", "estimated")


@pytest.mark.parametrize(("alias", "fake"), [("vllm-model", "vllm"), ("azure-mistral", "azure")])
def test_client_disconnect_cancels_the_translated_upstream(gw, fakes, session, alias, fake):
    before = fakes[fake].stats.disconnected
    c = client(gw, session)
    deltas = 0
    with c.messages.stream(
        model=alias,
        max_tokens=500,
        messages=[{"role": "user", "content": "go [[fake:words=300]] [[fake:chunk_delay=0.02]]"}],
    ) as s:
        for event in s:
            deltas += event.type == "content_block_delta"
            if deltas == 5:
                break
    wait_for(lambda: fakes[fake].stats.disconnected > before)
    [event] = gw.wait_events(1, "session = :s", s=session)
    assert (event["status"], event["usage_source"]) == ("cancelled", "estimated")
    assert 5 <= event["output_tokens"] < 300 and event["input_tokens"] > 0


@pytest.mark.parametrize(
    "raw", ["toolu_01A09q90qw90lq917835lq9", "call_abc-123", "", "x" * 200, "ünïcode"]
)
def test_foreign_tool_call_ids_become_nine_alphanumerics_the_same_on_both_sides(raw):
    body = to_chat_request(
        {
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": raw, "name": "f", "input": {}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": raw}]},
            ]
        },
        model="m",
        backend="vllm",
    )
    sent = body["messages"][1]["tool_calls"][0]["id"]
    assert re.fullmatch(r"[A-Za-z0-9]{9}", sent)
    assert body["messages"][2]["tool_call_id"] == sent


def test_mistral_tool_call_ids_are_kept():
    assert call_id("aB3dE5gH9") == "aB3dE5gH9"
    assert call_id("toolu_1") != call_id("toolu_2")
