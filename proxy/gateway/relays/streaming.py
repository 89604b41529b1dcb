"""A server-sent-events response that notices a client hang-up while waiting on the upstream.

Starlette's StreamingResponse only notices a disconnect when its next write fails, which can be
long after the client left if the upstream is slow to produce the next chunk; meanwhile the
upstream keeps generating (and billing). Here a watcher task cancels the pump at once, and the
body generator's ``finally`` closes the upstream connection and records the event as cancelled.

The same path serves a shutdown: ``cut`` (the drain deadline passed) and a cancellation of the
request task by the server both cancel the pump, so the generator's ``finally`` records the
stream with its tokens so far; a cut stream also gets ``on_cut`` (its family's error event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping

from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)


class EventStreamResponse:
    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        headers: Mapping[str, str] | None = None,
        on_cut: bytes = b"",
    ) -> None:
        self._body = body
        raw = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self._headers = raw
        self._on_cut = on_cut
        self._pump_task: asyncio.Future[None] | None = None
        self._started = False
        self._cut = False
        self.done: list[Callable[[], None]] = []  # called once the response has ended

    def add_header(self, name: str, value: str) -> None:
        self._headers.append((name.lower().encode(), value.encode()))

    def cut(self) -> None:
        """End the stream now (the drain deadline passed): metered with its tokens so far."""
        self._cut = True
        if self._pump_task is not None:
            self._pump_task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = self._pump_task = asyncio.ensure_future(self._pump(send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            if self._cut:
                pump.cancel()
            await asyncio.wait((pump, watcher), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The server gave up on this request: stop the body so its finally meters it.
            watcher.cancel()
            await _settle(pump)
            raise
        finally:
            for callback in self.done:
                callback()
        if pump.done():
            watcher.cancel()
            if pump.cancelled():
                await self._send_cut(send)
            elif pump.exception() is not None and not isinstance(pump.exception(), OSError):
                log.error("stream response failed", exc_info=pump.exception())
        else:
            pump.cancel()
            await _settle(pump)

    async def _send_cut(self, send: Send) -> None:
        if not self._started:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": self._on_cut, "more_body": False})

    async def _pump(self, send: Send) -> None:
        body = self._body
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
            self._started = True
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await body.aclose()  # type: ignore[attr-defined]


async def _settle(task: asyncio.Future[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
