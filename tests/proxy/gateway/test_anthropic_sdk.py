"""The native Messages API through the official anthropic SDK, and cached tokens in the ledger."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.support import Gateway

CACHED = "[[fake:cache_read=40]] [[fake:cache_write=30]] [[fake:cache_write_1h=20]]"


def client(gateway: Gateway, api_key: str, session_id: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gateway.url,
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Meter-Session": session_id},
    )


def prompt(text: str) -> list[dict[str, object]]:
    words = " ".join(f"w{i}" for i in range(120))
    return [{"role": "user", "content": f"{words} {text}"}]


def expected_input(usage: anthropic.types.Usage) -> int:
    return (
        usage.input_tokens
        + (usage.cache_read_input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
    )


def test_messages_non_stream_records_cache_read_and_write(gateway, api_key, session_id):
    msg = client(gateway, api_key, session_id).messages.create(
        model="claude", max_tokens=64, system="Be brief.", messages=prompt(CACHED)
    )
    assert msg.content[0].type == "text"
    assert (msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (40, 50)
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (
        event["input_tokens"],
        event["cache_read_tokens"],
        event["cache_write_tokens"],
        event["cache_write_1h_tokens"],
        event["output_tokens"],
    ) == (expected_input(msg.usage), 40, 50, 20, msg.usage.output_tokens)
    assert event["backend"] == "anthropic" and event["cost_micro_usd"] > 0


def test_messages_stream_records_final_usage(gateway, api_key, session_id):
    with client(gateway, api_key, session_id).messages.stream(
        model="claude", max_tokens=64, messages=prompt(CACHED)
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (
        event["input_tokens"],
        event["cache_read_tokens"],
        event["cache_write_tokens"],
        event["output_tokens"],
        event["stream"],
    ) == (expected_input(final.usage), 40, 50, final.usage.output_tokens, True)
    assert event["usage_source"] == "upstream"


def test_stream_usage_taken_from_delta_when_start_reports_zero(gateway, api_key, session_id):
    with client(gateway, api_key, session_id).messages.stream(
        model="claude", max_tokens=64, messages=prompt("[[fake:input_in_delta]]")
    ) as stream:
        final = stream.get_final_message()
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert event["input_tokens"] == final.usage.input_tokens > 0


def test_tool_use_round_trip(gateway, api_key, session_id):
    c = client(gateway, api_key, session_id)
    tools = [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}]
    first = c.messages.create(model="claude", max_tokens=64, tools=tools, messages=prompt("hi"))
    use = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use"
    second = c.messages.create(
        model="claude",
        max_tokens=64,
        tools=tools,
        messages=[
            *prompt("hi"),
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "42"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    assert len(gateway.wait_events(2, "session = :s", s=session_id)) == 2


def test_request_id_and_version_headers_forwarded(gateway, api_key, session_id, fakes):
    raw = client(gateway, api_key, session_id).messages.with_raw_response.create(
        model="claude",
        max_tokens=16,
        messages=prompt("hi"),
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    assert raw.headers["request-id"].startswith("req_")
    sent = fakes["anthropic"].requests[-1]
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert sent.headers["x-api-key"] == "anthropic-secret"
    assert sent.body["model"] == "claude-sonnet-4-5"


def test_upstream_error_passes_through_in_anthropic_shape(gateway, api_key, session_id):
    with pytest.raises(anthropic.RateLimitError):
        client(gateway, api_key, session_id).messages.create(
            model="claude", max_tokens=16, messages=prompt("[[fake:status=429]]")
        )
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["http_status"]) == ("upstream_error", 429)


def test_stream_error_event_recorded_as_upstream_error(gateway, api_key, session_id):
    stream = client(gateway, api_key, session_id).messages.stream(
        model="claude", max_tokens=64, messages=prompt("[[fake:stream_error=overloaded_error]]")
    )
    with pytest.raises(anthropic.APIStatusError), stream as events:
        events.get_final_message()
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert event["status"] == "upstream_error" and event["input_tokens"] > 0


def test_non_anthropic_model_is_served_on_messages(gateway, api_key, session_id):
    """Once a 400; now translated to Chat Completions (test_messages_chat.py has the detail)."""
    msg = client(gateway, api_key, session_id).messages.create(
        model="vllm-model", max_tokens=16, messages=prompt("hi")
    )
    assert msg.content[0].type == "text"
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["backend"], event["status"]) == ("vllm", "ok")


def test_count_tokens_passes_through_and_records_nothing(gateway, api_key, session_id):
    count = client(gateway, api_key, session_id).messages.count_tokens(
        model="claude", messages=prompt("hi")
    )
    assert count.input_tokens > 0
    assert gateway.events("session = :s", s=session_id) == []


def test_openai_client_sees_cached_tokens_of_anthropic(gateway, api_key, session_id):
    resp = openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Meter-Session": session_id},
    ).chat.completions.create(model="claude", messages=prompt(CACHED))
    assert resp.usage.prompt_tokens_details.cached_tokens == 40
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["input_tokens"], event["cache_write_tokens"]) == (resp.usage.prompt_tokens, 50)


def test_native_stream_is_relayed_with_its_framing(gateway, api_key, fakes):
    """The gateway forwards Anthropic's events as they were framed (it batches writes, never
    events): the same event lines, in the same order, as the upstream sends them directly."""
    import httpx
    import orjson

    from tests.conftest import FAKE_KEYS

    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True}
    body["messages"] = prompt("framing")

    def frames(url: str, headers: dict[str, str], model: str) -> list[tuple[str, str]]:
        with httpx.stream("POST", url, json={**body, "model": model}, headers=headers) as r:
            raw = b"".join(r.iter_raw())
        assert raw.endswith(b"\n\n")
        out = []
        for event in raw[:-2].split(b"\n\n"):
            name, data = event.split(b"\n")
            assert name.startswith(b"event: ") and data.startswith(b"data: ")
            out.append((name.decode(), orjson.loads(data[6:])["type"]))
        return out

    version = {"anthropic-version": "2023-06-01"}
    direct = frames(
        fakes["anthropic"].url + "/v1/messages",
        {"x-api-key": FAKE_KEYS["anthropic"], **version},
        "claude-sonnet-4-5",
    )
    relayed = frames(gateway.url + "/v1/messages", {"x-api-key": api_key, **version}, "claude")
    assert relayed == direct
    assert [n for n, _ in relayed][-1] == "event: message_stop"
