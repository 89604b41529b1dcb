"""OpenAI-shaped upstreams (vLLM, TGI, Azure AI inference, any OpenAI-compatible server).

The request body goes through with its model renamed; the response goes back byte for byte,
except that on streams we always ask the upstream for usage and hide the usage-only chunk
(and any usage on other chunks) from a client that did not ask for it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from starlette.responses import Response

from cost.usage import TokenUsage
from metering.events import Status
from proxy.call import Call
from proxy.errors import ProxyError, journal_unavailable, upstream_message
from proxy.routing import Deployment
from proxy.streaming import EventStreamResponse
from proxy.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout
from proxy.usage import estimate_tokens, openai_usage

_DONE = b"data: [DONE]\n\n"


@contextmanager
def waiting_on_upstream(call: Call, dep: Deployment) -> Iterator[None]:
    """Time spent inside counts as upstream wait; failures are recorded and become 502/504."""
    t0 = time.perf_counter()
    try:
        yield
    except UpstreamTimeout as exc:
        call.finish("timeout", 504)
        raise ProxyError(
            504, f"upstream timed out after {dep.timeout_s:g} s", code="upstream_timeout"
        ) from exc
    except UpstreamError as exc:
        call.finish("upstream_error", 502)
        raise ProxyError(502, str(exc), code="upstream_unavailable") from exc
    finally:
        call.upstream_s += time.perf_counter() - t0


async def send_timed(
    upstream: Upstream,
    call: Call,
    dep: Deployment,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> UpstreamResponse:
    """Send and wait for the response headers."""
    with waiting_on_upstream(call, dep):
        return await upstream.send(
            dep.url(path),
            body=body,
            headers=headers or dep.headers,
            timeout_s=dep.timeout_s,
            stream=call.stream,
        )


async def read_timed(resp: UpstreamResponse, call: Call, dep: Deployment) -> bytes:
    with waiting_on_upstream(call, dep):
        return await resp.read()


async def raise_for_upstream(resp: UpstreamResponse, call: Call, dep: Deployment) -> None:
    """Upstream 4xx pass through with their message; 5xx become 502. Both are recorded."""
    if resp.status < 400:
        return
    message = upstream_message(await read_timed(resp, call, dep))
    if resp.status >= 500:
        call.finish("upstream_error", 502)
        raise ProxyError(502, f"upstream returned {resp.status}: {message}", code="upstream_error")
    status: Status = "upstream_error" if resp.status == 429 else "client_error"
    call.finish(status, resp.status)
    raise ProxyError(resp.status, message, code="upstream_rejected")


async def forward_json(
    upstream: Upstream, call: Call, dep: Deployment, path: str, body: dict[str, Any]
) -> Response:
    """Non-streaming chat completion or embeddings."""
    resp = await send_timed(upstream, call, dep, path, orjson.dumps(body))
    await raise_for_upstream(resp, call, dep)
    data = await read_timed(resp, call, dep)
    usage, source = _usage_of(data, body)
    if not call.finish("ok", 200, usage, source=source):
        raise journal_unavailable()
    return Response(data, status_code=200, media_type="application/json")


def _usage_of(data: bytes, body: dict[str, Any]) -> tuple[TokenUsage, Any]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    if isinstance(usage, dict):
        return openai_usage(usage), "upstream"
    return TokenUsage(input_tokens=estimate_tokens(prompt_chars(body))), "estimated"


async def forward_stream(
    upstream: Upstream, call: Call, dep: Deployment, body: dict[str, Any]
) -> EventStreamResponse:
    client_options = body.get("stream_options")
    options = client_options if isinstance(client_options, dict) else {}
    view = _UsageView(
        wants=options.get("include_usage") is True,
        continuous=options.get("continuous_usage_stats") is True,
    )
    body["stream_options"] = {**options, "include_usage": True}
    resp = await send_timed(upstream, call, dep, "/chat/completions", orjson.dumps(body))
    await raise_for_upstream(resp, call, dep)
    return EventStreamResponse(_relay(resp, call, body, view))


class _UsageView:
    """What the client sees of usage: the OpenAI contract whatever the upstream does.

    A client that asked for ``include_usage`` gets exactly one usage-only chunk before
    ``[DONE]`` (synthesised when the upstream, like Azure, put usage on a content chunk);
    a client that did not gets no usage at all. Usage on content chunks is kept only for a client
    that asked for vLLM's ``continuous_usage_stats``.
    """

    __slots__ = ("continuous", "last", "sent", "template", "wants")

    def __init__(self, *, wants: bool, continuous: bool) -> None:
        self.wants = wants
        self.continuous = continuous
        self.last: dict[str, Any] | None = None
        self.sent = False
        self.template: dict[str, Any] = {}

    def filter(self, payload: bytes) -> bytes:
        """Record the chunk's usage; return what to forward (b"" to drop the chunk)."""
        obj = orjson.loads(payload)
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


async def _relay(
    resp: UpstreamResponse, call: Call, body: dict[str, Any], view: _UsageView
) -> AsyncIterator[bytes]:
    status: Status = "cancelled"
    chunks = 0
    done = False
    batches = resp.line_batches()
    out: list[bytes] = []
    try:
        while not done:
            t0 = time.perf_counter()
            lines = await anext(batches, None)
            call.upstream_s += time.perf_counter() - t0
            if lines is None:
                break
            out = []
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                if b'"usage"' in payload and b'"usage":null' not in payload:
                    payload = view.filter(payload)
                    if not payload:
                        continue
                call.mark_first_chunk()
                chunks += 1
                out.append(b"data: " + payload + b"\n\n")
            if out and not done:  # what arrived together leaves in one write
                yield b"".join(out)
        status = "ok" if done else "upstream_error"
        # Journal before the client sees the end: a response received whole is always recorded.
        _finish_stream(call, status, view.last, body, chunks)
        if not done:
            yield error_event("upstream closed the stream before it finished")
        yield (b"".join(out) if done else b"") + view.closing_chunk() + _DONE
    except UpstreamTimeout:
        status = "timeout"
        yield error_event("upstream timed out mid-stream")
    except UpstreamError as exc:
        status = "upstream_error"
        yield error_event(str(exc))
    finally:
        if done:
            resp.release()
        else:
            resp.close()
        _finish_stream(call, status, view.last, body, chunks)


def _finish_stream(
    call: Call, status: Status, usage: dict[str, Any] | None, body: dict[str, Any], chunks: int
) -> None:
    http_status = 200 if status in ("ok", "cancelled") else 502
    if usage is not None:
        call.finish(status, http_status, openai_usage(usage))
        return
    # Cut before the upstream sent its count: one token per content chunk is what OpenAI-shaped
    # servers stream; the prompt is estimated from its text.
    estimate = TokenUsage(input_tokens=estimate_tokens(prompt_chars(body)), output_tokens=chunks)
    call.finish(status, http_status, estimate, source="estimated")


def error_event(message: str) -> bytes:
    body = {"error": {"message": message, "type": "upstream_error", "code": "upstream_error"}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters of text in a chat or embeddings request (for estimates only)."""
    total = 0
    for msg in body.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    inp = body.get("input")
    if isinstance(inp, str):
        total += len(inp)
    elif isinstance(inp, list):
        total += sum(len(x) for x in inp if isinstance(x, str))
    return total
