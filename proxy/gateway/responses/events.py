"""Chat Completions chunks → the Responses event stream, in the order OpenAI sends it.

``response.created`` and ``response.in_progress`` open the stream; each output item is
``output_item.added`` … its deltas … ``output_item.done`` (text items with their content part
added and done around the ``output_text`` deltas, function calls with their argument deltas);
``response.completed`` (or ``incomplete``) carries the usage, ``response.failed`` a failure. Every
event has a ``sequence_number`` counting from 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from proxy.gateway.responses.output import (
    ResponseShell,
    message_item,
    new_item_id,
    responses_usage,
    text_part,
)

# An output_text.delta event, the one sent per chunk, is assembled from bytes: the same bytes as
# _event's dict through orjson (tests/proxy/gateway/test_responses_translate.py), with the
# item's fields encoded once per item (a stream request 1.99 -> 1.79 M instructions)
_DELTA_START = (
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":'
)
_DELTA_END = b',"logprobs":[]}\n\n'


class _Call:
    __slots__ = ("arguments", "call_id", "index", "item_id", "name")

    def __init__(self, index: int, call_id: str, name: str) -> None:
        self.index = index
        self.item_id = new_item_id("fc")
        self.call_id = call_id
        self.name = name
        self.arguments: list[str] = []


class ResponseStream:
    """Feed chat chunk objects in, get encoded SSE events out."""

    def __init__(self, shell: ResponseShell) -> None:
        self._shell = shell
        self._seq = 0
        self._output: list[dict[str, Any]] = []  # finished items, in output order
        self._text_id: str | None = None
        self._text: list[str] = []
        self._text_index = 0
        self._delta_fields = b""  # the open text item's fields between sequence number and delta
        self._calls: dict[int, tuple[int, _Call]] = {}  # chat tool index -> (output index, call)
        self._next_index = 0
        self.finish: str | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def opening(self) -> list[bytes]:
        response = self._shell.snapshot("in_progress", [])
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def on_chunk(self, chunk: Mapping[str, Any], out: list[bytes] | None = None) -> list[bytes]:
        """The chunk's events appended to ``out`` (a new list by default), which is returned."""
        if out is None:
            out = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._on_text(content, out)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._on_tool_call(call, out)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def _on_text(self, text: str, out: list[bytes]) -> None:
        if self._text_id is None:
            self._text_id = new_item_id("msg")
            self._text_index = self._take_index()
            item = message_item(self._text_id, "", done=False)
            out.append(self._added(self._text_index, item))
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._text_id,
                    output_index=self._text_index,
                    content_index=0,
                    part=text_part(""),
                )
            )
            self._delta_fields = b',"item_id":%b,"output_index":%d,"content_index":0,"delta":' % (
                orjson.dumps(self._text_id),
                self._text_index,
            )
        self._text.append(text)
        seq = self._seq
        self._seq = seq + 1
        out.append(
            b"%b%d%b%b%b" % (_DELTA_START, seq, self._delta_fields, orjson.dumps(text), _DELTA_END)
        )

    def _on_tool_call(self, delta: Mapping[str, Any], out: list[bytes]) -> None:
        index = delta.get("index", 0)
        function = delta.get("function") or {}
        if index not in self._calls:
            self._close_text(out)
            call = _Call(index, delta.get("id") or new_item_id("call"), function.get("name") or "")
            position = self._take_index()
            self._calls[index] = (position, call)
            item = self._shell.tool_call_item(call.item_id, call.call_id, call.name, "", done=False)
            out.append(self._added(position, item))
        position, call = self._calls[index]
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            call.arguments.append(piece)
            if call.name not in self._shell.names.custom:
                out.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=call.item_id,
                        output_index=position,
                        delta=piece,
                    )
                )

    def _take_index(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index

    def _added(self, position: int, item: dict[str, Any]) -> bytes:
        return self._event("response.output_item.added", output_index=position, item=item)

    def _close_text(self, out: list[bytes]) -> None:
        if self._text_id is None:
            return
        text = "".join(self._text)
        ids = {"item_id": self._text_id, "output_index": self._text_index, "content_index": 0}
        out.append(self._event("response.output_text.done", **ids, text=text, logprobs=[]))
        out.append(self._event("response.content_part.done", **ids, part=text_part(text)))
        item = message_item(self._text_id, text, done=True)
        out.append(
            self._event("response.output_item.done", output_index=self._text_index, item=item)
        )
        self._output.append(item)
        self._text_id = None

    def _close_calls(self, out: list[bytes]) -> None:
        for position, call in sorted(self._calls.values(), key=lambda pc: pc[0]):
            arguments = "".join(call.arguments)
            item = self._shell.tool_call_item(
                call.item_id, call.call_id, call.name, arguments, done=True
            )
            if item["type"] == "function_call":
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=call.item_id,
                        output_index=position,
                        name=item["name"],
                        arguments=arguments,
                    )
                )
            out.append(self._event("response.output_item.done", output_index=position, item=item))
            self._output.append(item)
        self._calls.clear()

    def completed(self, usage: Mapping[str, Any] | None) -> list[bytes]:
        """The closing events; ``usage`` is the chat-shaped usage of the whole exchange."""
        out: list[bytes] = []
        self._close_text(out)
        self._close_calls(out)
        response = self._shell.snapshot(
            "completed", self._output, usage=responses_usage(usage), finish=self.finish
        )
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        out.append(self._event(kind, response=response))
        return out

    def failed(self, message: str, code: str = "server_error") -> bytes:
        error = {"code": code, "message": message}
        return self._event(
            "response.failed", response=self._shell.snapshot("failed", self._output, error=error)
        )
