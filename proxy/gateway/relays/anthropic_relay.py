"""Anthropic deployments: OpenAI-shaped requests translated both ways, and the native
Messages API passed through (for the Anthropic SDK and coding tools)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.responses import Response

from cost.usage import TokenUsage
from metering.events import Status
from proxy.gateway.call import Call
from proxy.gateway.deployments import ANTHROPIC_VERSION, Deployment
from proxy.gateway.errors import journal_unavailable
from proxy.gateway.relays.exchange import (
    DRAIN_MESSAGE,
    error_event,
    idle_timeout_s,
    is_anthropic_message,
    parse_answer,
    raise_for_upstream,
    read_timed,
    scrub_event,
    send_timed,
)
from proxy.gateway.relays.streaming import EventStreamResponse
from proxy.gateway.relays.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout
from proxy.gateway.relays.upstream_usage import (
    AnthropicUsageTracker,
    estimate_tokens,
    prompt_chars,
    read_anthropic_usage,
)
from proxy.gateway.translation.structured import anthropic_translation
from proxy.gateway.translation.translate import StreamTranslator

log = logging.getLogger(__name__)
_FORWARDED = ("anthropic-version", "anthropic-beta")


def native_headers(dep: Deployment, client: Mapping[str, str]) -> dict[str, str]:
    headers = dict(dep.headers)
    headers["anthropic-version"] = client.get("anthropic-version") or ANTHROPIC_VERSION
    if client.get("anthropic-beta"):
        headers["anthropic-beta"] = client["anthropic-beta"]
    return headers


def _response_headers(resp: UpstreamResponse) -> dict[str, str]:
    # Claude Code de-duplicates usage by request-id: it must survive the proxy.
    rid = resp.headers.get("request-id")
    return {"request-id": rid} if rid else {}


async def chat_via_anthropic(
    upstream: Upstream, call: Call, dep: Deployment, body: dict[str, Any]
) -> Response | EventStreamResponse:
    translation = anthropic_translation(body, model=dep.model)
    headers = native_headers(dep, {})
    request = orjson.dumps(translation.request)
    resp = await send_timed(upstream, call, dep, "/v1/messages", request, headers)
    await raise_for_upstream(resp, call, dep)
    alias = call.model
    if not call.stream:
        data = await read_timed(resp, call, dep)
        msg = parse_answer(data, call, dep, valid=is_anthropic_message, what="a message")
        usage = msg.get("usage")
        read = read_anthropic_usage(usage if isinstance(usage, dict) else {})
        if not call.finish("ok", 200, read.usage, source=read.source):
            raise journal_unavailable()
        return Response(
            orjson.dumps(translation.response(msg, model=alias)), media_type="application/json"
        )
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    translator = translation.stream_translator(model=alias, include_usage=include_usage)
    return EventStreamResponse(
        _translate_stream(resp, call, body, translator), on_cut=error_event(DRAIN_MESSAGE)
    )


async def _translate_stream(
    resp: UpstreamResponse, call: Call, body: dict[str, Any], translator: StreamTranslator
) -> AsyncIterator[bytes]:
    tracker = AnthropicUsageTracker()
    state = StreamState()
    try:
        async for batch in event_batches(resp, call, state):
            out: list[bytes] = []  # what arrived together leaves in one write
            for event, _raw in batch:
                if event is None:
                    continue
                tracker.on_event(event)
                if event.get("type") == "error":
                    state.status = "upstream_error"
                    yield b"".join(out) + error_event(event_message(event, call))
                    return
                for chunk in translator.on_event(event):
                    call.mark_first_chunk()
                    state.chunks += 1
                    out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
                if event.get("type") == "message_stop":
                    # journaled before the client sees the end
                    record_stream(call, body, tracker, state)
                    final = translator.usage_chunk(tracker.fields)
                    if final is not None:
                        out.append(b"data: " + orjson.dumps(final) + b"\n\n")
                    yield b"".join(out) + b"data: [DONE]\n\n"
                    return
            if out:
                yield b"".join(out)
        yield error_event("upstream closed the stream before it finished")
    except UpstreamTimeout:
        state.status = "timeout"
        yield error_event("upstream timed out mid-stream")
    except UpstreamError as exc:
        state.status = "upstream_error"
        yield error_event(str(exc))
    except Exception as exc:  # a bug of ours: the stream ends in shape and is still metered
        log.exception("internal error translating a stream")
        state.fail(exc)
        yield error_event(f"internal error ({state.detail})")
    finally:
        release_upstream(resp, call, body, tracker, state)


async def messages_native(
    upstream: Upstream,
    call: Call,
    dep: Deployment,
    body: dict[str, Any],
    client_headers: Mapping[str, str],
) -> Response | EventStreamResponse:
    headers = native_headers(dep, client_headers)
    resp = await send_timed(upstream, call, dep, dep.messages_path, orjson.dumps(body), headers)
    if resp.status >= 500 or resp.status == 429:
        await raise_for_upstream(resp, call, dep)  # recorded; a fallback may take over
    if resp.status >= 400 or not call.stream:
        return await _native_json(resp, call, dep, body)
    return EventStreamResponse(
        _relay_native(resp, call, body),
        headers=_response_headers(resp),
        on_cut=native_error_event(DRAIN_MESSAGE),
    )


async def _native_json(
    resp: UpstreamResponse, call: Call, dep: Deployment, body: dict[str, Any]
) -> Response:
    if resp.status >= 400:
        # In Anthropic's error shape, with its message (redacted on the way out) and request-id.
        await raise_for_upstream(resp, call, dep, headers=_response_headers(resp))
    data = await read_timed(resp, call, dep)
    msg = parse_answer(data, call, dep, valid=is_anthropic_message, what="a message")
    usage = msg.get("usage")
    if isinstance(usage, dict):
        read = read_anthropic_usage(usage)
        journaled = call.finish("ok", 200, read.usage, source=read.source)
    else:
        estimate = TokenUsage(input_tokens=estimate_tokens(prompt_chars(body)))
        journaled = call.finish("ok", 200, estimate, source="estimated")
    if not journaled:
        raise journal_unavailable()
    return Response(data, media_type="application/json", headers=_response_headers(resp))


async def _relay_native(
    resp: UpstreamResponse, call: Call, body: dict[str, Any]
) -> AsyncIterator[bytes]:
    tracker = AnthropicUsageTracker()
    state = StreamState()
    try:
        async for batch in event_batches(resp, call, state):
            out: list[bytes] = []  # what arrived together leaves in one write
            for event, raw in batch:
                out.append(scrub_event(call, raw))
                if event is None:
                    continue
                tracker.on_event(event)
                kind = event.get("type")
                if kind == "content_block_delta":
                    call.mark_first_chunk()
                    state.chunks += 1
                elif kind == "error":
                    state.status = "upstream_error"
                elif kind == "message_stop":
                    # journaled before the client sees the end
                    record_stream(call, body, tracker, state)
                    yield b"".join(out)
                    return
            if out:
                yield b"".join(out)
    except UpstreamTimeout:
        state.status = "timeout"
        yield native_error_event("upstream timed out mid-stream")
    except UpstreamError as exc:
        state.status = "upstream_error"
        yield native_error_event(str(exc))
    except Exception as exc:  # a bug of ours: the stream ends in shape and is still metered
        log.exception("internal error relaying a stream")
        state.fail(exc)
        yield native_error_event(f"internal error ({state.detail})")
    finally:
        release_upstream(resp, call, body, tracker, state)


def native_error_event(message: str) -> bytes:
    """An Anthropic stream's ``error`` event, as the SDKs parse it."""
    body = {"type": "error", "error": {"type": "api_error", "message": message}}
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


