"""Chat completion bodies and stream frames as vLLM, Azure AI inference and TGI shape them.

The three servers agree on the OpenAI schema but differ in details a metering
proxy trips over: where usage appears in a stream, whether `usage` is null or
absent, whether details objects exist, and what the ids look like.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from proxy.simulated.directives import (
    TOOL_ARGUMENT_PARTS,
    TOOL_ARGUMENTS,
    TOOL_CALL_TOKENS,
    Directives,
    Reply,
)
from proxy.simulated.responses import SSE_DONE, StreamScript, new_id, sse_data
from proxy.simulated.schema_sample import argument_parts

Flavor = Literal["vllm", "azure", "tgi"]
TGI_FINGERPRINT = "3.3.6-native"


@dataclass(frozen=True, slots=True)
class ChatPlan:
    """Everything about one chat completion, decided before the first byte is sent."""

    flavor: Flavor
    model: str
    prompt_tokens: int
    directives: Directives
    reply: Reply
    n: int = 1
    tool_name: str | None = None
    include_usage: bool = False
    continuous_usage: bool = False
    tool_arguments: str = TOOL_ARGUMENTS
    # TGI leaves ids empty; the others mint one per completion.
    completion_id: str = field(default_factory=lambda: new_id("chatcmpl-"))
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def tokens_per_choice(self) -> int:
        return TOOL_CALL_TOKENS if self.tool_name else len(self.reply.words)

    @property
    def finish_reason(self) -> str:
        if self.tool_name:
            return "tool_calls"
        return "length" if self.reply.finish == "length" else "stop"

    def usage(self, emitted: int) -> dict[str, Any]:
        directives = self.directives
        completion = emitted + (directives.reasoning or 0)
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + completion,
            "completion_tokens": completion,
        }
        if self.flavor == "tgi":
            return usage
        cached = None if directives.cached is None else min(directives.cached, self.prompt_tokens)
        if self.flavor == "vllm":
            # vLLM always serializes the key; it is null unless prefix caching reports.
            usage["prompt_tokens_details"] = None if cached is None else {"cached_tokens": cached}
        elif cached is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        if directives.reasoning is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": directives.reasoning}
        return usage


def _envelope(plan: ChatPlan, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    if plan.flavor == "tgi":
        return {
            "object": obj,
            "id": "",
            "created": plan.created,
            "model": plan.model,
            "system_fingerprint": TGI_FINGERPRINT,
            "choices": choices,
        }
    return {
        "id": plan.completion_id,
        "object": obj,
        "created": plan.created,
        "model": plan.model,
        "choices": choices,
    }


def _choice(plan: ChatPlan, index: int, key: str, value: Any, finish: str | None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, key: value, "logprobs": None, "finish_reason": finish}
    if plan.flavor == "vllm" and (finish is not None or key == "message"):
        choice["stop_reason"] = plan.reply.stop_sequence
    return choice


def completion_body(plan: ChatPlan) -> dict[str, Any]:
    choices = []
    for index in range(plan.n):
        message: dict[str, Any] = {"role": "assistant", "content": plan.reply.text}
        if plan.tool_name:
            function = {"name": plan.tool_name, "arguments": plan.tool_arguments}
            message["content"] = None
            message["tool_calls"] = [
                {"id": new_id("call_"), "type": "function", "function": function}
            ]
        elif plan.flavor == "vllm":
            message["tool_calls"] = []
        choices.append(_choice(plan, index, "message", message, plan.finish_reason))
    body = _envelope(plan, "chat.completion", choices)
    body["usage"] = plan.usage(plan.n * plan.tokens_per_choice)
    return body


def _content_deltas(plan: ChatPlan, call_id: str) -> list[tuple[dict[str, Any], int]]:
    """(delta, completion tokens it stands for) for one choice."""
    if not plan.tool_name:
        return [({"content": piece}, 1) for piece in plan.reply.chunks()]
    opening = {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": plan.tool_name, "arguments": ""},
    }
    deltas: list[tuple[dict[str, Any], int]] = [({"tool_calls": [opening]}, 1)]
    parts = (
        TOOL_ARGUMENT_PARTS
        if plan.tool_arguments == TOOL_ARGUMENTS
        else argument_parts(plan.tool_arguments)
    )
    share = (TOOL_CALL_TOKENS - 1) // len(parts)
    for part in parts:
        deltas.append(({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}, share))
    return deltas


def stream_script(plan: ChatPlan) -> StreamScript:
    script = StreamScript()
    emitted = 0

    def frame(choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> bytes:
        chunk = _envelope(plan, "chat.completion.chunk", choices)
        if plan.flavor != "azure" or usage is not None:
            # vLLM and TGI serialize `usage: null`; Azure leaves the key out.
            chunk["usage"] = usage
        return sse_data(chunk)

    def running() -> dict[str, Any] | None:
        return plan.usage(emitted) if plan.continuous_usage else None

    # TGI has no role-only opening chunk; it repeats the role in every delta instead.
    role = {"role": "assistant"} if plan.flavor == "tgi" else {}
    if plan.flavor != "tgi":
        for index in range(plan.n):
            opening = {"role": "assistant", "content": ""}
            script.add(frame([_choice(plan, index, "delta", opening, None)], running()))
    per_choice = [_content_deltas(plan, new_id("call_")) for _ in range(plan.n)]
    for step in range(len(per_choice[0])):
        for index, deltas in enumerate(per_choice):
            delta, tokens = deltas[step]
            emitted += tokens
            choice = _choice(plan, index, "delta", {**role, **delta}, None)
            script.add(frame([choice], running()), content=True)
    for index in range(plan.n):
        closing = {**role, "content": ""} if role else {}
        last = index == plan.n - 1
        # Azure (as observed for Mistral) puts the whole usage on the finishing chunk.
        usage = plan.usage(emitted) if plan.flavor == "azure" and last else running()
        script.add(frame([_choice(plan, index, "delta", closing, plan.finish_reason)], usage))
    if plan.include_usage and plan.flavor != "azure":
        script.add(frame([], plan.usage(emitted)))
    script.add(SSE_DONE)
    return script
