"""A Chat Completions stream as the Anthropic event stream: ``message_start``, ``ping``, per text
or tool-use block ``content_block_start`` / ``content_block_delta`` (``text_delta``,
``input_json_delta``) / ``content_block_stop``, then ``message_delta`` with the stop reason and the
usage of the upstream's last chunk, and ``message_stop``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from proxy.gateway.translation.messages_chat import anthropic_usage_from_chat, stop_of


def sse(kind: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class MessagesStream:
    """Chat Completions chunks in, Anthropic stream events (encoded) out.

    One content block is open at a time: text, or one tool call (OpenAI interleaves nothing
    inside a choice, so a new tool index or a switch to text closes the block before).
    """

    __slots__ = ("_block", "_index", "_model", "_stops", "_tool_index", "finish", "usage")

    def __init__(self, *, model: str, stop_sequences: list[str]) -> None:
        self._model = model
        self._stops = stop_sequences
        self._index = -1  # the open block's index, -1 when none is open
        self._block: str | None = None
        self._tool_index: int | None = None
        self.finish: Mapping[str, Any] | None = None
        self.usage: dict[str, Any] | None = None

    def start(self, message_id: str) -> bytes:
        message: dict[str, Any] = {
            "id": f"msg_{message_id or 'chat'}",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message}) + sse(
            "ping", {"type": "ping"}
        )

    def on_chunk(self, chunk: Mapping[str, Any]) -> Iterator[bytes]:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                yield from self._open("text", {"type": "text", "text": ""})
                yield self._delta({"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or ():
                yield from self._on_tool_call(call)
            if choice.get("finish_reason"):
                self.finish = choice

    def _on_tool_call(self, call: Mapping[str, Any]) -> Iterator[bytes]:
        index = call.get("index", 0)
        function = call.get("function") or {}
        if self._block != "tool" or index != self._tool_index:
            self._tool_index = index
            block = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{self._index + 1}",
                "name": function.get("name", ""),
                "input": {},
            }
            yield from self._open("tool", block, force=True)
        arguments = function.get("arguments")
        if arguments:
            yield self._delta({"type": "input_json_delta", "partial_json": arguments})

    def _open(self, kind: str, block: dict[str, Any], *, force: bool = False) -> Iterator[bytes]:
        if self._block == kind and not force:
            return
        yield from self._close()
        self._index += 1
        self._block = kind
        payload = {"type": "content_block_start", "index": self._index, "content_block": block}
        yield sse("content_block_start", payload)

    def _close(self) -> Iterator[bytes]:
        if self._block is not None:
            yield sse("content_block_stop", {"type": "content_block_stop", "index": self._index})
            self._block = None

    def _delta(self, delta: dict[str, Any]) -> bytes:
        payload = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return sse("content_block_delta", payload)

    def end(self) -> bytes:
        """The closing events, once the upstream said ``[DONE]``."""
        out = b"".join(self._close())
        reason, sequence = stop_of(self.finish or {}, self._stops)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": anthropic_usage_from_chat(self.usage),
        }
        return out + sse("message_delta", delta) + sse("message_stop", {"type": "message_stop"})


def stream_error(message: str) -> bytes:
    return sse("error", {"type": "error", "error": {"type": "api_error", "message": message}})
