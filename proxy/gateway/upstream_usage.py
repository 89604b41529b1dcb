"""Reading token counts out of upstream responses (reference/protocols.md §1, §7)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cost.usage import TokenUsage


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    return value if isinstance(value, dict) else {}


def openai_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """From an OpenAI-shaped ``usage`` (OpenAI, Azure AI inference, vLLM, TGI, embeddings)."""
    prompt = _details(usage, "prompt_tokens_details")
    completion = _details(usage, "completion_tokens_details")
    return TokenUsage(
        input_tokens=_int(usage.get("prompt_tokens")),
        cache_read_tokens=_int(prompt.get("cached_tokens")),
        # OpenRouter-style extension; OpenAI proper reports no cache writes.
        cache_write_tokens=_int(prompt.get("cache_write_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        reasoning_tokens=_int(completion.get("reasoning_tokens")),
    )


def anthropic_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """From an Anthropic ``usage``: its ``input_tokens`` excludes cache reads and writes."""
    uncached = _int(usage.get("input_tokens"))
    read = _int(usage.get("cache_read_input_tokens"))
    write = _int(usage.get("cache_creation_input_tokens"))
    write_1h = _int(_details(usage, "cache_creation").get("ephemeral_1h_input_tokens"))
    return TokenUsage(
        input_tokens=uncached + read + write,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=min(write_1h, write),
        output_tokens=_int(usage.get("output_tokens")),
    )


class AnthropicUsageTracker:
    """Input and cache counts from ``message_start``; every later ``message_delta`` overwrites
    the fields it carries (its counts are cumulative, so they are never added)."""

    __slots__ = ("fields", "seen_delta", "seen_start")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.seen_start = False
        self.seen_delta = False

    def on_event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage, dict):
                self.fields.update(usage)
                self.seen_start = True
        elif kind == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, dict):
                self.fields.update({k: v for k, v in usage.items() if v is not None})
                self.seen_delta = True

    def usage(self) -> TokenUsage:
        return anthropic_usage(self.fields)


def estimate_tokens(text_chars: int) -> int:
    """A rough count for when an upstream never reported usage: about four characters a token."""
    return (text_chars + 3) // 4


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters of text in a chat or embeddings request (for estimates only)."""
    total = 0
    for msg in body.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    prompt = body.get("prompt")  # text completions
    if isinstance(prompt, str):
        total += len(prompt)
    inp = body.get("input")
    if isinstance(inp, str):
        total += len(inp)
    elif isinstance(inp, list):
        total += sum(len(x) for x in inp if isinstance(x, str))
    return total
