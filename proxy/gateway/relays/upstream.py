"""The one module that speaks HTTP to upstreams; everything else talks to ``Upstream.send`` and
``UpstreamResponse``. Under it, an HTTP/1.1 client of our own (``relays/http/``): pooled
keep-alive connections on an asyncio protocol, responses parsed by httptools.

Why our own: with aiohttp as the client, 31-34 % of the gateway's GIL-holding samples at c=64
were in it (docs/performance.md, "Where the time goes"): per call ``ClientSession._request``
built a request object, a timeout handle and a response object, and its stream reader woke per
read. Here a request on a pooled connection is one write of a head serialised in one f-string,
one future for the headers, no timer (one per connection, re-armed lazily), and the body
handed over as it was parsed: the gateway's instructions per request fell from 1.22 to 0.91 M
non-streaming and from 2.00 to 1.42 M streaming (callgrind, ``bench/instructions.py``).

What it does: http and https (the default TLS context, SNI, verified), IPv4 and IPv6; a limit
on all connections with waiters served in order (``http/pool.py``); bodies by Content-Length,
chunked or until EOF, none for HEAD, 204 and 304; gzip and deflate decoded, as aiohttp did when
it sent ``Accept-Encoding: gzip, deflate`` (hosted upstreams compress when asked and we keep
asking: the bytes cross the internet, the decoding is cheap); bounded buffering of streams, and of
any one line of a stream (``MAX_LINE_BYTES``).

What it deliberately does not do: HTTP/2, proxies (aiohttp did not read the proxy environment
either), redirects, cookies, credentials in URLs (refused: keys go in headers), Expect/100-continue,
trailers, a DNS cache (names are resolved per new connection, and connections are reused), or
retries, but one: a request on a reused connection that failed before any byte of a response
arrived is sent once more on a new connection. A server closes an idle keep-alive connection
between requests, so a close that races our write means the request was never read; once any
byte of a response arrived nothing is ever retried.

Error messages reach clients: they say what failed in aiohttp's words, as before, and never
the upstream's address or key (``_reason``).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import resource
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Mapping

from proxy.gateway.relays.http.connection import Connection, ExchangeError
from proxy.gateway.relays.http.pool import Pool
from proxy.gateway.relays.http.request import Target, parse_target, request_head

FD_RESERVE = 64  # descriptors kept for the journal, the ledger, logs and the listening socket
_MAX_TARGETS = 4096  # parsed URLs kept: a deployment has a handful


class UpstreamError(Exception):
    """The upstream could not be reached or broke the connection."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the deployment's timeout."""


