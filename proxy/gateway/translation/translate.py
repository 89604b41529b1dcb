"""OpenAI Chat Completions ⇄ Anthropic Messages, both ways, streaming included.

Written here rather than taken from litellm at run time: importing litellm costs 2-3 s of start-up
and ~180 MB per worker, and its translation runs inside the ~7 ms ``acompletion`` stack. The test
suite checks this module's request translation against litellm's own for the cases both cover.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from proxy.gateway.errors import ProxyError
from proxy.gateway.relays.upstream_usage import anthropic_usage

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients often omit it

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}
_PASSTHROUGH = ("temperature", "top_p", "top_k")
_IGNORED = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "safety_identifier",
    "metadata",
    "n",
    "response_format",
    "temperature",
    "top_p",
    "top_k",
    "store",
    "prompt_cache_key",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
}


def to_anthropic_request(body: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """Translate an OpenAI chat request; ProxyError(400) for what Anthropic cannot do."""
    if body.get("n", 1) not in (1, None):
        raise ProxyError(400, "n > 1 is not supported by anthropic deployments", code="unsupported")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise ProxyError(
            400, "response_format is not supported by anthropic deployments", code="unsupported"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProxyError(400, "messages must be a non-empty array", code="invalid_request")
    system, converted = _convert_messages(messages)
    out: dict[str, Any] = {
        "model": model,
        "messages": converted,
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = system
    for name in _PASSTHROUGH:
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else _strings(stop, "stop")
    if body.get("tools"):
        out["tools"] = [_convert_tool(t) for t in _array(body["tools"], "tools")]
        choice = _convert_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice:
            out["tool_choice"] = choice
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if body.get("stream"):
        out["stream"] = True
    return out


def _convert_messages(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ProxyError(400, f"messages.{i} must be an object", code="invalid_request")
        role = msg.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(msg.get("content"), i))
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": msg.get("tool_call_id", ""),
                "content": _tool_result_content(msg.get("content"), i),
            }
            if out and out[-1]["role"] == "user" and _all_tool_results(out[-1]["content"]):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif role == "user":
            out.append({"role": "user", "content": _content_blocks(msg.get("content"), i)})
        elif role == "assistant":
            blocks = _content_blocks(msg.get("content"), i) if msg.get("content") else []
            for call in _array(msg.get("tool_calls") or [], f"messages.{i}.tool_calls"):
                blocks.append(_tool_use_block(call, i))
            out.append({"role": "assistant", "content": blocks})
        else:
            raise ProxyError(
                400, f"messages.{i}.role {role!r} is not supported", code="invalid_request"
            )
    return system, out


def _array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProxyError(400, f"{where} must be an array", code="invalid_request")
    return value


def _strings(value: Any, where: str) -> list[str]:
    items = _array(value, where)
    if not all(isinstance(x, str) for x in items):
        raise ProxyError(
            400, f"{where} must be a string or an array of strings", code="invalid_request"
        )
    return items


def _all_tool_results(content: list[dict[str, Any]]) -> bool:
    return all(b.get("type") == "tool_result" for b in content)


def _text_blocks(content: Any, i: int) -> list[dict[str, Any]]:
    return [b for b in _content_blocks(content, i) if b["type"] == "text"]


def _content_blocks(content: Any, i: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise ProxyError(
            400, f"messages.{i}.content must be a string or an array", code="invalid_request"
        )
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            block: dict[str, Any] = {"type": "text", "text": part.get("text", "")}
        elif kind == "image_url":
            block = _image_block(part.get("image_url"), i)
        else:
            raise ProxyError(
                400,
                f"messages.{i}.content part type {kind!r} is not supported",
                code="invalid_request",
            )
        if isinstance(part, dict) and part.get("cache_control"):
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _image_block(image: Any, i: int) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise ProxyError(
            400, f"messages.{i}.content image_url.url is required", code="invalid_request"
        )
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0]
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _tool_result_content(content: Any, i: int) -> Any:
    return content if isinstance(content, str) else _text_blocks(content, i)


def _tool_use_block(call: Any, i: int) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise ProxyError(
            400, f"messages.{i}.tool_calls entries need a function", code="invalid_request"
        )
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError as exc:
        raise ProxyError(
            400, f"messages.{i}.tool_calls arguments are not JSON", code="invalid_request"
        ) from exc
    return {
        "type": "tool_use",
        "id": call.get("id", ""),
        "name": function.get("name", ""),
        "input": arguments,
    }


def _convert_tool(tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or not function.get("name"):
        raise ProxyError(400, "tools entries need function.name", code="invalid_request")
    out: dict[str, Any] = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _convert_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None or choice == "auto":
        out = {"type": "auto"} if parallel is False else None
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name", "")}
    else:
        raise ProxyError(400, "tool_choice is not valid", code="invalid_request")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def openai_usage_from_anthropic(usage: Mapping[str, Any]) -> dict[str, Any]:
    # The validated counts, so the client sees what is metered (and a "12" cannot raise here).
    u = anthropic_usage(usage)
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
        # not in OpenAI's schema; kept for visibility
        "cache_creation_input_tokens": u.cache_write_tokens,
    }


def to_openai_response(msg: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": msg.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(msg.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": openai_usage_from_anthropic(msg.get("usage") or {}),
    }


class StreamTranslator:
    """Anthropic SSE events in, OpenAI chunk objects out."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self._model = model
        self._include_usage = include_usage
        self._id = ""
        self._created = int(time.time())
        self._tool_index: dict[int, int] = {}
        self.usage_fields: dict[str, Any] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def on_event(self, event: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._id = message.get("id", "")
            yield self._chunk({"role": "assistant", "content": ""})
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                idx = self._tool_index.setdefault(event.get("index", 0), len(self._tool_index))
                yield self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": idx,
                                "id": block.get("id"),
                                "type": "function",
                                "function": {"name": block.get("name"), "arguments": ""},
                            }
                        ]
                    }
                )
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                yield self._chunk({"content": delta.get("text", "")})
            elif delta.get("type") == "input_json_delta":
                idx = self._tool_index.get(event.get("index", 0), 0)
                yield self._chunk(
                    {
                        "tool_calls": [
                            {"index": idx, "function": {"arguments": delta.get("partial_json", "")}}
                        ]
                    }
                )
        elif kind == "message_delta":
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                yield self._chunk({}, FINISH_REASONS.get(reason, "stop"))

    def usage_chunk(self, usage: Mapping[str, Any]) -> dict[str, Any] | None:
        if not self._include_usage:
            return None
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [],
            "usage": openai_usage_from_anthropic(usage),
        }
