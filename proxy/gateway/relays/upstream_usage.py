"""Reading token counts out of upstream responses (reference/protocols.md §1, §7).

Counts are validated here, where they enter: the ledger stores them as 64-bit integers, and one
``true`` or ``2**63`` must never reach it. A count that is not a non-negative integer below
``MAX_TOKENS`` marks the usage invalid: a number-like value (``"12"``, ``12.5``) is still
counted (rounded), anything else counts 0, and the event says ``usage_source = invalid``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cost.usage import TokenUsage

log = logging.getLogger(__name__)

# A thousand times the largest context window on offer (1M tokens): no single request's count
# comes near it, and sums of billions of them still fit a 64-bit column.
MAX_TOKENS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class ReadUsage:
    """Counts read from an upstream, and the fields whose raw value was not a valid count."""

    usage: TokenUsage
    invalid: tuple[str, ...] = ()

    @property
    def source(self) -> Literal["upstream", "invalid"]:
        return "invalid" if self.invalid else "upstream"


class _Reader:
    __slots__ = ("invalid",)

    def __init__(self) -> None:
        self.invalid: list[str] = []

    def count(self, value: Any, name: str) -> int:
        if value is None:
            return 0
        if type(value) is int and 0 <= value < MAX_TOKENS:
            return value
        counted = _coerce(value)
        self.invalid.append(name)
        log.warning(
            "upstream usage %s = %.60r is not a valid count; counted %d", name, value, counted
        )
        return counted


def _coerce(value: Any) -> int:
    """What an invalid count is taken as: its number if it has a sane one, else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return 0
    if isinstance(value, int | float) and math.isfinite(value) and 0 <= value < MAX_TOKENS:
        return round(value)
    return 0


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    return value if isinstance(value, dict) else {}


def read_openai_usage(usage: Mapping[str, Any]) -> ReadUsage:
    """From an OpenAI-shaped ``usage`` (OpenAI, Azure AI inference, vLLM, TGI, embeddings)."""
    r = _Reader()
    prompt = _details(usage, "prompt_tokens_details")
    completion = _details(usage, "completion_tokens_details")
    counts = TokenUsage(
        input_tokens=r.count(usage.get("prompt_tokens"), "prompt_tokens"),
        cache_read_tokens=r.count(prompt.get("cached_tokens"), "cached_tokens"),
        # OpenRouter-style extension; OpenAI proper reports no cache writes.
        cache_write_tokens=r.count(prompt.get("cache_write_tokens"), "cache_write_tokens"),
        output_tokens=r.count(usage.get("completion_tokens"), "completion_tokens"),
        reasoning_tokens=r.count(completion.get("reasoning_tokens"), "reasoning_tokens"),
    )
    return ReadUsage(counts, tuple(r.invalid))


def read_anthropic_usage(usage: Mapping[str, Any]) -> ReadUsage:
    """From an Anthropic ``usage``: its ``input_tokens`` excludes cache reads and writes."""
    r = _Reader()
    uncached = r.count(usage.get("input_tokens"), "input_tokens")
    read = r.count(usage.get("cache_read_input_tokens"), "cache_read_input_tokens")
    write = r.count(usage.get("cache_creation_input_tokens"), "cache_creation_input_tokens")
    write_1h = r.count(
        _details(usage, "cache_creation").get("ephemeral_1h_input_tokens"),
        "ephemeral_1h_input_tokens",
    )
    counts = TokenUsage(
        input_tokens=uncached + read + write,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=min(write_1h, write),
        output_tokens=r.count(usage.get("output_tokens"), "output_tokens"),
    )
    return ReadUsage(counts, tuple(r.invalid))


def openai_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """The counts of ``read_openai_usage``, for callers that need no verdict."""
    return read_openai_usage(usage).usage


def anthropic_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """The counts of ``read_anthropic_usage``, for callers that need no verdict."""
    return read_anthropic_usage(usage).usage


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

    def read(self) -> ReadUsage:
        return read_anthropic_usage(self.fields)


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
            total += sum(_text_len(p) for p in content)
    prompt = body.get("prompt")  # text completions
    if isinstance(prompt, str):
        total += len(prompt)
    inp = body.get("input")
    if isinstance(inp, str):
        total += len(inp)
    elif isinstance(inp, list):
        total += sum(len(x) for x in inp if isinstance(x, str))
    return total


def _text_len(part: Any) -> int:
    # Client-chosen JSON: a part or its text may be any type; only strings count.
    text = part.get("text") if isinstance(part, dict) else None
    return len(text) if isinstance(text, str) else 0
