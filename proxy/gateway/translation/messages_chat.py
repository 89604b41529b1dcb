"""Anthropic Messages ⇄ OpenAI Chat Completions: requests one way, answers the other (streams:
messages_stream.py).

The other direction of translate.py: an Anthropic client (Claude Code, the Anthropic SDKs,
LangChain's ChatAnthropic) on an OpenAI-shaped backend (Azure Mistral, vLLM, TGI, any
OpenAI-compatible server). Pure functions over parsed JSON, written here for the same reasons as
translate.py (no litellm on the hot path).

Fields with no Chat Completions equivalent are dropped, never sent on to fail upstream:
``thinking`` and thinking blocks, ``cache_control``, ``metadata``, ``service_tier``, server tools
(those without an ``input_schema``), ``anthropic-beta`` features. ``top_k`` goes to vLLM and TGI
only (both accept it). Document blocks are a 400: a PDF has no Chat Completions form.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.gateway.errors import ProxyError

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_TOP_K_BACKENDS = frozenset({"vllm", "tgi"})
_MISTRAL_ID = re.compile(r"^[A-Za-z0-9]{9}$")
_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def to_chat_request(body: Mapping[str, Any], *, model: str, backend: str) -> dict[str, Any]:
    """Translate a Messages request; ProxyError(400) for what Chat Completions cannot carry."""
    out: dict[str, Any] = {"model": model, "messages": _chat_messages(body)}
    if isinstance(body.get("max_tokens"), int):
        out["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("top_k") is not None and backend in _TOP_K_BACKENDS:
        out["top_k"] = body["top_k"]
    stops = body.get("stop_sequences")
    if isinstance(stops, list) and stops:
        out["stop"] = stops
    tools = [_chat_tool(t) for t in body.get("tools") or () if _is_client_tool(t)]
    if tools:
        out["tools"] = tools
        _set_tool_choice(out, body.get("tool_choice"))
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _chat_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        out.append({"role": "system", "content": _system_text(system, "system")})
    for i, msg in enumerate(body.get("messages") or ()):
        role, content = msg.get("role"), msg.get("content")
        if role == "system":  # Claude Code 2.x sends mid-conversation system messages
            out.append({"role": "system", "content": _system_text(content, f"messages.{i}")})
            continue
        if role not in ("user", "assistant"):
            raise ProxyError(400, f"messages.{i}.role must be user, assistant or system")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif isinstance(content, list):
            out.extend(_assistant(content, i) if role == "assistant" else _user(content, i))
        else:
            raise ProxyError(400, f"messages.{i}.content must be a string or an array of blocks")
    return out


def _system_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n\n".join(_text_of(b, where) for b in content)
    raise ProxyError(400, f"{where} must be a string or an array of text blocks")


def _text_of(block: Any, where: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise ProxyError(400, f"{where} blocks must be text blocks")
    return str(block.get("text", ""))


def _user(content: list[Any], i: int) -> list[dict[str, Any]]:
    """Tool results become ``tool`` messages, ahead of the turn's other parts (OpenAI wants
    them right after the assistant message that called the tools)."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, i)}})
        elif kind == "tool_result":
            results.append(_tool_message(block, i))
        elif kind == "document":
            raise ProxyError(400, f"messages.{i}: document blocks need an anthropic deployment")
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise ProxyError(400, f"messages.{i}: unsupported content block type {kind!r}")
    if not parts:
        return results
    if all(p["type"] == "text" for p in parts):
        return [*results, {"role": "user", "content": "".join(p["text"] for p in parts)}]
    return [*results, {"role": "user", "content": parts}]


def _image_url(block: Mapping[str, Any], i: int) -> str:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if isinstance(source, dict) and source.get("type") == "url":
        return str(source.get("url", ""))
    raise ProxyError(400, f"messages.{i}: image source must be base64 or url")


def _tool_message(block: Mapping[str, Any], i: int) -> dict[str, Any]:
    content = block.get("content")
    if isinstance(content, list):
        text = "".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    else:
        text = "" if content is None else str(content)
    if block.get("is_error") is True:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": call_id(block.get("tool_use_id")), "content": text}


def _assistant(content: list[Any], i: int) -> list[dict[str, Any]]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": call_id(block.get("id")),
                    "type": "function",
                    "function": {"name": str(block.get("name", "")), "arguments": arguments},
                }
            )
        elif kind not in ("thinking", "redacted_thinking"):
            raise ProxyError(400, f"messages.{i}: unsupported assistant block type {kind!r}")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        msg["tool_calls"] = calls
    elif msg["content"] is None:
        msg["content"] = ""
    return [msg]


def call_id(value: Any) -> str:
    """A tool call id every OpenAI-shaped server accepts: Mistral models on vLLM and Azure take
    only 9 alphanumerics, and a conversation that began on Claude carries ``toolu_…`` ids (a
    95/5 split moves Claude Code between backends mid-conversation). Other ids map to a hash,
    the same on both sides of the call, so the pairing survives."""
    raw = str(value or "")
    if _MISTRAL_ID.match(raw):
        return raw
    digest = int.from_bytes(hashlib.blake2b(raw.encode(), digest_size=8).digest(), "big")
    out = []
    for _ in range(9):
        digest, rest = divmod(digest, 62)
        out.append(_ALNUM[rest])
    return "".join(out)


def _is_client_tool(tool: Any) -> bool:
    return isinstance(tool, dict) and isinstance(tool.get("input_schema"), dict)


def _chat_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.get("name"), "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _set_tool_choice(out: dict[str, Any], choice: Any) -> None:
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def anthropic_usage_from_chat(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Anthropic's usage counts input without cache reads; OpenAI's prompt_tokens includes them."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    cached = cached if isinstance(cached, int) and cached > 0 else 0
    prompt = usage.get("prompt_tokens")
    prompt = prompt if isinstance(prompt, int) and prompt > 0 else 0
    output = usage.get("completion_tokens")
    return {
        "input_tokens": max(0, prompt - cached),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output if isinstance(output, int) and output > 0 else 0,
    }


def stop_of(choice: Mapping[str, Any], stops: list[str]) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence): vLLM names the matched stop string in ``stop_reason``."""
    matched = choice.get("stop_reason")
    if isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    return STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"), None


def to_messages_response(
    data: Mapping[str, Any], *, model: str, stop_sequences: list[str]
) -> dict[str, Any]:
    """A Chat Completions answer as an Anthropic message (``model`` is the client's name)."""
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{len(content)}",
                "name": function.get("name", ""),
                "input": parse_arguments(function.get("arguments")),
            }
        )
    reason, sequence = stop_of(choice, stop_sequences)
    return {
        "id": f"msg_{data.get('id') or 'chat'}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage_from_chat(data.get("usage")),
    }


def parse_arguments(raw: Any) -> Any:
    """A tool call's JSON arguments as an object; what is not a JSON object is kept as text."""
    if not isinstance(raw, str) or not raw:
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"arguments": raw}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}
