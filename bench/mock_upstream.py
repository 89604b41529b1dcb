"""A fake OpenAI / Anthropic upstream, fast enough that a benchmark measures only the gateway.

    python bench/mock_upstream.py --port 18080

Raw asyncio protocol on uvloop with the httptools parser, bound to 127.0.0.1. Every response is
framed once per (shape, model) and cached, so a request costs one parse and one write.

    POST /v1/chat/completions  OpenAI JSON; with "stream": true SSE: role chunk, 20 one-token
                               content chunks, finish chunk, a usage chunk only when
                               stream_options.include_usage, then `data: [DONE]`
    POST /v1/messages          Anthropic JSON; with "stream": true the Anthropic event stream
                               (message_start with usage.input_tokens ... message_delta with
                               usage.output_tokens, message_stop)
    GET  /v1/models, GET /health

Usage is fixed: 42 prompt (input) tokens, 20 completion (output) tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any, cast

import httptools
import orjson
import uvloop

PROMPT_TOKENS = 42
TOKENS = [f" w{i}" for i in range(20)]  # one token per streamed content chunk
COMPLETION_TOKENS = len(TOKENS)
CREATED = 1_700_000_000
MODELS = ("mock-gpt", "mock-claude")


def openai_usage() -> dict[str, int]:
    """The OpenAI usage block every completion reports."""
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


def openai_json(model: str) -> bytes:
    """A non-streamed chat completion."""
    return orjson.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(TOKENS)},
                    "finish_reason": "stop",
                }
            ],
            "usage": openai_usage(),
        }
    )


def openai_events(model: str, include_usage: bool) -> list[bytes]:
    """The SSE events of a streamed chat completion, `data: [DONE]` last."""
    head = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": CREATED}

    def event(delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "model": model, "choices": [choice]}) + b"\n\n"

    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": token}) for token in TOKENS]
    events.append(event({}, "stop"))
    if include_usage:
        usage = {**head, "model": model, "choices": [], "usage": openai_usage()}
        events.append(b"data: " + orjson.dumps(usage) + b"\n\n")
    return [*events, b"data: [DONE]\n\n"]


def anthropic_json(model: str) -> bytes:
    """A non-streamed Anthropic message."""
    return orjson.dumps(
        {
            "id": "msg_mock",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "".join(TOKENS)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS},
        }
    )


def anthropic_events(model: str) -> list[bytes]:
    """The event stream of a streamed Anthropic message, in Anthropic's exact framing."""

    def event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    message = {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1},
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    events = [
        event("message_start", {"type": "message_start", "message": message}),
        event("content_block_start", block),
    ]
    events += [
        event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
        )
        for t in TOKENS
    ]
    events += [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": COMPLETION_TOKENS},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
    return events


def models_json() -> bytes:
    """The OpenAI model list."""
    data = [{"id": m, "object": "model", "created": CREATED, "owned_by": "mock"} for m in MODELS]
    return orjson.dumps({"object": "list", "data": data})


def fixed(status: str, content_type: str, body: bytes) -> bytes:
    """A complete keep-alive response with a content-length."""
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def chunked(events: list[bytes]) -> bytes:
    """A complete keep-alive SSE response, one HTTP chunk per event."""
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    return head + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


NOT_FOUND = fixed("404 Not Found", "application/json", b'{"error":{"message":"not found"}}')
BAD_JSON = fixed("400 Bad Request", "application/json", b'{"error":{"message":"invalid json"}}')
HEALTH = fixed("200 OK", "text/plain", b"ok")
MODEL_LIST = fixed("200 OK", "application/json", models_json())
CACHE: dict[tuple[str, str, bool, bool], bytes] = {}


def build(kind: str, model: str, stream: bool, include_usage: bool) -> bytes:
    """The framed response for a chat completion ("openai") or a message ("anthropic")."""
    if kind == "openai":
        if stream:
            return chunked(openai_events(model, include_usage))
        return fixed("200 OK", "application/json", openai_json(model))
    if stream:
        return chunked(anthropic_events(model))
    return fixed("200 OK", "application/json", anthropic_json(model))


def completion(kind: str, body: bytes) -> bytes:
    """The cached response for a completion request body, or a 400 for a malformed one."""
    try:
        req = orjson.loads(body)
        model = str(req.get("model") or MODELS[0])[:100]
        stream = bool(req.get("stream"))
        include_usage = stream and bool((req.get("stream_options") or {}).get("include_usage"))
    except (orjson.JSONDecodeError, AttributeError):
        return BAD_JSON
    key = (kind, model, stream, include_usage)
    response = CACHE.get(key)
    if response is None:
        if len(CACHE) > 1000:
            CACHE.clear()
        response = CACHE[key] = build(kind, model, stream, include_usage)
    return response


def route(method: bytes, path: bytes, body: bytes) -> bytes:
    """The full response for one request."""
    if method == b"POST" and path.endswith(b"/chat/completions"):
        return completion("openai", body)
    if method == b"POST" and path.endswith(b"/messages"):
        return completion("anthropic", body)
    if method == b"GET" and path.endswith(b"/models"):
        return MODEL_LIST
    if path == b"/health":
        return HEALTH
    return NOT_FOUND


class MockProtocol(asyncio.Protocol):
    """One client connection: parse requests, answer each with one write."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(fixed("400 Bad Request", "text/plain", b"bad request"))
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        path = self.url.split(b"?", 1)[0]
        self.transport.write(route(self.parser.get_method(), path, b"".join(self.body)))
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:port until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sys.stderr.write(f"mock upstream on http://127.0.0.1:{port}\n")
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18080)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