class StreamState:
    __slots__ = ("broken", "chunks", "detail", "done", "status")

    def __init__(self) -> None:
        self.status: Status = "cancelled"
        self.done = False
        self.broken = False  # a data line was not JSON: skipped, the counts are estimates
        self.chunks = 0
        self.detail = ""  # the event's error_detail

    def fail(self, exc: Exception) -> None:
        """A bug of ours ended the stream: recorded ``internal_error`` with the exception class."""
        self.status, self.detail = "internal_error", type(exc).__name__


Event = tuple[dict[str, Any] | None, bytes]


async def event_batches(
    resp: UpstreamResponse, call: Call, state: StreamState
) -> AsyncIterator[list[Event]]:
    """(parsed data, raw event bytes) per SSE event, in the batches the network delivered them;
    the stream's status is set on the way."""
    batches = resp.line_batches(idle_timeout_s(call))
    buf: list[bytes] = []
    event: dict[str, Any] | None = None
    while True:
        t0 = time.perf_counter()
        lines = await anext(batches, None)
        call.upstream_s += time.perf_counter() - t0
        if lines is None:
            if buf:
                yield [(event, b"\n".join(buf) + b"\n\n")]
            if not state.done:
                state.status = "upstream_error"
            return
        events: list[Event] = []
        for line in lines:
            if line in (b"", b"\r"):
                events.append((event, b"\n".join([*buf, line]) + b"\n"))
                buf, event = [], None
                continue
            buf.append(line)
            if line.startswith(b"data:"):
                try:
                    parsed = orjson.loads(line[5:])
                except orjson.JSONDecodeError:
                    state.broken = True
                    buf.pop()  # the broken line is not forwarded: the SDK would fail on it
                    continue
                event = parsed if isinstance(parsed, dict) else None
                if event is not None and event.get("type") == "message_stop":
                    state.status, state.done = "ok", True
        if events:
            yield events


def event_message(event: Mapping[str, Any], call: Call) -> str:
    err = event.get("error")
    message = str(err.get("message", "upstream error")) if isinstance(err, dict) else ""
    dep = call.deployment
    return dep.redactor.scrub(message) if dep and message else message or "upstream error"


def release_upstream(
    resp: UpstreamResponse,
    call: Call,
    body: dict[str, Any],
    tracker: AnthropicUsageTracker,
    state: StreamState,
) -> None:
    """The connection back to the pool (or closed, when the stream was cut), the event recorded."""
    if state.done:
        resp.release()
    else:
        resp.close()
    record_stream(call, body, tracker, state)


def record_stream(
    call: Call, body: dict[str, Any], tracker: AnthropicUsageTracker, state: StreamState
) -> None:
    http_status = {"ok": 200, "cancelled": 200, "internal_error": 500}.get(state.status, 502)
    exact = state.done or tracker.seen_delta or state.chunks == 0
    if tracker.seen_start and exact and not state.broken:
        read = tracker.read()
        call.finish(state.status, http_status, read.usage, source=read.source, detail=state.detail)
        return
    # Input and cache counts are exact from message_start; output was never reported.
    usage = (
        tracker.usage()
        if tracker.seen_start
        else TokenUsage(input_tokens=estimate_tokens(prompt_chars(body)))
    )
    estimate = TokenUsage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        output_tokens=max(usage.output_tokens, state.chunks),
    )
    call.finish(state.status, http_status, estimate, source="estimated", detail=state.detail)
