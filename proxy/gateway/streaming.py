"""A server-sent-events response that notices a client hang-up while waiting on the upstream.

Starlette's StreamingResponse only notices a disconnect when its next write fails, which can be
long after the client left if the upstream is slow to produce the next chunk; meanwhile the
upstream keeps generating (and billing). Here a watcher task cancels the pump at once, and the
body generator's ``finally`` closes the upstream connection and records the event as cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.types import Receive, Scope, Send


class EventStreamResponse:
    def __init__(
        self, body: AsyncIterator[bytes], *, headers: Mapping[str, str] | None = None
    ) -> None:
        self._body = body
        raw = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self._headers = raw

    def add_header(self, name: str, value: str) -> None:
        self._headers.append((name.lower().encode(), value.encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.ensure_future(self._pump(send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        await asyncio.wait((pump, watcher), return_when=asyncio.FIRST_COMPLETED)
        if pump.done():
            watcher.cancel()
            with contextlib.suppress(OSError):
                pump.result()
        else:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await pump

    async def _pump(self, send: Send) -> None:
        body = self._body
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await body.aclose()  # type: ignore[attr-defined]


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
