"""The response object and its output items, built from Chat Completions results."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.gateway.responses.request import ToolNames

_ECHOED = ("instructions", "max_output_tokens", "temperature", "top_p", "tool_choice", "tools")
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseShell:
    """What every snapshot of one response shares: id, model, the request's echoed settings."""

    __slots__ = ("created_at", "fields", "id", "names")

    def __init__(self, body: Mapping[str, Any], *, model: str, names: ToolNames) -> None:
        self.id = new_item_id("resp")
        self.created_at = int(time.time())
        self.names = names
        text = body.get("text") if isinstance(body.get("text"), dict) else None
        self.fields: dict[str, Any] = {
            "model": model,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": False,  # nothing is kept: see docs/clients.md
            "text": text or {"format": {"type": "text"}},
            "truncation": "disabled",
            "metadata": body.get("metadata") or {},
            "user": body.get("user"),
        }
        for name in _ECHOED:
            self.fields[name] = body.get(name)
        self.fields["tool_choice"] = body.get("tool_choice") or "auto"
        self.fields["tools"] = body.get("tools") or []

    def snapshot(
        self,
        status: str,
        output: list[dict[str, Any]],
        *,
        usage: dict[str, Any] | None = None,
        finish: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        reason = _INCOMPLETE.get(finish or "")
        if reason and status == "completed":
            status = "incomplete"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": reason} if reason else None,
            "output": output,
            "usage": usage,
            **self.fields,
        }

    def tool_call_item(
        self, item_id: str, call_id: str, name: str, arguments: str, *, done: bool
    ) -> dict[str, Any]:
        """A ``function_call`` item, or ``custom_tool_call`` for a custom tool's function."""
        status = "completed" if done else "in_progress"
        namespace = None
        if name in self.names.namespaced:
            namespace, name = self.names.namespaced[name]
        if name in self.names.custom:
            item: dict[str, Any] = {"id": item_id, "type": "custom_tool_call", "status": status}
            item.update(call_id=call_id, name=name, input=_custom_input(arguments) if done else "")
            return item
        item = {"id": item_id, "type": "function_call", "status": status, "call_id": call_id}
        item.update(name=name, arguments=arguments)
        if namespace is not None:
            item["namespace"] = namespace
        return item


def _custom_input(arguments: str) -> str:
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return arguments
    value = parsed.get("input") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else arguments


def message_item(item_id: str, text: str, *, done: bool) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": "completed" if done else "in_progress",
        "role": "assistant",
        "content": [text_part(text)] if done else [],
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def responses_usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Chat ``usage`` in the Responses shape (input includes cached tokens in both)."""
    if not isinstance(usage, Mapping):
        return None
    prompt = usage.get("prompt_tokens_details")
    completion = usage.get("completion_tokens_details")
    inp = usage.get("prompt_tokens") or 0
    out = usage.get("completion_tokens") or 0
    return {
        "input_tokens": inp,
        "input_tokens_details": {
            "cached_tokens": (prompt.get("cached_tokens") if isinstance(prompt, dict) else 0) or 0
        },
        "output_tokens": out,
        "output_tokens_details": {
            "reasoning_tokens": (
                completion.get("reasoning_tokens") if isinstance(completion, dict) else 0
            )
            or 0
        },
        "total_tokens": inp + out,
    }


def from_chat_completion(shell: ResponseShell, completion: Mapping[str, Any]) -> dict[str, Any]:
    """A complete response object from a non-streaming chat completion."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(message_item(new_item_id("msg"), text, done=True))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            shell.tool_call_item(
                new_item_id("fc"),
                call.get("id") or new_item_id("call"),
                function.get("name") or "",
                function.get("arguments") or "",
                done=True,
            )
        )
    usage = responses_usage(completion.get("usage"))
    return shell.snapshot("completed", output, usage=usage, finish=choice.get("finish_reason"))