class UpstreamResponse:
    """A response whose headers are in; its body is read once, whole or as lines, and then the
    connection goes back to the pool (``release``) or is dropped (``close``)."""

    __slots__ = ("_conn", "headers", "status", "timeout_s")

    def __init__(self, conn: Connection, timeout_s: float | None = None) -> None:
        self._conn: Connection | None = conn
        self.timeout_s = timeout_s  # a stream's bound on each read
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def read(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise UpstreamError("upstream connection failed (released)")
        try:
            return await conn.body()
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream timed out") from exc
        except ExchangeError as exc:
            raise UpstreamError(f"upstream connection failed ({exc.reason})") from exc
        finally:
            self.release()

    async def line_batches(self, idle_timeout_s: float | None = None) -> AsyncIterator[list[bytes]]:
        """The body's lines (newline removed) in the batches the network delivered them, so a
        relay can forward what arrived together in one write; a last line without its newline
        comes last, on its own.

        UpstreamTimeout once the request's timeout passes without a read, or ``idle_timeout_s``
        without a complete line: an upstream dripping a byte at a time defeats a per-read
        timeout, not the second. UpstreamError for a line over ``MAX_LINE_BYTES``.
        """
        conn = self._conn
        if conn is None:
            raise UpstreamError("upstream stream broke (released)")
        timer = _IdleTimer(self, read_s=self.timeout_s, line_s=idle_timeout_s)
        splitter = _Lines()
        try:
            while data := await conn.next_data():
                lines = splitter.split(data)
                timer.touch(line=bool(lines))
                if lines:
                    yield lines
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream timed out mid-stream") from exc
        except ExchangeError as exc:
            raise UpstreamError(f"upstream stream broke ({exc.reason})") from exc
        finally:
            timer.cancel()
        if tail := splitter.rest():
            yield [tail]

    def feed(self, idle_timeout_s: float | None = None) -> LineFeed:
        """The body's lines as ``line_batches`` yields them, handed to a callback as each read
        arrives instead (``LineFeed``), under the same two deadlines."""
        conn = self._conn
        if conn is None:
            raise UpstreamError("upstream stream broke (released)")
        return LineFeed(self, conn, idle_timeout_s)

    @property
    def reader_behind(self) -> bool:
        """Part of the body waits for a reader busy elsewhere (``Connection.reader_behind``)."""
        return self._conn is not None and self._conn.reader_behind

    def fail(self, exc: BaseException) -> None:
        """The body's reader raises ``exc`` (a stream's deadline passed)."""
        if self._conn is not None:
            self._conn.fail(exc)

    def close(self) -> None:
        """Drop the connection: tells the upstream to stop generating."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def release(self) -> None:
        """Back to the pool if the body was read to the end (or only its end is still in
        flight) and both sides keep the connection alive; else dropped."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.release()

    def __del__(self) -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            conn.close_soon()  # a response nobody finished: its connection must not leak


class LineFeed:
    """A stream's lines handed to a sink from the connection's own read callback, in the
    batches the network delivered them (``line_batches``' batches, a last line without its
    newline last): a relay that writes each batch on to its client at once, in the same
    callback, costs no task wake-up, future or generator step per read.

    ``pump(sink)`` runs until the body ended (True) or ``sink`` returned True to stop (False:
    pump again to go on; a client that must drain first, say). ``sink`` must not raise (it runs
    inside the parser): it keeps its error for its caller. ``close`` when done."""

    __slots__ = ("_conn", "_error", "_lines", "_sink", "_timer")

    def __init__(
        self, resp: UpstreamResponse, conn: Connection, idle_timeout_s: float | None
    ) -> None:
        self._conn = conn
        self._sink: Callable[[list[bytes]], bool] | None = None
        self._lines = _Lines()
        self._error: UpstreamError | None = None
        self._timer = _IdleTimer(resp, read_s=resp.timeout_s, line_s=idle_timeout_s)

    async def pump(self, sink: Callable[[list[bytes]], bool]) -> bool:
        self._sink = sink
        try:
            ended = await self._conn.pump(self._on_data)
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream timed out mid-stream") from exc
        except ExchangeError as exc:
            raise UpstreamError(f"upstream stream broke ({exc.reason})") from exc
        if self._error is not None:
            raise self._error
        if ended and (tail := self._lines.rest()):
            sink([tail])
        return ended

    def _on_data(self, data: bytes) -> bool:
        splitter = self._lines
        try:
            if splitter.parts:
                lines = splitter.split(data)
            else:  # a read that starts a line, as most do: _Lines.split's first step, inline
                lines = data.split(b"\n")
                tail = lines.pop()
                if tail:
                    splitter.start(tail)
        except UpstreamError as exc:  # kept for pump: nothing may raise inside the parser
            self._error = exc
            return True
        self._timer.touch(line=bool(lines))
        sink = self._sink
        return bool(lines) and sink is not None and sink(lines)

    def close(self) -> None:
        self._timer.cancel()


MAX_LINE_BYTES = 8 << 20
"""The longest line of a stream: an upstream's one event (a chunk, a delta) is far shorter, and
a stream that never ends its line must not grow without bound in the gateway's memory."""


class _Lines:
    """A body split into lines across reads: a line longer than one read is gathered piece by
    piece and joined once, when its newline arrives (re-joining it at every read would copy it
    over and over); one longer than ``MAX_LINE_BYTES`` is the upstream's error."""

    __slots__ = ("_size", "parts")

    def __init__(self) -> None:
        self.parts: list[bytes] = []  # the unfinished line's pieces
        self._size = 0

    def split(self, data: bytes) -> list[bytes]:
        """The lines this read completes (newlines removed)."""
        parts = self.parts
        if parts:
            if data.find(b"\n") < 0:  # the line goes on
                self._grow(len(data))
                parts.append(data)
                return []
            parts.append(data)
            data = b"".join(parts)
            self.parts = []
        lines = data.split(b"\n")
        tail = lines.pop()
        if tail:
            self.start(tail)
        return lines

    def start(self, tail: bytes) -> None:
        """A read ended inside a line: its first piece."""
        self.parts = [tail]
        self._size = 0
        self._grow(len(tail))

    def rest(self) -> bytes:
        """The last line, when the body ended without its newline."""
        rest = b"".join(self.parts)
        self.parts = []
        return rest

    def _grow(self, n: int) -> None:
        self._size += n
        if self._size > MAX_LINE_BYTES:
            raise UpstreamError(f"upstream sent a line over {MAX_LINE_BYTES >> 20} MiB")


class Upstream:
    """A pooled client shared by every deployment."""

    def __init__(
        self, *, max_connections: int | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._max_connections = max_connections
        self._ssl_context = ssl_context  # tests trust their own CA; else the system's
        self._pool: Pool | None = None
        self._targets: dict[str, Target] = {}

    async def start(self) -> None:
        limit = self._max_connections or default_max_connections()
        context = self._ssl_context or ssl.create_default_context()
        self._pool = Pool(limit=limit, ssl_context=context)

    async def stop(self) -> None:
        if self._pool is not None:
            self._pool.close()

    async def send(
        self,
        url: str,
        *,
        body: bytes,
        headers: Mapping[str, str],
        timeout_s: float,
        stream: bool,
        method: str = "POST",
    ) -> UpstreamResponse:
        """Send a request; returns once the response headers are in.

        A stream may legitimately run for long: ``timeout_s`` bounds the wait for its headers
        here, then each read and the gaps between its lines in line_batches (one timer per
        stream); any other response's headers and body together."""
        pool = self._pool
        assert pool is not None, "Upstream.start() was not called"
        target = self._targets.get(url) or self._target(url)
        data = (request_head(method, target, headers, len(body)), body)
        deadline = asyncio.get_running_loop().time() + timeout_s
        head_only = method == "HEAD"
        conn = pool.take_idle(target.key)
        try:
            if conn is None:
                conn = await pool.connect(target, deadline=deadline)
            try:
                await conn.begin(data, deadline=deadline, stream=stream, head_only=head_only)
            except ExchangeError as exc:
                if exc.replied or not conn.reused:
                    raise
                # The server closed the idle connection as the request went out: never read.
                conn = await pool.connect(target, deadline=deadline)
                await conn.begin(data, deadline=deadline, stream=stream, head_only=head_only)
        except BaseException as exc:
            if conn is not None:
                conn.close()  # failed or cancelled mid-exchange: the upstream is told at once
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout("upstream timed out") from exc
            if isinstance(exc, ExchangeError):
                raise UpstreamError(f"upstream unreachable ({exc.reason})") from exc
            if isinstance(exc, OSError):
                raise UpstreamError(f"upstream unreachable ({_reason(exc)})") from exc
            raise
        return UpstreamResponse(conn, timeout_s)

    def _target(self, url: str) -> Target:
        try:
            target = parse_target(url)
        except ValueError as exc:
            raise UpstreamError("upstream unreachable (InvalidURL)") from exc
        if len(self._targets) >= _MAX_TARGETS:
            self._targets.clear()
        self._targets[url] = target
        return target


class _IdleTimer:
    """A stream's two deadlines (the next read, the next complete line) on one timer for the
    whole stream: a read moves them (a float or two stored) rather than cancelling and
    scheduling a timer per read, as a per-read timeout would; a timer that fires before the
    nearer deadline sleeps on to it. At a deadline the body's reader fails with UpstreamTimeout,
    waking the relay wherever it waits for the next read.

    The deadlines are the upstream's, not the client's: while what the upstream sent waits
    unread and the relay is not waiting for more (it waits on a client that reads slower), a
    passed deadline is looked at again one span later instead of failing the stream; the
    reader's next read moves it as usual. Bytes that arrive as a deadline passes, while the
    relay waits for them, do not save a stream that had no line in time."""

    __slots__ = ("_handle", "_line_s", "_loop", "_read_s", "_resp", "line_due", "read_due")

    def __init__(
        self, resp: UpstreamResponse, *, read_s: float | None, line_s: float | None
    ) -> None:
        self._resp = resp
        self._loop = asyncio.get_running_loop()
        self._read_s = read_s or math.inf
        self._line_s = line_s or math.inf
        now = self._loop.time()
        self.read_due = now + self._read_s
        self.line_due = now + self._line_s
        due = min(self.read_due, self.line_due)
        self._handle = self._loop.call_at(due, self._expire) if due < math.inf else None

    def touch(self, *, line: bool) -> None:
        now = self._loop.time()
        self.read_due = now + self._read_s
        if line:
            self.line_due = now + self._line_s

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _expire(self) -> None:
        due = min(self.read_due, self.line_due)
        now = self._loop.time()
        if now < due:
            self._handle = self._loop.call_at(due, self._expire)
            return
        if self._resp.reader_behind:  # held up by its client, not by the upstream
            self._handle = self._loop.call_at(now + min(self._read_s, self._line_s), self._expire)
            return
        self._resp.fail(UpstreamTimeout("upstream timed out mid-stream"))


def default_max_connections() -> int:
    """Upstream connections one process may hold: half its file descriptors (each proxied
    request holds a client socket too), less a reserve for the journal, the ledger and logs.

    Every open stream holds one, so a fixed pool smaller than that (aiohttp's default was 100)
    queues new requests, streams or not, behind the streams already open."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 0  # no limit
    return max(100, (soft - FD_RESERVE) // 2)


_ERRNO = re.compile(r"\[Errno (\d+)\]")


def _reason(exc: OSError) -> str:
    """Why a connection failed, without the address: error messages reach clients, upstream
    addresses must not. An errno's own text (a strerror may quote the address)."""
    if isinstance(exc, ssl.SSLError | socket.gaierror):
        return type(exc).__name__
    if exc.errno:
        return os.strerror(exc.errno)
    # asyncio's "Multiple exceptions: [Errno 111] Connect call failed ('::1', ...)": the first
    found = _ERRNO.search(str(exc))
    return os.strerror(int(found.group(1))) if found else type(exc).__name__
