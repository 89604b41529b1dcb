"""Anthropic Messages bodies and SSE events, as api.anthropic.com shapes them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from proxy.simulated.directives import (
    TOOL_ARGUMENT_PARTS,
    TOOL_CALL_TOKENS,
    TOOL_INPUT,
    Directives,
    Reply,
)
from proxy.simulated.responses import StreamScript, new_id, sse_event
from proxy.simulated.schema_sample import argument_parts

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}
_STREAM_ERROR_AFTER = 2


def error_body(status: int, message: str, request_id: str | None) -> dict[str, Any]:
    error_type = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


@dataclass(frozen=True, slots=True)
class MessagePlan:
    """Everything about one message, decided before the first byte is sent."""

    model: str
    prompt_tokens: int
    directives: Directives
    reply: Reply
    tool_name: str | None
    tool_input: dict[str, Any] = field(default_factory=lambda: dict(TOOL_INPUT))

    @property
    def output_tokens(self) -> int:
        return TOOL_CALL_TOKENS if self.tool_name else len(self.reply.words)

    @property
    def stop_reason(self) -> str:
        return "tool_use" if self.tool_name else _STOP_REASONS[self.reply.finish]

    @property
    def uncached_input(self) -> int:
        d = self.directives
        return max(0, self.prompt_tokens - d.cache_read - d.cache_write - d.cache_write_1h)

    def usage(self, output_tokens: int, *, hide_input: bool = False) -> dict[str, Any]:
        d = self.directives
        return {
            "input_tokens": 0 if hide_input else self.uncached_input,
            "cache_creation_input_tokens": d.cache_write + d.cache_write_1h,
            "cache_read_input_tokens": d.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": d.cache_write,
                "ephemeral_1h_input_tokens": d.cache_write_1h,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def content_block(self) -> dict[str, Any]:
        if self.tool_name:
            return {
                "type": "tool_use",
                "id": new_id("toolu_"),
                "name": self.tool_name,
                "input": self.tool_input,
            }
        return {"type": "text", "text": self.reply.text}


def message_body(plan: MessagePlan, msg_id: str) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [plan.content_block()],
        "stop_reason": plan.stop_reason,
        "stop_sequence": plan.reply.stop_sequence,
        "usage": plan.usage(plan.output_tokens),
    }


def stream_script(plan: MessagePlan, msg_id: str) -> StreamScript:
    script = StreamScript()
    hide_input = plan.directives.input_in_delta
    start = {
        **message_body(plan, msg_id),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        # The real API reports a token or so of output up front, then the cumulative total.
        "usage": plan.usage(1, hide_input=hide_input),
    }
    script.add(sse_event("message_start", {"type": "message_start", "message": start}))
    block = plan.content_block()
    if plan.tool_name:
        block["input"] = {}
        arguments = json.dumps(plan.tool_input)
        parts = TOOL_ARGUMENT_PARTS if plan.tool_input == TOOL_INPUT else argument_parts(arguments)
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in parts]
    else:
        block["text"] = ""
        deltas = [{"type": "text_delta", "text": piece} for piece in plan.reply.chunks()]
    opening = {"type": "content_block_start", "index": 0, "content_block": block}
    script.add(sse_event("content_block_start", opening))
    script.add(sse_event("ping", {"type": "ping"}))
    error_type = plan.directives.stream_error
    limit = len(deltas) if error_type is None else min(_STREAM_ERROR_AFTER, len(deltas))
    for delta in deltas[:limit]:
        event = {"type": "content_block_delta", "index": 0, "delta": delta}
        script.add(sse_event("content_block_delta", event), content=True)
    if error_type is not None:
        error = {"type": error_type, "message": f"Simulated mid-stream {error_type}"}
        script.add(sse_event("error", {"type": "error", "error": error}))
        return script
    script.add(sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    usage: dict[str, Any] = {"output_tokens": plan.output_tokens}
    if hide_input:
        usage["input_tokens"] = plan.uncached_input
    ending = {"stop_reason": plan.stop_reason, "stop_sequence": plan.reply.stop_sequence}
    script.add(
        sse_event("message_delta", {"type": "message_delta", "delta": ending, "usage": usage})
    )
    script.add(sse_event("message_stop", {"type": "message_stop"}))
    return script
