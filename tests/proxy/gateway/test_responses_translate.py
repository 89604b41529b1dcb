"""The Responses ⇄ Chat translation on its own: request mapping and the event state machine for
shapes the fakes do not produce (text then tool calls, parallel calls, custom tools, limits)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from proxy.gateway.errors import ProxyError
from proxy.gateway.responses.events import ResponseStream
from proxy.gateway.responses.output import ResponseShell, from_chat_completion, responses_usage
from proxy.gateway.responses.request import to_chat_request


def events_of(
    stream: ResponseStream, chunks: list[dict[str, Any]], usage: Any
) -> list[dict[str, Any]]:
    raw = stream.opening()
    for chunk in chunks:
        raw += stream.on_chunk(chunk)
    raw += stream.completed(usage)
    out = []
    for frame in raw:
        kind, data = frame.decode().strip().split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert kind == "event: " + event["type"]
        out.append(event)
    return out


def plain_shell() -> ResponseShell:
    return ResponseShell({}, model="m", names=to_chat_request({"input": "x"}).tools)


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


def finish(reason: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


def call_delta(
    index: int, *, id: str | None = None, name: str | None = None, args: str = ""
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if id:
        call["id"], call["function"]["name"] = id, name
    return delta(tool_calls=[call])


USAGE = {"prompt_tokens": 10, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 4}}


def test_text_then_two_parallel_calls_are_three_items_in_order():
    chunks = [
        delta(role="assistant", content=""),
        delta(content="Checking"),
        delta(content=" both."),
        call_delta(0, id="c1", name="a", args='{"x":'),
        call_delta(1, id="c2", name="b", args='{"y":2}'),
        call_delta(0, args="1}"),
        finish("tool_calls"),
    ]
    shell = ResponseShell({}, model="m", names=to_chat_request({"input": "x"}).tools)
    events = events_of(ResponseStream(shell), chunks, USAGE)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    summary = [(e["type"], e.get("output_index")) for e in events]
    assert summary == [
        ("response.created", None),
        ("response.in_progress", None),
        ("response.output_item.added", 0),
        ("response.content_part.added", 0),
        ("response.output_text.delta", 0),
        ("response.output_text.delta", 0),
        ("response.output_text.done", 0),
        ("response.content_part.done", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.function_call_arguments.delta", 1),
        ("response.output_item.added", 2),
        ("response.function_call_arguments.delta", 2),
        ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.done", 1),
        ("response.output_item.done", 1),
        ("response.function_call_arguments.done", 2),
        ("response.output_item.done", 2),
        ("response.completed", None),
    ]
    final = events[-1]["response"]
    assert [(o["type"], o.get("arguments")) for o in final["output"]] == [
        ("message", None),
        ("function_call", '{"x":1}'),
        ("function_call", '{"y":2}'),
    ]
    assert final["output"][0]["content"][0]["text"] == "Checking both."
    assert final["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 17,
    }


def test_custom_tool_streams_as_one_custom_tool_call_item():
    chat = to_chat_request({"input": "x", "tools": [{"type": "custom", "name": "apply_patch"}]})
    shell = ResponseShell({}, model="m", names=chat.tools)
    chunks = [
        call_delta(0, id="c1", name="apply_patch", args='{"input": "*** Begin'),
        call_delta(0, args=' Patch"}'),
    ]
    events = events_of(ResponseStream(shell), chunks, None)
    assert [e["type"] for e in events][2:] == [
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-2]["item"] == {
        "id": events[2]["item"]["id"],
        "type": "custom_tool_call",
        "status": "completed",
        "call_id": "c1",
        "name": "apply_patch",
        "input": "*** Begin Patch",
    }


def test_length_stop_is_an_incomplete_response():
    shell = ResponseShell(
        {"max_output_tokens": 3}, model="m", names=to_chat_request({"input": "x"}).tools
    )
    events = events_of(ResponseStream(shell), [delta(content="a b c"), finish("length")], USAGE)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    completion = {"choices": [{"message": {"content": "a b c"}, "finish_reason": "length"}]}
    assert from_chat_completion(shell, completion)["status"] == "incomplete"


def test_failed_event_carries_what_was_finished():
    shell = ResponseShell({}, model="m", names=to_chat_request({"input": "x"}).tools)
    stream = ResponseStream(shell)
    stream.opening()
    stream.on_chunk(delta(content="partial"))
    event = json.loads(stream.failed("cut").decode().split("data: ", 1)[1])
    assert event["type"] == "response.failed" and event["sequence_number"] == 5
    assert event["response"]["status"] == "failed"
    assert event["response"]["error"] == {"code": "server_error", "message": "cut"}


def test_request_maps_every_field_codex_and_the_agents_sdk_send():
    chat = to_chat_request(
        {
            "model": "m",
            "instructions": "sys",
            "input": [
                {"role": "user", "content": "hi"},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Let me."}],
                },
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
                {"type": "custom_tool_call", "call_id": "c2", "name": "patch", "input": "diff"},
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [{"type": "input_text", "text": "ok"}],
                },
                {"type": "custom_tool_call_output", "call_id": "c2", "output": "applied"},
            ],
            "tools": [
                {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True},
                {"type": "custom", "name": "patch"},
            ],
            "tool_choice": {"type": "function", "name": "f"},
            "parallel_tool_calls": False,
            "max_output_tokens": 99,
            "temperature": 0.2,
            "top_p": 0.9,
            "reasoning": {"effort": "low", "summary": "auto"},
            "text": {"format": {"type": "json_object"}, "verbosity": "low"},
            "store": False,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "k",
            "stream": True,
            "user": "u",
        }
    )
    assert chat.body == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "Let me.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a":1}'},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "patch", "arguments": '{"input":"diff"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            {"role": "tool", "tool_call_id": "c2", "content": "applied"},
        ],
        "stream": True,
        "max_tokens": 99,
        "temperature": 0.2,
        "top_p": 0.9,
        "reasoning_effort": "low",
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
            },
            {
                "type": "function",
                "function": {
                    "name": "patch",
                    "parameters": {
                        "type": "object",
                        "properties": {"input": {"type": "string"}},
                        "required": ["input"],
                    },
                },
            },
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_object"},
        "user": "u",
    }


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt is not supported"),
        ({"input": "x", "stream": "yes"}, "stream must be a boolean"),
        ({"input": "x", "instructions": 3}, "instructions must be a string"),
        ({"input": "x", "temperature": "hot"}, "temperature must be a number"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "needs call_id and name"),
        ({"input": [{"type": "function_call_output"}]}, "needs call_id"),
        ({"input": [{"type": "local_shell_call"}]}, "'local_shell_call'"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "no message to answer"),
        (
            {
                "input": [
                    {"role": "assistant", "content": [{"type": "input_image", "image_url": "u"}]}
                ]
            },
            "only user",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "file ids",
        ),
        ({"input": "x", "tools": [{"type": "function"}]}, "need a name"),
        ({"input": "x", "tools": [{"type": "mcp", "server_label": "s"}]}, "'mcp'"),
        ({"input": "x", "tools": [{"type": "code_interpreter"}]}, "'code_interpreter'"),
        ({"input": "x", "tools": [{"type": "image_generation"}]}, "'image_generation'"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format"),
    ],
)
def test_unservable_requests_are_refused_by_name(body, words):
    with pytest.raises(ProxyError) as info:
        to_chat_request(body)
    assert info.value.status == 400 and words in info.value.message


def test_usage_without_details_has_zero_details():
    assert responses_usage(
        {"prompt_tokens": 3, "completion_tokens": 2, "prompt_tokens_details": None}
    ) == {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 5,
    }
    assert responses_usage(None) is None


@pytest.mark.parametrize(
    "texts",
    [
        ["plain", " words"],
        ['quote " and \\ backslash', "new\nline\ttab", "\x00\x1f control"],
        ["déjà vu ", "日本語", " 🙂 emoji", "\u2028 separators \u2029"],
        ["x"] * 150,  # sequence numbers past two digits
    ],
)
def test_text_deltas_are_the_bytes_of_the_event_as_a_json_object(texts):
    """The per-chunk delta event is assembled from bytes; it must be exactly what encoding the
    event's object would give, field order included, across escapes and sequence numbers."""
    stream = ResponseStream(plain_shell())
    opening = stream.opening()
    frames = stream.on_chunk(delta(content=texts[0]))
    for text in texts[1:]:
        stream.on_chunk(delta(content=text), frames)
    added = json.loads(frames[0].decode().split("data: ", 1)[1])
    item_id = added["item"]["id"]
    deltas = frames[2:]
    assert len(deltas) == len(texts)
    for seq, (frame, text) in enumerate(zip(deltas, texts, strict=True), start=len(opening) + 2):
        event = {
            "type": "response.output_text.delta",
            "sequence_number": seq,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": text,
            "logprobs": [],
        }
        assert frame == b"event: response.output_text.delta\ndata: " + orjson.dumps(event) + b"\n\n"
    done = json.loads(stream.completed(None)[0].decode().split("data: ", 1)[1])
    assert done["text"] == "".join(texts)
    assert done["sequence_number"] == len(opening) + 2 + len(texts)


def test_a_second_text_item_gets_its_own_id_and_index_in_its_deltas():
    stream = ResponseStream(plain_shell())
    events = events_of(
        stream,
        [delta(content="a"), call_delta(0, id="c1", name="f", args="{}"), delta(content="b")],
        USAGE,
    )
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [d["delta"] for d in deltas] == ["a", "b"]
    assert [d["item_id"] for d in deltas] == [added[0]["item"]["id"], added[2]["item"]["id"]]
    assert [d["output_index"] for d in deltas] == [0, 2]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
