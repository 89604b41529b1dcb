"""One attempt of a Responses request on a deployment, metered like a chat completion.

OpenAI-shaped upstreams get the translated chat request on ``/chat/completions`` (streams always
ask for usage); Anthropic gets it through the Chat→Messages translation. Usage is recorded from
the upstream's own counts before the client sees ``response.completed``; a stream cut short is
recorded with what was counted so far and ends with ``response.failed``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response

from metering.events import Status
from proxy.gateway.call import Call
from proxy.gateway.deployments import Deployment
from proxy.gateway.errors import journal_unavailable
from proxy.gateway.relays.anthropic_relay import Translated, native_headers, relay_events
from proxy.gateway.relays.exchange import (
    ChatPayloads,
    is_anthropic_message,
    is_chat_completion,
    parse_answer,
    raise_for_upstream,
    read_timed,
    send_timed,
)
from proxy.gateway.relays.openai_relay import finish_stream, usage_of
from proxy.gateway.relays.streaming import Direct, EventStreamResponse
from proxy.gateway.relays.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout
from proxy.gateway.relays.upstream_usage import read_anthropic_usage
from proxy.gateway.responses.events import ResponseStream
from proxy.gateway.responses.output import ResponseShell, from_chat_completion
from proxy.gateway.responses.request import ChatRequest
from proxy.gateway.translation.structured import AnthropicTranslation, anthropic_translation
from proxy.gateway.translation.translate import openai_usage_from_anthropic

log = logging.getLogger(__name__)
ResponseAnswer = Response | EventStreamResponse


async def respond(
    upstream: Upstream, call: Call, dep: Deployment, chat: ChatRequest, body: dict[str, Any]
) -> ResponseAnswer:
    shell = ResponseShell(body, model=call.model, names=chat.tools)
    if dep.is_anthropic:
        return await _via_anthropic(upstream, call, dep, chat, shell)
    return await _via_chat(upstream, call, dep, chat, shell)


def _json(obj: Any) -> Response:
    return Response(orjson.dumps(obj), media_type="application/json")


async def _via_chat(
    upstream: Upstream, call: Call, dep: Deployment, chat: ChatRequest, shell: ResponseShell
) -> ResponseAnswer:
    out = {**chat.body, "model": dep.model}
    if call.stream:
        out["stream_options"] = {"include_usage": True}
    resp = await send_timed(upstream, call, dep, "/chat/completions", orjson.dumps(out))
    await raise_for_upstream(resp, call, dep)
    if call.stream:
        direct = Direct()
        relay = _relay_chat(resp, call, out, ResponseStream(shell), direct)
        return EventStreamResponse(relay, direct=direct)
    data = await read_timed(resp, call, dep)
    parsed = parse_answer(data, call, dep, valid=is_chat_completion, what="a chat completion")
    usage, source = usage_of(parsed, out)
    if not call.finish("ok", 200, usage, source=source):
        raise journal_unavailable()
    return _json(from_chat_completion(shell, parsed))


class _ChatEvents:
    """One stream's chat chunks as Responses events, batch by batch (the handle of
    ``ChatPayloads.relayed``), with the upstream's last usage and the content chunks counted."""

    __slots__ = ("call", "chunks", "stream", "usage")

    def __init__(self, call: Call, stream: ResponseStream) -> None:
        self.call = call
        self.stream = stream
        self.usage: dict[str, Any] | None = None
        self.chunks = 0

    def __call__(self, batch: list[bytes]) -> bytes:
        out: list[bytes] = []  # what arrived together leaves in one write
        counted = self.chunks
        for payload in batch:
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue  # a garbage line: skipped, as the chat relay does
            if not isinstance(chunk, dict):
                continue
            if isinstance(chunk.get("usage"), dict):
                self.usage = chunk["usage"]
            if chunk.get("choices"):
                self.chunks += 1
            self.stream.on_chunk(chunk, out)
        if self.chunks != counted:
            self.call.mark_first_chunk()
        return b"".join(out)


async def _relay_chat(
    resp: UpstreamResponse,
    call: Call,
    body: dict[str, Any],
    stream: ResponseStream,
    direct: Direct,
) -> AsyncIterator[bytes]:
    status: Status = "cancelled"
    detail = ""
    events = _ChatEvents(call, stream)
    payloads = ChatPayloads(resp, call)
    try:
        yield b"".join(stream.opening())
        async for out in payloads.relayed(events, direct):
            yield out
        done = payloads.done
        status = "ok" if done else "upstream_error"
        # journaled before the client sees it
        finish_stream(call, status, events.usage, body, events.chunks)
        if done:
            yield payloads.last + b"".join(stream.completed(events.usage))
        else:
            yield stream.failed("upstream closed the stream before it finished")
    except UpstreamTimeout:
        status = "timeout"
        yield stream.failed("upstream timed out mid-stream", "timeout")
    except UpstreamError as exc:
        status = "upstream_error"
        yield stream.failed(str(exc))
    except Exception as exc:  # a bug of ours: the stream ends in shape and is still metered
        log.exception("internal error translating a stream")
        status, detail = "internal_error", type(exc).__name__
        yield stream.failed(f"internal error ({detail})")
    finally:
        if payloads.done:
            resp.release()
        else:
            resp.close()
        finish_stream(call, status, events.usage, body, events.chunks, detail=detail)


async def _via_anthropic(
    upstream: Upstream, call: Call, dep: Deployment, chat: ChatRequest, shell: ResponseShell
) -> ResponseAnswer:
    translation = anthropic_translation(chat.body, model=dep.model)
    headers = native_headers(dep, {})
    raw = orjson.dumps(translation.request)
    resp = await send_timed(upstream, call, dep, "/v1/messages", raw, headers)
    await raise_for_upstream(resp, call, dep)
    if call.stream:
        direct = Direct()
        relay = _relay_anthropic(resp, call, chat.body, translation, ResponseStream(shell), direct)
        return EventStreamResponse(relay, direct=direct)
    data = await read_timed(resp, call, dep)
    msg = parse_answer(data, call, dep, valid=is_anthropic_message, what="a message")
    usage = msg.get("usage")
    read = read_anthropic_usage(usage if isinstance(usage, dict) else {})
    if not call.finish("ok", 200, read.usage, source=read.source):
        raise journal_unavailable()
    return _json(from_chat_completion(shell, translation.response(msg, model=call.model)))


async def _relay_anthropic(
    resp: UpstreamResponse,
    call: Call,
    body: dict[str, Any],
    translation: AnthropicTranslation,
    stream: ResponseStream,
    direct: Direct,
) -> AsyncIterator[bytes]:
    translator = translation.stream_translator(model=call.model)
    chunks = Translated(call, translator, stream.on_chunk, stream.failed)

    def end() -> bytes:
        return b"".join(stream.completed(openai_usage_from_anthropic(chunks.tracker.fields)))

    yield b"".join(stream.opening())
    async for out in relay_events(resp, call, body, chunks, direct, end=end, fail=stream.failed):
        yield out
