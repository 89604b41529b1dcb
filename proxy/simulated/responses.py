"""Responses that can be delayed, paced, cut off mid-body, and notice client hang-ups.

Starlette's StreamingResponse cannot drop a connection without answering, and
under uvicorn a write to a vanished client is silently discarded, so it never
learns that nobody is listening. Everything here is written against raw ASGI
messages instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.simulated.recording import Counter, exchange_of

JSON_MEDIA = "application/json"
SSE_MEDIA = "text/event-stream; charset=utf-8"


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def json_bytes(payload: Any) -> bytes:
    return orjson.dumps(payload)


def sse_data(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(event: str, payload: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


class DisconnectWatch:
    """Listens for `http.disconnect` while the response is being produced."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._gone = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DisconnectWatch:
        self._task = asyncio.create_task(self._listen())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._gone.set()

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep, waking early on disconnect; returns True if the client went away."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._gone.wait()
        return self.gone


class PacedResponse(Response):
    """Sends pre-rendered body frames, with pacing and an optional scripted cut.

    `abort_after` is the number of frames to send before dropping the
    connection; for a non-streaming response only 0 makes sense, which closes
    the socket without any status line.
    """

    def __init__(
        self,
        frames: Sequence[bytes],
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str = JSON_MEDIA,
        streaming: bool = False,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        abort_after: int | None = None,
    ) -> None:
        # Response.__init__ is skipped on purpose, as StreamingResponse does: it
        # would add a content-length that a streamed body must not carry.
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self._frames = tuple(frames)
        self._streaming = streaming
        self._delay = delay
        self._chunk_delay = chunk_delay
        self._abort_after = abort_after
        merged = {"content-type": media_type, **(headers or {})}
        if streaming:
            merged.setdefault("cache-control", "no-cache")
        else:
            merged["content-length"] = str(sum(len(frame) for frame in self._frames))
        self.raw_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in merged.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = exchange_of(scope)
        async with DisconnectWatch(receive) as watch:
            outcome = await self._play(scope, send, watch)
        if exchange is not None and outcome is not None:
            exchange.recorder.count(outcome)

    async def _play(self, scope: Scope, send: Send, watch: DisconnectWatch) -> Counter | None:
        """Plays the response; returns how it ended unless it completed normally."""
        if await watch.sleep(self._delay):
            return "disconnected"
        if self._abort_after == 0 and not self._streaming:
            await _drop_connection(scope, watch)
            return "aborted"
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if not self._streaming:
            await send({"type": "http.response.body", "body": b"".join(self._frames)})
            return None
        for index, frame in enumerate(self._frames):
            if index == self._abort_after:
                await _drop_connection(scope, watch)
                return "aborted"
            if (index and await watch.sleep(self._chunk_delay)) or watch.gone:
                return "disconnected"
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        if watch.gone:
            return "disconnected"
        await send({"type": "http.response.body", "body": b""})
        return None


async def _drop_connection(scope: Scope, watch: DisconnectWatch) -> None:
    """Close the socket under the server's feet, as a crashed upstream would.

    ASGI has no message for this, so it reaches the transport behind uvicorn's
    bound `send`. Other servers get an exception instead, which they turn into a
    dropped connection (mid-stream) or a 500 (before headers).
    """
    exchange = exchange_of(scope)
    cycle = getattr(exchange.raw_send, "__self__", None) if exchange else None
    transport = getattr(cycle, "transport", None)
    if not isinstance(transport, asyncio.BaseTransport):
        raise ConnectionAbortedError("simulated upstream cut (server exposes no transport)")
    transport.close()
    # Wait until the server has seen the close, so it does not answer in our place.
    await watch.sleep(2.0)


class StreamScript:
    """Frames of a stream, remembering which ones carry generated content."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self._content: list[int] = []

    def add(self, frame: bytes, *, content: bool = False) -> None:
        if content:
            self._content.append(len(self.frames))
        self.frames.append(frame)

    def cut_position(self, after_content: int) -> int:
        """Frame index at which to cut so that exactly `after_content` content frames went out."""
        if after_content < len(self._content):
            return self._content[after_content]
        # Asked for more than there is: cut right after the last content frame,
        # which still withholds the finish and usage frames.
        return self._content[-1] + 1 if self._content else 0
