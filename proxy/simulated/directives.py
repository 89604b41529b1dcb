"""Control directives embedded in prompts, and the deterministic "model" they steer.

Token counts here are word counts, not real tokenizer output: the fakes must be
reproducible across machines and fast, and tests only need numbers that follow
from the request by a rule they can recompute.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_WORDS = 12
EMBEDDING_DIMENSIONS = 8
TOOL_ARGUMENTS = '{"query": "simulated"}'
# Tools a fake never picks by itself: each starts another agent (Claude Code's Agent, formerly
# Task), whose requests the fake would answer with the same call again, without end.
AGENT_TOOLS = frozenset({"Agent", "Task"})
# Split so that streaming clients have to reassemble arguments from several deltas.
TOOL_ARGUMENT_PARTS = ('{"query": ', '"simulated"}')
TOOL_INPUT: dict[str, Any] = {"query": "simulated"}
TOOL_CALL_TOKENS = 5

_DIRECTIVE = re.compile(r"\[\[fake:([a-z0-9_]+)(?:=([^\]]*))?\]\]")
_INT_KEYS = frozenset(
    {"words", "cut_after", "cached", "reasoning", "cache_read", "cache_write", "cache_write_1h"}
)
_FLOAT_KEYS = frozenset({"delay", "chunk_delay"})

FinishReason = Literal["stop", "length", "stop_sequence"]


class DirectiveError(ValueError):
    """A `[[fake:...]]` directive is unknown or malformed.

    Surfaced as a 400 so that a typo in a test prompt fails loudly instead of
    silently running the default scenario.
    """


@dataclass(frozen=True, slots=True)
class Directives:
    status: int | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    words: int = DEFAULT_WORDS
    cut_after: int | None = None
    stream_error: str | None = None
    # None means "not requested", which some flavors serialize differently from 0.
    cached: int | None = None
    reasoning: int | None = None
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    input_in_delta: bool = False


def parse_directives(texts: Iterable[str]) -> Directives:
    """Later directives override earlier ones, so the newest message wins."""
    values: dict[str, Any] = {}
    for text in texts:
        for match in _DIRECTIVE.finditer(text):
            key, raw = match.group(1), match.group(2)
            values[key] = _convert(key, raw)
    return Directives(**values)


def _convert(key: str, raw: str | None) -> Any:
    if key == "input_in_delta":
        return raw is None or raw.lower() in ("1", "true", "yes")
    if key not in _INT_KEYS and key not in _FLOAT_KEYS and key not in ("status", "stream_error"):
        raise DirectiveError(f"unknown fake directive '{key}'")
    if not raw:
        raise DirectiveError(f"fake directive '{key}' needs a value")
    if key == "stream_error":
        return raw
    try:
        number = float(raw) if key in _FLOAT_KEYS else int(raw)
    except ValueError as exc:
        raise DirectiveError(f"fake directive {key}={raw}: not a number") from exc
    if key == "status" and not 400 <= number <= 599:
        raise DirectiveError(f"fake directive status={raw}: expected 400-599")
    if number < 0:
        raise DirectiveError(f"fake directive {key}={raw}: must not be negative")
    return number


def count_words(texts: Iterable[str]) -> int:
    return sum(len(text.split()) for text in texts)


def _text_parts(content: Any) -> list[str]:
    """Text of a message `content`: a string, or a list of typed parts/blocks."""
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "tool_result":
                texts.extend(_text_parts(part.get("content")))
    return texts


def message_texts(messages: Any, system: Any = None) -> list[str]:
    """All prompt text of an OpenAI or Anthropic request, system prompt first."""
    texts = _text_parts(system)
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                texts.extend(_text_parts(message.get("content")))
    return texts


def prompt_tokens(texts: Iterable[str], message_count: int) -> int:
    return count_words(texts) + message_count


@dataclass(frozen=True, slots=True)
class Reply:
    words: tuple[str, ...]
    finish: FinishReason
    stop_sequence: str | None = None

    def chunks(self) -> list[str]:
        """Streamed pieces: one word each, joined by the leading space of the next."""
        return [word if i == 0 else " " + word for i, word in enumerate(self.words)]

    @property
    def text(self) -> str:
        return " ".join(self.words)


def generate_reply(
    flavor: str,
    model: str,
    directives: Directives,
    max_tokens: int | None,
    stops: Sequence[str] = (),
) -> Reply:
    vocabulary = f"Simulated reply from the {flavor} backend for model {model}.".split()
    words: list[str] = []
    for i in range(directives.words):
        word = vocabulary[i % len(vocabulary)]
        if word in stops:
            return Reply(tuple(words), "stop_sequence", word)
        # The cap only bites when the model still had something to say.
        if max_tokens is not None and len(words) >= max_tokens:
            return Reply(tuple(words), "length")
        words.append(word)
    return Reply(tuple(words), "stop")


def embedding_vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [
        round(int.from_bytes(digest[i * 4 : i * 4 + 4], "big") / 2**31 - 1.0, 6)
        for i in range(EMBEDDING_DIMENSIONS)
    ]


def encode_embedding(vector: list[float], encoding_format: Any) -> list[float] | str:
    # The openai SDK asks for base64 by default and decodes little-endian float32.
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
