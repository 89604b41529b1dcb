"""Anthropic deployments: OpenAI-shaped requests translated both ways, and the native
Messages API passed through (for the Anthropic SDK and coding tools)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
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
    EventFeed,
    error_event,
    is_anthropic_message,
    parse_answer,
    raise_for_upstream,
    read_timed,
    scrub_event,
    send_timed,
)
from proxy.gateway.relays.streaming import Direct, EventStreamResponse
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
    chunks = Translated(call, translator, _emit_chat, _chat_failure)

    def end() -> bytes:
        final = translator.usage_chunk(chunks.tracker.fields)
        return (b"" if final is None else _chat_event(final)) + b"data: [DONE]\n\n"

    direct = Direct()
    return EventStreamResponse(
        relay_events(resp, call, body, chunks, direct, end=end, fail=_chat_failure),
        on_cut=error_event(DRAIN_MESSAGE),
        direct=direct,
    )


def _chat_event(chunk: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _emit_chat(chunk: Mapping[str, Any], out: list[bytes]) -> None:
    out.append(_chat_event(chunk))


def _chat_failure(message: str, _code: str = "") -> bytes:
    return error_event(message)


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
    direct = Direct()
    return EventStreamResponse(
        relay_events(resp, call, body, Native(call), direct, end=bytes, fail=native_failure),
        headers=_response_headers(resp),
        on_cut=native_error_event(DRAIN_MESSAGE),
        direct=direct,
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


def native_failure(message: str, _code: str = "") -> bytes:
    return native_error_event(message)


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
"""One event of an Anthropic stream: its parsed data (None if it had none) and its raw bytes."""


class AnthropicEvents:
    """An Anthropic event stream's lines as events (the ``Split`` of an ``EventFeed``), done
    at ``message_stop``; a data line that is not JSON is dropped (the SDK would fail on it) and
    marks the stream's counts as estimates. An event the stream ends inside is dropped, as a
    client's SSE parser would drop it."""

    __slots__ = ("_buf", "_event", "_state")

    def __init__(self, state: StreamState) -> None:
        self._state = state
        self._buf: list[bytes] = []
        self._event: dict[str, Any] | None = None

    def __call__(self, lines: list[bytes]) -> tuple[list[Event], bool]:
        events: list[Event] = []
        buf, event = self._buf, self._event
        for line in lines:
            if line in (b"", b"\r"):
                events.append((event, b"\n".join([*buf, line]) + b"\n"))
                buf, event = [], None
                continue
            buf.append(line)
            if line[:5] != b"data:":
                continue
            try:
                parsed = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                self._state.broken = True
                buf.pop()  # the broken line is not forwarded
                continue
            event = parsed if isinstance(parsed, dict) else None
            if event is not None and event.get("type") == "message_stop":
                # the last event: it leaves whole now, nothing after it is read
                blank = b"\r\n" if line[-1:] == b"\r" else b"\n"
                events.append((event, b"\n".join(buf) + b"\n" + blank))
                self._buf, self._event = [], None
                return events, True
        self._buf, self._event = buf, event
        return events, False


class Native:
    """The native Messages stream passed through batch by batch (the ``Handle`` of an
    ``EventFeed``): in-stream errors scrubbed, usage tracked, content deltas counted; an
    upstream's error event is relayed and marks the stream ``upstream_error``."""

    __slots__ = ("call", "failed", "state", "tracker")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.tracker = AnthropicUsageTracker()
        self.state = StreamState()
        self.failed = b""  # never set: the upstream's error event goes to the client as it came

    def __call__(self, batch: list[Event]) -> bytes:
        call, state, tracker = self.call, self.state, self.tracker
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
        return b"".join(out)


Emit = Callable[[Mapping[str, Any], list[bytes]], object]
"""Frames one translated chat chunk for the client onto a batch's output."""

Fail = Callable[[str, str], bytes]
"""The client's error event for a message and a code (``timeout`` when the upstream went
silent, else ``server_error``), in the stream's own protocol."""


class Translated:
    """An Anthropic stream translated into chat chunks batch by batch (the ``Handle`` of an
    ``EventFeed``), each framed by ``emit``; an upstream's error event stops it, with the
    client's error event (``fail``) kept in ``failed``."""

    __slots__ = ("call", "emit", "fail", "failed", "state", "tracker", "translator")

    def __init__(self, call: Call, translator: StreamTranslator, emit: Emit, fail: Fail) -> None:
        self.call = call
        self.translator = translator
        self.emit = emit
        self.fail = fail
        self.tracker = AnthropicUsageTracker()
        self.state = StreamState()
        self.failed = b""

    def __call__(self, batch: list[Event]) -> bytes | None:
        call, state, emit = self.call, self.state, self.emit
        out: list[bytes] = []  # what arrived together leaves in one write
        for event, _raw in batch:
            if event is None:
                continue
            self.tracker.on_event(event)
            if event.get("type") == "error":
                state.status = "upstream_error"
                self.failed = b"".join(out) + self.fail(event_message(event, call), "server_error")
                return None
            if event.get("type") == "content_block_delta":
                state.chunks += 1  # the output estimate of a stream cut short
            for chunk in self.translator.on_event(event):
                call.mark_first_chunk()
                emit(chunk, out)
        return b"".join(out)


async def relay_events(
    resp: UpstreamResponse,
    call: Call,
    body: dict[str, Any],
    handle: Native | Translated,
    direct: Direct,
    *,
    end: Callable[[], bytes],
    fail: Fail,
) -> AsyncIterator[bytes]:
    """An Anthropic upstream's stream relayed through ``handle`` (``EventFeed.relayed``: from
    the connection's read callback where the server offers a chunk writer); ``end()`` follows
    the last event, once the stream is journaled. A stream cut short ends with ``fail``'s
    event and is recorded with what was counted so far."""
    state, tracker = handle.state, handle.tracker
    feed = EventFeed(resp, call, AnthropicEvents(state))
    try:
        async for out in feed.relayed(handle, direct):
            yield out
        if handle.failed:
            yield handle.failed
        elif feed.done:
            state.done = True
            if state.status == "cancelled":  # no error event on the way
                state.status = "ok"
            record_stream(call, body, tracker, state)  # journaled before the client sees the end
            yield feed.last + end()
        else:
            if state.status != "upstream_error":  # else its error event was relayed
                yield fail("upstream closed the stream before it finished", "server_error")
            state.status = "upstream_error"
    except UpstreamTimeout:
        state.status = "timeout"
        yield fail("upstream timed out mid-stream", "timeout")
    except UpstreamError as exc:
        state.status = "upstream_error"
        yield fail(str(exc), "server_error")
    except Exception as exc:  # a bug of ours: the stream ends in shape and is still metered
        log.exception("internal error relaying a stream")
        state.fail(exc)
        yield fail(f"internal error ({state.detail})", "server_error")
    finally:
        release_upstream(resp, call, body, tracker, state)


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
