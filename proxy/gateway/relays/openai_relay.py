"""OpenAI-shaped upstreams (vLLM, TGI, Azure AI inference, any OpenAI-compatible server).

The request body goes through with its model renamed; the response goes back byte for byte,
except that on streams we always ask the upstream for usage and hide the usage-only chunk
(and any usage on other chunks) from a client that did not ask for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response

from cost.usage import TokenUsage
from metering.events import Status
from proxy.gateway.call import Call
from proxy.gateway.deployments import Deployment
from proxy.gateway.errors import journal_unavailable
from proxy.gateway.relays.exchange import (
    DRAIN_MESSAGE,
    ChatPayloads,
    error_event,
    has,
    is_chat_completion,
    is_embeddings,
    parse_answer,
    raise_for_upstream,
    read_timed,
    scrub_event,
    send_timed,
)
from proxy.gateway.relays.streaming import Direct, EventStreamResponse
from proxy.gateway.relays.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout
from proxy.gateway.relays.upstream_usage import estimate_tokens, prompt_chars, read_openai_usage

log = logging.getLogger(__name__)
_DONE = b"data: [DONE]\n\n"


async def forward_json(
    upstream: Upstream, call: Call, dep: Deployment, path: str, body: dict[str, Any]
) -> Response:
    """Non-streaming chat or text completion, or embeddings."""
    resp = await send_timed(upstream, call, dep, path, orjson.dumps(body))
    await raise_for_upstream(resp, call, dep)
    data = await read_timed(resp, call, dep)
    embeddings = path == "/embeddings"
    parsed = parse_answer(
        data,
        call,
        dep,
        valid=is_embeddings if embeddings else is_chat_completion,
        what="an embeddings list" if embeddings else "a chat completion",
    )
    usage, source = usage_of(parsed, body)
    if not call.finish("ok", 200, usage, source=source):
        raise journal_unavailable()
    return Response(data, status_code=200, media_type="application/json")


def usage_of(parsed: Any, body: dict[str, Any]) -> tuple[TokenUsage, Any]:
    """A parsed answer's usage as the upstream counted it, else the prompt estimated."""
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    if isinstance(usage, dict):
        read = read_openai_usage(usage)
        return read.usage, read.source
    return TokenUsage(input_tokens=estimate_tokens(prompt_chars(body))), "estimated"


async def forward_stream(
    upstream: Upstream,
    call: Call,
    dep: Deployment,
    body: dict[str, Any],
    *,
    path: str = "/chat/completions",
) -> EventStreamResponse:
    client_options = body.get("stream_options")
    options = client_options if isinstance(client_options, dict) else {}
    view = _UsageView(
        wants=options.get("include_usage") is True,
        continuous=options.get("continuous_usage_stats") is True,
    )
    body["stream_options"] = {**options, "include_usage": True}
    resp = await send_timed(upstream, call, dep, path, orjson.dumps(body))
    await raise_for_upstream(resp, call, dep)
    direct = Direct()
    return EventStreamResponse(
        _relay(resp, call, body, view, direct), on_cut=error_event(DRAIN_MESSAGE), direct=direct
    )


class _UsageView:
    """What the client sees of usage: the OpenAI contract whatever the upstream does.

    A client that asked for ``include_usage`` gets exactly one usage-only chunk before
    ``[DONE]`` (synthesised when the upstream, like Azure, put usage on a content chunk);
    a client that did not gets no usage at all. Usage on content chunks is kept only for a client
    that asked for vLLM's ``continuous_usage_stats``.
    """

    __slots__ = ("broken", "continuous", "last", "sent", "template", "wants")

    def __init__(self, *, wants: bool, continuous: bool) -> None:
        self.wants = wants
        self.continuous = continuous
        self.last: dict[str, Any] | None = None
        self.sent = False
        self.broken = False  # a usage chunk was not JSON: the event's counts are estimates
        self.template: dict[str, Any] = {}

    def filter(self, payload: bytes) -> bytes:
        """Record the chunk's usage; return what to forward (b"" to drop the chunk)."""
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.broken = True  # skipped: the client would choke on it as we would
            return b""
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if not usage:
            return payload
        self.last = usage
        if not obj.get("choices"):
            self.sent = self.wants
            return payload if self.wants else b""
        if self.wants and self.continuous:
            return payload
        self.template = {k: obj[k] for k in ("id", "object", "created", "model") if k in obj}
        obj["usage"] = None
        return orjson.dumps(obj)

    def closing_chunk(self) -> bytes:
        if not self.wants or self.sent or self.last is None:
            return b""
        chunk = {**self.template, "choices": [], "usage": self.last}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


