"""Responses request → Chat Completions request.

Input items become chat messages in order: messages (text, image and output-text parts),
``function_call`` / ``custom_tool_call`` items become the assistant's ``tool_calls`` and their
outputs ``tool`` messages; ``reasoning`` items are dropped (their encrypted content is only
readable by OpenAI). Tools of type ``function`` pass through, ``custom`` (free-form) tools become a
function with one ``input`` string, ``namespace`` groups are flattened; hosted tools no backend
here can run are refused by type, except ``web_search``, which Codex sends on every turn and which
is dropped. Nothing is stored, so ``previous_response_id`` and ``item_reference`` are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.gateway.errors import ProxyError

NAMESPACE_SEPARATOR = "__"
_DROPPED_TOOLS = frozenset({"web_search", "web_search_preview"})
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_CHOICES = ("auto", "none", "required")


def invalid(message: str, code: str = "invalid_request") -> ProxyError:
    return ProxyError(400, message, code=code)


@dataclass(slots=True)
class ToolNames:
    """How chat function names map back to Responses tool calls."""

    custom: set[str] = field(default_factory=set)
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(slots=True)
class ChatRequest:
    body: dict[str, Any]
    tools: ToolNames


def to_chat_request(body: dict[str, Any]) -> ChatRequest:
    """The chat body for ``body``; ProxyError(400) names what cannot be served."""
    for name in ("previous_response_id", "prompt"):
        if body.get(name) is not None:
            raise invalid(
                f"{name} is not supported: tokenmeter does not store responses or prompts; "
                "send the whole conversation in input",
                code="unsupported_parameter",
            )
    if body.get("background") is True:
        raise invalid("background responses are not supported", code="unsupported_parameter")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise invalid("stream must be a boolean")
    names = ToolNames()
    messages = _instructions(body.get("instructions")) + _input_messages(body.get("input"))
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("stream"):
        out["stream"] = True
    _copy_sampling(body, out)
    tools = _tools(body.get("tools"), names)
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), names)
        if choice is not None:
            out["tool_choice"] = choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        out["response_format"] = fmt
    for name in ("user", "safety_identifier"):
        if isinstance(body.get(name), str):
            out[name] = body[name]
    return ChatRequest(out, names)


def _copy_sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise invalid("max_output_tokens must be an integer >= 1")
        out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise invalid(f"{name} must be a number")
        out[name] = value
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        out["reasoning_effort"] = reasoning["effort"]


def _instructions(value: Any) -> list[dict[str, Any]]:
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        raise invalid("instructions must be a string")
    return [{"role": "system", "content": value}]


def _input_messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        if not value:
            raise invalid("input must not be empty")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise invalid("input must be a non-empty string or array of items")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise invalid(f"input.{i} must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, i))
        elif kind in ("function_call", "custom_tool_call"):
            _append_tool_call(messages, item, i)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            messages.append(_tool_output(item, i))
        elif kind == "reasoning":
            continue
        else:
            raise invalid(f"input.{i}: items of type {kind!r} are not supported")
    if not messages:
        raise invalid("input has no message to answer")
    return messages


def _message(item: dict[str, Any], i: int) -> dict[str, Any]:
    role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise invalid(f"input.{i}.role {item.get('role')!r} is not supported")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise invalid(f"input.{i}.content must be a string or an array")
    parts = [_part(part, i) for part in content]
    if role != "user" or all(p["type"] == "text" for p in parts):
        # Assistant, system and tool turns take text only; most chat templates want a string.
        texts = [p.get("text", "") for p in parts if p["type"] == "text"]
        if len(texts) != len(parts):
            raise invalid(f"input.{i}: only user messages may carry images")
        return {"role": role, "content": "".join(texts) if role != "user" else parts}
    return {"role": role, "content": parts}


def _part(part: Any, i: int) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise invalid(f"input.{i}: input_image needs image_url (file ids are not supported)")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise invalid(f"input.{i}: content parts of type {kind!r} are not supported")


def _append_tool_call(messages: list[dict[str, Any]], item: dict[str, Any], i: int) -> None:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise invalid(f"input.{i}: {item.get('type')} needs call_id and name")
    if item.get("type") == "custom_tool_call":
        arguments = orjson.dumps({"input": str(item.get("input", ""))}).decode()
    else:
        arguments = item.get("arguments") or "{}"
        if not isinstance(arguments, str):
            raise invalid(f"input.{i}.arguments must be a string of JSON")
    if isinstance(item.get("namespace"), str):
        name = item["namespace"] + NAMESPACE_SEPARATOR + name
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        if last.get("content") == "":
            last["content"] = None
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_output(item: dict[str, Any], i: int) -> dict[str, Any]:
    call_id = item.get("call_id")
    if not isinstance(call_id, str):
        raise invalid(f"input.{i}: {item.get('type')} needs call_id")
    output = item.get("output", "")
    if isinstance(output, list):
        output = "".join(
            str(p.get("text", "")) for p in output if isinstance(p, dict) and "text" in p
        )
    elif not isinstance(output, str):
        output = orjson.dumps(output).decode()
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _tools(value: Any, names: ToolNames, namespace: str | None = None) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("tools must be an array")
    out: list[dict[str, Any]] = []
    for tool in value:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind in _DROPPED_TOOLS:
            continue
        if kind == "namespace" and namespace is None:
            out += _tools(tool.get("tools"), names, namespace=_name(tool))
        elif kind in ("function", "custom"):
            out.append(_function(tool, kind, names, namespace))
        else:
            raise invalid(
                f"tools of type {kind!r} are not supported: only function, custom and namespace "
                "tools can be served by this gateway's backends",
                code="unsupported_tool",
            )
    return out


def _name(tool: dict[str, Any]) -> str:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise invalid(f"tools of type {tool.get('type')!r} need a name")
    return name


def _function(
    tool: dict[str, Any], kind: str, names: ToolNames, namespace: str | None
) -> dict[str, Any]:
    name = _name(tool)
    if namespace is not None:
        full = namespace + NAMESPACE_SEPARATOR + name
        names.namespaced[full] = (namespace, name)
        name = full
    if kind == "custom":
        names.custom.add(name)
        parameters: Any = {
            "type": "object",
            "properties": {"input": {"type": "string"}},
            "required": ["input"],
        }
    else:
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
    function: dict[str, Any] = {"name": name, "parameters": parameters}
    if tool.get("description"):
        function["description"] = tool["description"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(value: Any, names: ToolNames) -> Any:
    if value is None or value in _CHOICES:
        return value
    if isinstance(value, dict) and value.get("type") in ("function", "custom"):
        name = value.get("name")
        if isinstance(name, str):
            return {"type": "function", "function": {"name": name}}
    if isinstance(value, dict) and value.get("type") == "allowed_tools":
        return "required" if value.get("mode") == "required" else "auto"
    raise invalid(f"tool_choice {value!r} is not supported")


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise invalid("text must be an object")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt.get("schema"), dict):
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        schema.setdefault("name", "response")
        return {"type": "json_schema", "json_schema": schema}
    raise invalid(f"text.format {fmt!r} is not supported")
