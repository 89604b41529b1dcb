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
from proxy.gateway.relays.streaming import EventStreamResponse
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
        return EventStreamResponse(_relay(resp, call, request, translator))
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


async def _relay(
    resp: UpstreamResponse, call: Call, request: dict[str, Any], translator: MessagesStream
) -> AsyncIterator[bytes]:
    status: Status = "cancelled"
    detail = ""
    chunks = 0
    started = False
    payloads = ChatPayloads(resp, call)
    try:
        async for batch in payloads:
            out: list[bytes] = []  # what arrived together leaves in one write
            for payload in batch:
                chunk = _json_object(payload)
                if chunk is None:
                    continue  # a keep-alive comment or garbage: nothing to translate
                if chunk.get("error") and not chunk.get("choices"):
                    status = "upstream_error"  # vLLM reports a failure mid-stream this way
                    yield b"".join(out) + stream_error(upstream_message(payload))
                    return
                if not started:
                    started = True
                    out.append(translator.start(str(chunk.get("id") or "")))
                produced = list(translator.on_chunk(chunk))
                if produced:
                    call.mark_first_chunk()
                    chunks += 1
                    out.extend(produced)
            if payloads.done:
                status = "ok"
                # Journal before the client sees the end: a whole response is always recorded.
                finish_stream(call, status, translator.usage, request, chunks)
                if not started:
                    out.append(translator.start(""))
                out.append(translator.end())
            if out:
                yield b"".join(out)
        if not payloads.done:
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
        finish_stream(call, status, translator.usage, request, chunks, detail=detail)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
