"""One upstream connection: an asyncio protocol that writes a request and parses its response
with httptools, one exchange at a time, buffering the body for its one reader.

Memory stays bounded: a stream's reader slower than its upstream stops the socket being read
(``pause_reading``) above ``HIGH_WATER`` buffered bytes, and it is read again once the reader
took what was buffered; only a reader of the whole body (``body()``) buffers it all. A reader
that ``pump``s the body gets it in the protocol's own callback instead, as it is parsed, with
nothing buffered and no task woken per read, until it asks to stop.

The deadline of an exchange is a float on the connection; one loop timer per connection
re-arms itself lazily when it fires before it, so a request on a pooled connection schedules
no timer. At the deadline the exchange fails with ``TimeoutError`` and the connection closes.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from typing import TYPE_CHECKING, Protocol, cast

import httptools

from proxy.gateway.relays.http.request import Headers, PoolKey

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

HIGH_WATER = 256 * 1024  # buffered body bytes above which a stream's socket is not read
# A stream released after its last event usually has only the body's terminator (a zero-size
# chunk) still in flight: the connection waits this long, and for this much, to be reused.
LINGER_S = 1.0
LINGER_BYTES = 16 * 1024
NO_BODY_STATUSES = (204, 304)

# Why an exchange failed, in the words error messages carried when aiohttp was the client, so
# what clients and dashboards saw does not change.
DISCONNECTED = "ServerDisconnectedError"  # closed before the response's headers ended
RESET = "ClientOSError"  # reset or broken before the response's headers ended
BAD_RESPONSE = "ClientResponseError"  # not an HTTP/1.1 response
BAD_BODY = "ClientPayloadError"  # the body cut short, malformed, or not the encoding it said


class ExchangeError(Exception):
    """An exchange failed; ``replied`` says whether any byte of the response had arrived."""

    def __init__(self, reason: str, *, replied: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.replied = replied


class Decoder(Protocol):
    """zlib's decompressor, as a Content-Encoding's decoder."""

    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


class Owner(Protocol):
    """The pool: takes a connection back once a lingering response ended, and is told once
    when a connection closes."""

    def put(self, conn: Connection) -> None: ...

    def forget(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    __slots__ = (
        "_buffered",
        "_chunks",
        "_deadline",
        "_decoder",
        "_framed",
        "_fresh_parser",
        "_head_only",
        "_headers_done",
        "_headers_fut",
        "_interim",
        "_keep_alive",
        "_linger_bytes",
        "_lingering",
        "_loop",
        "_owner",
        "_parser",
        "_paused",
        "_replied",
        "_sink",
        "_stream",
        "_timer",
        "_timer_due",
        "_trailing",
        "_transport",
        "_waiter",
        "_whole",
        "closed",
        "complete",
        "error",
        "headers",
        "idle_since",
        "key",
        "reused",
        "status",
    )

    def __init__(self, key: PoolKey, owner: Owner) -> None:
        self.key = key
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._fresh_parser = False  # a HEAD left the parser expecting a body: replace it
        self.closed = False
        self.reused = False  # set by the pool when it hands out an idle connection
        self.idle_since = 0.0
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf
        self._reset()

    def _reset(self) -> None:
        self._headers_fut: asyncio.Future[None] | None = None
        self._stream = False
        self._head_only = False
        self._replied = False
        self._interim = False  # a 1xx answer: the final one follows
        self._headers_done = False
        self._framed = False  # the body's end is in its framing, not at EOF
        self._keep_alive = False
        self._decoder: Decoder | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._whole = False
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Callable[[bytes], bool] | None = None  # a pump's, while it runs
        self._trailing = False  # bytes after the response: the connection is not reused
        self._lingering = False  # released before its end, which is awaited
        self._linger_bytes = 0  # body bytes it may still see
        self.status = 0
        self.headers = Headers()
        self.complete = False
        self.error: BaseException | None = None

    # --- the exchange, for the client ------------------------------------------------------

    def begin(
        self, data: Sequence[bytes], *, deadline: float, stream: bool, head_only: bool
    ) -> asyncio.Future[None]:
        """Write a request; the future resolves once its response's headers are in. A stream's
        deadline covers the headers, any other the whole body."""
        self._reset()
        fut = self._headers_fut = self._loop.create_future()
        self._stream = stream
        self._head_only = head_only
        if self._fresh_parser:
            self._parser = httptools.HttpResponseParser(self)
            self._fresh_parser = False
        if self.closed or self._transport is None or self._transport.is_closing():
            self._fail(ExchangeError(DISCONNECTED, replied=False))
            return fut
        self._arm(deadline)
        self._transport.writelines(data)
        return fut

    async def next_data(self) -> bytes:
        """What arrived since the last call (at least one byte); b"" once the body ended."""
        while not self._chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        data = self._take()
        if self._paused:
            self._resume()
        return data

    async def pump(self, sink: Callable[[bytes], bool]) -> bool:
        """Hand the body to ``sink`` as it arrives, from the protocol's callback (no buffering,
        no task woken per read): what was buffered first, then each parsed piece, until the
        body ended (True) or ``sink`` returned True to stop (False: what arrives meanwhile is
        buffered as for ``next_data``, where a later ``pump`` or ``next_data`` finds it).
        Raises the exchange's error. ``sink`` must not raise: it runs inside the parser."""
        if self._chunks and sink(self._take()):
            return False
        if self._paused:
            self._resume()
        self._sink = sink
        try:
            while self._sink is not None:
                if self.error is not None:
                    raise self.error
                if self.complete:
                    return not (self._chunks and sink(self._take()))  # a decoder's last bytes
                waiter = self._waiter = self._loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
        finally:
            self._sink = None
        return False

    @property
    def reader_behind(self) -> bool:
        """Body bytes wait unread while the reader is not waiting for more (its client holds it
        up): the reader is behind, not the server late."""
        return bool(self._chunks) and self._waiter is None and self._sink is None

    def _take(self) -> bytes:
        """What is buffered, taken."""
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        return data

    async def body(self) -> bytes:
        """The whole body, once it ended."""
        self._whole = True
        if self._paused:
            self._resume()
        while not self.complete and self.error is None:
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        if self.error is not None:
            raise self.error
        data = b"".join(self._chunks)
        self._chunks = []
        return data

    @property
    def reusable(self) -> bool:
        """Read to the end, no error, and neither side said ``Connection: close``."""
        return (
            self.complete
            and self.error is None
            and self._keep_alive
            and not self._trailing
            and not self.closed
        )

    def release(self) -> None:
        """The reader is done: back to the pool if the response ended and may be followed by
        another; one whose body's end is only in flight waits for it (``LINGER_S``); any other
        is closed."""
        if self.reusable:
            self._owner.put(self)
        elif self._may_linger():
            self._lingering = True
            self._linger_bytes = LINGER_BYTES
            self._chunks = []
            self._arm(self._loop.time() + LINGER_S)
        else:
            self.close()

    def _may_linger(self) -> bool:
        return (
            self._headers_done
            and self._framed
            and self._keep_alive
            and not self._paused
            and self.error is None
            and not self.closed
            and not self._trailing
        )

    def fail(self, exc: BaseException) -> None:
        """End the exchange with ``exc`` (raised to its reader); the connection stays open."""
        self._fail(exc)

    def close(self) -> None:
        """Drop the connection at once (the upstream sees it and stops generating)."""
        if self.closed:
            return
        self.closed = True
        self._deadline = math.inf
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()
        if not self.complete:
            self._fail(ExchangeError(DISCONNECTED, replied=self._replied))
        self._owner.forget(self)

    def close_soon(self) -> None:
        """``close`` from wherever the last reference went (the garbage collector's thread)."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.close)

    def idle(self, now: float) -> None:
        self._deadline = math.inf
        self.idle_since = now

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._headers_fut is None or self.complete:
            self._trailing = True  # nobody asked: garbage on an idle connection
            self.close()
            return
        self._replied = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            reason = BAD_BODY if self._headers_done else BAD_RESPONSE
            self._fail(ExchangeError(reason, replied=True))
            self.close()
            return
        if self._lingering and (self.complete or self.error is not None):
            self._lingering = False
            self.release()  # its end arrived: pooled, unless the response said otherwise

    def eof_received(self) -> bool | None:
        if self._headers_fut is None or self.complete:
            self.close()  # the server closed an idle connection: never handed out again
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._headers_fut is not None and not self.complete:
            if self._headers_done and not self._framed and exc is None:
                self._end_at_eof()
            elif self._headers_done:
                self._fail(ExchangeError(BAD_BODY, replied=True))
            else:
                self._fail(ExchangeError(RESET if exc else DISCONNECTED, replied=self._replied))
        self._transport = None
        self.close()

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            self._trailing = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.add(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            self._interim = True
            self.headers = Headers()
            return
        self.status = status
        self._keep_alive = self._parser.should_keep_alive()
        by_name = self.headers.by_name
        self._framed = "content-length" in by_name or "chunked" in by_name.get(
            "transfer-encoding", ""
        )
        encoding = by_name.get("content-encoding")
        if encoding is not None:
            self._decoder = _decoder(encoding.strip().lower())
        self._headers_done = True
        if self._stream:
            self._deadline = math.inf  # the reader's own timer takes over
        fut = self._headers_fut
        if fut is not None and not fut.done():
            fut.set_result(None)
        if self._head_only or status in NO_BODY_STATUSES:
            self._fresh_parser = self._head_only
            self._complete()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        if self._lingering:
            self._linger_bytes -= len(body)
            if self._linger_bytes < 0:
                self._fail(ExchangeError(BAD_BODY, replied=True))  # more than an end
            return
        if self._decoder is not None:
            body = self._decoder.decompress(body)
            if not body:
                return
        sink = self._sink
        if sink is not None:
            if sink(body):  # it asked to stop: its pump returns, and the rest is buffered
                self._sink = None
                self._wake()
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._whole:
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._buffered > HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.complete:
            return
        if not self._headers_done:  # out of step with the responses: never trust it again
            self._fail(ExchangeError(BAD_RESPONSE, replied=True))
            self._trailing = True
            return
        decoder = self._decoder
        if decoder is not None and not self._lingering:
            tail = decoder.flush()
            if tail:
                self._chunks.append(tail)
            if not decoder.eof:
                raise zlib.error("compressed body cut short")
        self._complete()

    # --- internals --------------------------------------------------------------------------

    def _end_at_eof(self) -> None:
        """A body without framing ends when the server closes."""
        try:
            self.on_message_complete()
        except zlib.error:
            self._fail(ExchangeError(BAD_BODY, replied=True))

    def _complete(self) -> None:
        self.complete = True
        self._deadline = math.inf
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.error is not None or self.complete:
            return
        self.error = exc
        fut = self._headers_fut
        if fut is not None and not fut.done():
            fut.set_exception(exc)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self) -> None:
        self._paused = False
        if self._transport is not None:
            self._transport.resume_reading()

    def _arm(self, deadline: float) -> None:
        self._deadline = deadline
        if deadline < self._timer_due or self._timer is None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_due = deadline

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = math.inf
        deadline = self._deadline
        if deadline == math.inf:
            return
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_due = deadline
            return
        self._fail(TimeoutError())
        self.close()


def _decoder(encoding: str) -> Decoder | None:
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _DeflateDecoder()
    return None


class _DeflateDecoder:
    """``deflate`` as sent: zlib-wrapped as the RFC says, or raw, as some servers send it."""

    __slots__ = ("_inner",)

    def __init__(self) -> None:
        self._inner: zlib._Decompress | None = None

    def decompress(self, data: bytes) -> bytes:
        if self._inner is None:
            zlib_header = bool(data) and data[0] & 0x0F == 8
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        return self._inner.decompress(data)

    def flush(self) -> bytes:
        return self._inner.flush() if self._inner is not None else b""

    @property
    def eof(self) -> bool:
        return self._inner is None or self._inner.eof
