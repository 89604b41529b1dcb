"""A server-sent-events response that notices a client hang-up while waiting on the upstream.

Starlette's StreamingResponse only notices a disconnect when its next write fails, which can be
long after the client left if the upstream is slow to produce the next chunk; meanwhile the
upstream keeps generating (and billing). Here the request's task relays the body and a watcher
task cancels it at once, and the body generator's ``finally`` closes the upstream connection and
records the event as cancelled.

The same path serves a shutdown: ``cut`` (the drain deadline passed) and a cancellation of the
request task by the server both stop the relay, so the generator's ``finally`` records the
stream with its tokens so far; a cut stream also gets ``on_cut`` (its family's error event).

A body may write its chunks itself (``Direct``): once the head is sent, ``direct.writer`` is
the server's ``ChunkWriter`` (proxy/gateway/http_limits.py), when the server offers one, and
the body yields only what ends the stream; hang-up, cut and cancellation stop it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping

from starlette.types import Receive, Scope, Send

from proxy.gateway.http_limits import CHUNK_WRITER, ChunkWriter

log = logging.getLogger(__name__)


class Direct:
    """Where a response puts the client's chunk writer for its body, once the head is sent:
    None when the server has none (another ASGI server) or the framing is not chunked."""

    __slots__ = ("writer",)

    def __init__(self) -> None:
        self.writer: ChunkWriter | None = None


class EventStreamResponse:
    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        headers: Mapping[str, str] | None = None,
        on_cut: bytes = b"",
        direct: Direct | None = None,
    ) -> None:
        self._body = body
        self._direct = direct
        raw = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self._headers = raw
        self._on_cut = on_cut
        self._task: asyncio.Task[object] | None = None
        self._pumping = False  # the body is being relayed: cut or hang-up cancel the task
        self._stopping = False
        self._started = False
        self._cut = False
        self._gone = False
        self.done: list[Callable[[], None]] = []  # called once the response has ended

    def add_header(self, name: str, value: str) -> None:
        self._headers.append((name.lower().encode(), value.encode()))

    def cut(self) -> None:
        """End the stream now (the drain deadline passed): metered with its tokens so far."""
        self._cut = True
        self._stop()

    def _stop(self) -> None:
        if self._pumping and not self._stopping and self._task is not None:
            self._stopping = True
            self._task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The body is relayed in the request's own task; the watcher only waits for a hang-up.
        task = self._task = asyncio.current_task()
        watcher = asyncio.ensure_future(self._watch(receive))
        cut = self._cut
        try:
            try:
                if not cut:
                    self._pumping = True
                    await self._pump(send, scope.get("extensions", {}).get(CHUNK_WRITER))
            finally:
                self._pumping = False
                watcher.cancel()
        except asyncio.CancelledError:
            if not self._stopping:
                raise  # the server gave up on this request: the body's finally metered it
            assert task is not None
            task.uncancel()
            cut = self._cut and not self._gone
        except OSError:
            pass  # the client left mid-write
        except Exception:
            log.exception("stream response failed")
        finally:
            for callback in self.done:
                callback()
        if cut:
            await self._send_cut(send)

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._gone = True
        self._stop()

    async def _send_cut(self, send: Send) -> None:
        if not self._started:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": self._on_cut, "more_body": False})

    async def _pump(self, send: Send, writer: ChunkWriter | None) -> None:
        body = self._body
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
            self._started = True
            if self._direct is not None and writer is not None and writer.usable:
                self._direct.writer = writer
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await body.aclose()  # type: ignore[attr-defined]
