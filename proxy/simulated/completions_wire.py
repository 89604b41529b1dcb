"""Legacy text completions (``/v1/completions``) as vLLM and TGI shape them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from proxy.simulated.directives import Reply
from proxy.simulated.responses import SSE_DONE, StreamScript, new_id, sse_data


@dataclass(frozen=True, slots=True)
class CompletionPlan:
    model: str
    prompt_tokens: int
    reply: Reply
    include_usage: bool = False
    completion_id: str = field(default_factory=lambda: new_id("cmpl-"))
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def finish_reason(self) -> str:
        return "length" if self.reply.finish == "length" else "stop"

    def usage(self) -> dict[str, Any]:
        out = len(self.reply.words)
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + out,
            "completion_tokens": out,
        }

    def envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }


def _choice(text: str, finish: str | None) -> dict[str, Any]:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}


def completion_text_body(plan: CompletionPlan) -> dict[str, Any]:
    body = plan.envelope([_choice(plan.reply.text, plan.finish_reason)])
    body["usage"] = plan.usage()
    return body


def completion_stream_script(plan: CompletionPlan) -> StreamScript:
    script = StreamScript()
    for piece in plan.reply.chunks():
        script.add(sse_data({**plan.envelope([_choice(piece, None)]), "usage": None}), content=True)
    script.add(sse_data({**plan.envelope([_choice("", plan.finish_reason)]), "usage": None}))
    if plan.include_usage:
        script.add(sse_data({**plan.envelope([]), "usage": plan.usage()}))
    script.add(SSE_DONE)
    return script
