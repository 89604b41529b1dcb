"""Anthropic Messages requests on OpenAI-shaped deployments: translated to Chat Completions and
the answer (JSON or stream) translated back (messages_chat.py), metered once from the upstream's
own usage, with the same cancellation and error handling as the OpenAI relay."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response

from metering.events import Status
from proxy.gateway.call import Call
from proxy.gateway.deployments import Deployment
from proxy.gateway.errors import ProxyError, journal_unavailable, upstream_message
from proxy.gateway.relays.exchange import ChatPayloads, raise_for_upstream, read_timed, send_timed
from proxy.gateway.relays.openai_relay import finish_stream
from proxy.gateway.relays.streaming import Direct, EventStreamResponse
from proxy.gateway.relays.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout
from proxy.gateway.relays.upstream_usage import estimate_tokens, openai_usage, prompt_chars
from proxy.gateway.translation.messages_chat import to_chat_request, to_messages_response
from proxy.gateway.translation.messages_stream import MessagesStream, stream_error

log = logging.getLogger(__name__)


async def messages_via_chat(
    upstream: Upstream, call: Call, dep: Deployment, body: dict[str, Any]
) -> Response | EventStreamResponse:
    request = to_chat_request(body, model=dep.model, backend=dep.backend)
    stops = [s for s in body.get("stop_sequences") or () if isinstance(s, str)]
    resp = await send_timed(upstream, call, dep, "/chat/completions", orjson.dumps(request))
    await raise_for_upstream(resp, call, dep)
    if call.stream:
        translator = MessagesStream(model=call.model, stop_sequences=stops)
        direct = Direct()
        return EventStreamResponse(_relay(resp, call, request, translator, direct), direct=direct)
    data = _json_object(await read_timed(resp, call, dep))
    if data is None:
        call.finish("upstream_error", 502)
        raise ProxyError(502, "upstream answered 200 with no JSON object", code="upstream_error")
    usage = data.get("usage")
    if isinstance(usage, dict):
        journaled = call.finish("ok", 200, openai_usage(usage))
    else:
        estimate = openai_usage({"prompt_tokens": estimate_tokens(prompt_chars(request))})
        journaled = call.finish("ok", 200, estimate, source="estimated")
    if not journaled:
        raise journal_unavailable()
    message = to_messages_response(data, model=call.model, stop_sequences=stops)
    return Response(orjson.dumps(message), media_type="application/json")


class _Translate:
    """One stream's chat chunks translated into Messages events, batch by batch (the handle of
    ``ChatPayloads.relayed``); an upstream's in-stream error stops it, with its error event kept
    in ``failed``."""

    __slots__ = ("call", "chunks", "failed", "started", "translator")

    def __init__(self, call: Call, translator: MessagesStream) -> None:
        self.call = call
        self.translator = translator
        self.chunks = 0
        self.started = False
        self.failed = b""

    def __call__(self, batch: list[bytes]) -> bytes | None:
        out: list[bytes] = []  # what arrived together leaves in one write
        translator = self.translator
        for payload in batch:
            chunk = _json_object(payload)
            if chunk is None:
                continue  # a keep-alive comment or garbage: nothing to translate
            if chunk.get("error") and not chunk.get("choices"):
                # vLLM reports a failure mid-stream this way
                self.failed = b"".join(out) + stream_error(upstream_message(payload))
                return None
            if not self.started:
                self.started = True
                out.append(translator.start(str(chunk.get("id") or "")))
            produced = list(translator.on_chunk(chunk))
            if produced:
                self.call.mark_first_chunk()
                self.chunks += 1
                out.extend(produced)
        return b"".join(out)


async def _relay(
    resp: UpstreamResponse,
    call: Call,
    request: dict[str, Any],
    translator: MessagesStream,
    direct: Direct,
) -> AsyncIterator[bytes]:
    status: Status = "cancelled"
    detail = ""
    translate = _Translate(call, translator)
    payloads = ChatPayloads(resp, call)
    try:
        async for out in payloads.relayed(translate, direct):
            yield out
        if translate.failed:
            status = "upstream_error"
            yield translate.failed
        elif payloads.done:
            status = "ok"
            # Journal before the client sees the end: a whole response is always recorded.
            finish_stream(call, status, translator.usage, request, translate.chunks)
            start = b"" if translate.started else translator.start("")
            yield payloads.last + start + translator.end()
        else:
            status = "upstream_error"
            yield stream_error("upstream closed the stream before it finished")
    except UpstreamTimeout:
        status = "timeout"
        yield stream_error("upstream timed out mid-stream")
    except UpstreamError as exc:
        status = "upstream_error"
        yield stream_error(str(exc))
    except Exception as exc:  # a bug of ours: the stream ends in shape and is still metered
        log.exception("internal error translating a stream")
        status, detail = "internal_error", type(exc).__name__
        yield stream_error(f"internal error ({detail})")
    finally:
        if payloads.done:
            resp.release()
        else:
            resp.close()
        chunks = translate.chunks
        finish_stream(call, status, translator.usage, request, chunks, detail=detail)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