class _Frames:
    """The relayed events of one stream: usage filtered for the client (``_UsageView``), each
    payload framed as an event, in-stream errors scrubbed, the relayed chunks counted."""

    __slots__ = ("call", "chunks", "view")

    def __init__(self, call: Call, view: _UsageView) -> None:
        self.call = call
        self.view = view
        self.chunks = 0

    def frame(self, payloads: list[bytes]) -> bytes:
        call = self.call
        out = []
        for payload in payloads:
            if has(payload, b'"usage"') and not has(payload, b'"usage":null'):
                payload = self.view.filter(payload)
                if not payload:
                    continue
            call.mark_first_chunk()
            self.chunks += 1
            out.append(b"data: " + scrub_event(call, payload) + b"\n\n")
        return b"".join(out)


async def _relay(
    resp: UpstreamResponse, call: Call, body: dict[str, Any], view: _UsageView, direct: Direct
) -> AsyncIterator[bytes]:
    status: Status = "cancelled"
    detail = ""
    frames = _Frames(call, view)
    payloads = ChatPayloads(resp, call)
    try:
        async for out in payloads.relayed(frames.frame, direct):
            yield out
        done = payloads.done
        status = "ok" if done else "upstream_error"
        # Journal before the client sees the end: a response received whole is always recorded.
        finish_stream(call, status, view.last, body, frames.chunks, broken=view.broken)
        if not done:
            yield error_event("upstream closed the stream before it finished")
        yield (payloads.last if done else b"") + view.closing_chunk() + _DONE
    except UpstreamTimeout:
        status = "timeout"
        yield error_event("upstream timed out mid-stream")
    except UpstreamError as exc:
        status = "upstream_error"
        yield error_event(str(exc))
    except Exception as exc:  # a bug of ours: the stream ends in shape and is still metered
        log.exception("internal error relaying a stream")
        status, detail = "internal_error", type(exc).__name__
        yield error_event(f"internal error ({detail})")
    finally:
        if payloads.done:
            resp.release()
        else:
            resp.close()
        chunks = frames.chunks
        finish_stream(call, status, view.last, body, chunks, broken=view.broken, detail=detail)


def finish_stream(
    call: Call,
    status: Status,
    usage: Any,
    body: dict[str, Any],
    chunks: int,
    *,
    broken: bool = False,
    detail: str = "",
) -> None:
    """Record a stream's event: the upstream's last usage when it sent one (estimated when a
    usage line was broken), else an estimate from the prompt and the chunks relayed. ``detail``
    is the exception class of an ``internal_error``."""
    http_status = {"ok": 200, "cancelled": 200, "internal_error": 500}.get(status, 502)
    if isinstance(usage, dict):
        read = read_openai_usage(usage)
        source = "estimated" if broken and not read.invalid else read.source
        call.finish(status, http_status, read.usage, source=source, detail=detail)
        return
    # Cut before the upstream sent its count: one token per content chunk is what OpenAI-shaped
    # servers stream; the prompt is estimated from its text.
    estimate = TokenUsage(input_tokens=estimate_tokens(prompt_chars(body)), output_tokens=chunks)
    call.finish(status, http_status, estimate, source="estimated", detail=detail)
