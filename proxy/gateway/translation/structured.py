"""Structured output (``response_format``) on Anthropic deployments.

``json_schema`` goes to Claude's native structured output (``output_config.format``) on the models
that have it (Claude 4.5 family and later, Opus 4.1); on older models, and for ``json_object``
(no schema to enforce natively), the schema becomes one tool the model is forced to call, and that
call's input comes back as the message content, so the client sees the JSON as text either way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.gateway.errors import ProxyError
from proxy.gateway.translation.translate import (
    StreamTranslator,
    to_anthropic_request,
    to_openai_response,
)

JSON_TOOL = "json_response"
_CLAUDE = re.compile(r"claude-(opus|sonnet|haiku)-(\d+)(?:-(\d{1,2}))?(?!\d)")
_NATIVE_SINCE = {"opus": (4, 1), "sonnet": (4, 5), "haiku": (4, 5)}


def has_native_json_schema(model: str) -> bool:
    """Whether the Anthropic model takes ``output_config.format`` (by its published id)."""
    match = _CLAUDE.search(model)
    if match is None:
        return False
    family, major, minor = match.group(1), int(match.group(2)), int(match.group(3) or 0)
    return (major, minor) >= _NATIVE_SINCE[family]


@dataclass(frozen=True, slots=True)
class AnthropicTranslation:
    """A chat request as Anthropic gets it, and how to read the answer back."""

    request: dict[str, Any]
    json_tool: str | None = None

    def response(self, msg: Mapping[str, Any], *, model: str) -> dict[str, Any]:
        if self.json_tool is not None:
            msg = {
                **msg,
                "content": [_as_text(b, self.json_tool) for b in msg.get("content") or []],
            }
            if msg.get("stop_reason") == "tool_use" and not _has_tool_use(msg):
                msg["stop_reason"] = "end_turn"
        return to_openai_response(msg, model=model)

    def stream_translator(self, *, model: str, include_usage: bool = False) -> StreamTranslator:
        if self.json_tool is None:
            return StreamTranslator(model=model, include_usage=include_usage)
        return _JsonToolTranslator(model=model, include_usage=include_usage, tool=self.json_tool)


def anthropic_translation(body: Mapping[str, Any], *, model: str) -> AnthropicTranslation:
    """Translate a chat request for Anthropic, ``response_format`` included."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        rest = {k: v for k, v in body.items() if k != "response_format"}
        return AnthropicTranslation(to_anthropic_request(rest, model=model))
    rest = {k: v for k, v in body.items() if k != "response_format"}
    request = to_anthropic_request(rest, model=model)
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ProxyError(400, "response_format.json_schema.schema must be an object")
        if has_native_json_schema(model):
            request["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
            return AnthropicTranslation(request)
    elif kind == "json_object":
        schema = {"type": "object"}
    else:
        raise ProxyError(400, f"response_format type {kind!r} is not supported")
    tool = {
        "name": JSON_TOOL,
        "description": "Give the answer as this tool's input, in the required JSON shape.",
        "input_schema": schema,
    }
    request["tools"] = [*request.get("tools", []), tool]
    if not body.get("tools"):
        request["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
    return AnthropicTranslation(request, JSON_TOOL)


def _as_text(block: Mapping[str, Any], tool: str) -> Mapping[str, Any]:
    if block.get("type") == "tool_use" and block.get("name") == tool:
        return {"type": "text", "text": orjson.dumps(block.get("input") or {}).decode()}
    return block


def _has_tool_use(msg: Mapping[str, Any]) -> bool:
    return any(b.get("type") == "tool_use" for b in msg.get("content") or [])


class _JsonToolTranslator(StreamTranslator):
    """Streams the forced tool's input JSON as text deltas."""

    def __init__(self, *, model: str, include_usage: bool, tool: str) -> None:
        super().__init__(model=model, include_usage=include_usage)
        self._tool = tool
        self._blocks: set[int] = set()
        self._other = False

    def on_event(self, event: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        kind = event.get("type")
        index = event.get("index", 0)
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use" and block.get("name") == self._tool:
                self._blocks.add(index)
                return iter(())
            self._other = self._other or block.get("type") == "tool_use"
        elif kind == "content_block_delta" and index in self._blocks:
            text = (event.get("delta") or {}).get("partial_json", "")
            delta = {"type": "text_delta", "text": text}
            event = {**event, "delta": delta}
        elif kind == "message_delta" and not self._other:
            delta = event.get("delta") or {}
            if delta.get("stop_reason") == "tool_use":
                event = {**event, "delta": {**delta, "stop_reason": "end_turn"}}
        return super().on_event(event)
