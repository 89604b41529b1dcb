"""An upstream that misbehaves on request: the first message's text names what it does.

``invalid-json``, ``empty``, ``error-body``: a 200 that is not the protocol's answer.
``usage:<json>``: a well-formed answer whose usage is the given JSON object.
``stream-broken-usage``: a stream whose usage line is not JSON. ``drip``: a stream that sends
its first chunk, then one byte every 50 ms. ``429``: rate limited, with Retry-After and
rate-limit headers. ``echo-key:<status>``: an error quoting the credential it was sent.
``slow``: a non-stream answer after 20 s, noting whether the gateway hung up first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SECRET_KEY = "sk-provider-SECRET-0123456789abcdef"


class Notes:
    def __init__(self) -> None:
        self.hung_up: list[str] = []


def _mode(body: dict[str, Any]) -> str:
    content = body["messages"][0]["content"]
    if isinstance(content, list):  # translated to Anthropic: text blocks
        content = content[0].get("text", "") if content else ""
    return content if isinstance(content, str) else ""


def _chat(usage: Any) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": usage,
    }


def _message(usage: Any) -> dict[str, Any]:
    return {
        "id": "msg_x",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": usage,
    }


def create_hostile_app(notes: Notes) -> Starlette:
    async def answer(request: Request) -> Response:
        body = await request.json()
        mode = _mode(body)
        anthropic = request.url.path.endswith("/messages")
        credential = request.headers.get("x-api-key") or request.headers.get("authorization", "")
        if mode == "invalid-json":
            return Response(b"{not json", media_type="application/json")
        if mode == "empty":
            return Response(b"", media_type="application/json")
        if mode == "error-body":
            return JSONResponse({"error": {"message": "overloaded, try later"}})
        if mode.startswith("usage:"):
            usage = json.loads(mode[6:])
            return JSONResponse(_message(usage) if anthropic else _chat(usage))
        if mode == "429":
            headers = {
                "retry-after": "7",
                "x-ratelimit-remaining-requests": "0",
                "anthropic-ratelimit-requests-remaining": "0",
            }
            return JSONResponse({"error": {"message": "slow down"}}, 429, headers=headers)
        if mode.startswith("echo-key:"):
            status = int(mode.split(":")[1])
            message = f"Incorrect API key provided: {credential} (Bearer {SECRET_KEY})"
            return JSONResponse({"error": {"message": message}}, status)
        if mode == "slow":
            for _ in range(400):  # bounded: 20 s
                if await request.is_disconnected():
                    notes.hung_up.append("slow")
                    return Response(b"")
                await asyncio.sleep(0.05)
            return JSONResponse(_chat({"prompt_tokens": 1, "completion_tokens": 1}))
        if mode == "stream-broken-usage":
            return StreamingResponse(_broken_usage(), media_type="text/event-stream")
        if mode == "stream-echo-key":
            gen = _echo_native(credential) if anthropic else _echo(credential)
            return StreamingResponse(gen, media_type="text/event-stream")
        if mode == "drip":
            return StreamingResponse(_drip(), media_type="text/event-stream")
        return JSONResponse({"error": {"message": f"unknown mode {mode!r}"}}, 400)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", answer, methods=["POST"]),
            Route("/v1/embeddings", answer, methods=["POST"]),
            Route("/v1/messages", answer, methods=["POST"]),
        ]
    )


def _chunk(content: str) -> bytes:
    obj = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def _broken_usage() -> AsyncIterator[bytes]:
    for word in ("one ", "two ", "three"):
        yield _chunk(word)
    yield b'data: {"id": "x", "choices": [], "usage": {"prompt_tokens": 5,\n\n'
    yield b"data: [DONE]\n\n"


async def _drip() -> AsyncIterator[bytes]:
    yield _chunk("start")
    for _ in range(200):  # bounded: 10 s of one byte at a time, never a whole line
        await asyncio.sleep(0.05)
        yield b"d"


def _leak(credential: str) -> str:
    return f"key {credential} refused (Bearer {SECRET_KEY})"


async def _echo(credential: str) -> AsyncIterator[bytes]:
    yield _chunk("partial ")
    yield b"data: " + json.dumps({"error": {"message": _leak(credential)}}).encode() + b"\n\n"


async def _echo_native(credential: str) -> AsyncIterator[bytes]:
    start = {
        "type": "message_start",
        "message": {**_message({"input_tokens": 3, "output_tokens": 0}), "content": []},
    }
    error = {"type": "error", "error": {"type": "api_error", "message": _leak(credential)}}
    yield b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n"
    yield b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n"
