"""The HTTP/1.1 protocol of ``tokenmeter serve``: uvicorn's httptools protocol with limits on
what a client can make the server hold before the app sees a request, and one write per answer.

uvicorn's httptools protocol has no bound on a request's head: an 8 MiB header or 50,000 header
lines are parsed and handed on, and a client sending one byte a second holds its connection
forever. This protocol, used by ``tokenmeter serve``, answers 431 once a head passes
``max_header_bytes`` (counted as it arrives, so memory stays bounded) or ``max_headers`` lines,
and 408 when a head has not arrived within ``header_timeout_s`` of the connection opening or of
the previous request ending. The body's own deadline is the app's (``limits.body_timeout_s``).

uvicorn writes a response's head when the app sends ``http.response.start`` and its body at
``http.response.body``: two sends, and two packets the client wakes up for, per answer. Here
the head waits for the body's first write and leaves with it in one ``writev``; if the body is
not ready within the loop iteration (a stream waiting on its upstream), the head goes alone
then, so a client sees the status as soon as before.

A streamed answer's chunks can skip the ASGI ``send`` (a message dict and uvicorn's checks per
chunk): each request's scope carries a ``ChunkWriter`` under ``extensions[CHUNK_WRITER]``,
which writes a chunk in the framing uvicorn's ``send`` writes, from wherever the relay runs (a
protocol callback of its upstream connection, bench/open_streams.py). The response's start
and end still go through ``send``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

CHUNK_WRITER = "tokenmeter.chunk_writer"  # the scope's extension: a ChunkWriter


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float


class _Refused(Exception):
    pass


class HeadWithBody:
    """The transport as a request's cycle sees it: its first write that is not an interim
    ``100 Continue`` is the response head, held until the next write (the body) or the end of
    the loop iteration, whichever comes first; every other call goes to the transport."""

    __slots__ = ("_head", "_loop", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.writelines((head, data))  # one writev
        elif self._started or data.startswith(b"HTTP/1.1 1"):
            self._transport.write(data)
        else:
            self._started = True
            self._head = data
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():  # the client may have gone meanwhile
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ChunkWriter:
    """Writes a streamed response's body chunks to its client, as ``send`` would write an
    ``http.response.body`` with ``more_body``, for a response already started with chunked
    framing (``usable``). Nothing is written once the client is gone (the response's
    disconnect watcher ends the relay); ``paused`` says the client's buffer is full, and
    ``drain`` waits until it is not (as ``send`` does before its next write)."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle

    @property
    def usable(self) -> bool:
        cycle = self._cycle
        return (
            cycle.response_started
            and cycle.chunked_encoding is True
            and not cycle.response_complete
            and cycle.scope["method"] != "HEAD"
        )

    def write(self, body: bytes) -> None:
        cycle = self._cycle
        if body and not cycle.disconnected:
            cycle.transport.write(b"%x\r\n%b\r\n" % (len(body), body))

    @property
    def paused(self) -> bool:
        return self._cycle.flow.write_paused and not self._cycle.disconnected

    async def drain(self) -> None:
        if self.paused:
            await self._cycle.flow.drain()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, limits: HeadLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_lines = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        too_big = self._awaiting_head and self._head_bytes > self._limits.max_header_bytes
        if self._refusal is None and too_big:
            self._refuse(431, f"request headers exceed {self._limits.max_header_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_lines += 1
        if self._head_lines > self._limits.max_headers:
            self._refusal = (431, f"more than {self._limits.max_headers} request headers")
            raise _Refused  # httptools stops parsing; send_400_response answers the refusal
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._cancel_timer()
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:  # a new cycle, its task not run
            cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]
            extensions: dict[str, Any] = cycle.scope.setdefault("extensions", {})
            extensions[CHUNK_WRITER] = ChunkWriter(cycle)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._expect_head()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._send_refusal(*self._refusal)
            return
        super().send_400_response(msg)

    def _expect_head(self) -> None:
        self._awaiting_head = True
        self._head_bytes = self._head_lines = 0
        self._cancel_timer()
        self._head_timer = self.loop.call_later(self._limits.header_timeout_s, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if self._awaiting_head and self._head_bytes and not self.transport.is_closing():
            self._refuse(
                408, f"request headers not received within {self._limits.header_timeout_s:g} s"
            )
        elif self._awaiting_head and not self.transport.is_closing() and self.cycle is None:
            self.transport.close()  # opened and never used

    def _cancel_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        self._send_refusal(status, message)

    def _send_refusal(self, status: int, message: str) -> None:
        self.logger.warning("refused a request head: %s", message)
        body = (
            b'{"error": {"message": "' + message.encode() + b'", "type": "invalid_request_error", '
            b'"param": null, "code": "request_head_refused"}}'
        )
        head = [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
