"""The one module that speaks HTTP to upstreams (aiohttp: pooled keep-alive connections).

Everything else talks to ``Upstream.send`` and ``UpstreamResponse``.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
from collections.abc import AsyncIterator, Mapping

import aiohttp

FD_RESERVE = 64  # descriptors kept for the journal, the ledger, logs and the listening socket


class UpstreamError(Exception):
    """The upstream could not be reached or broke the connection."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the deployment's timeout."""


class UpstreamResponse:
    def __init__(self, resp: aiohttp.ClientResponse, timeout_s: float | None = None) -> None:
        self._resp = resp
        self._timeout_s = timeout_s  # a stream's bound on each read
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream connection failed ({_reason(exc)})") from exc
        finally:
            self._resp.release()

    async def line_batches(self, idle_timeout_s: float | None = None) -> AsyncIterator[list[bytes]]:
        """The body's lines (newline removed) in the batches the network delivered them, so a
        relay can forward what arrived together in one write; a last line without its newline
        comes last, on its own.

        UpstreamTimeout once the request's timeout passes without a read, or ``idle_timeout_s``
        without a complete line: an upstream dripping a byte at a time defeats a per-read
        timeout, not the second.
        """
        content = self._resp.content
        timer = _IdleTimer(content, read_s=self._timeout_s, line_s=idle_timeout_s)
        tail = b""
        try:
            while data := await content.readany():
                lines = (tail + data).split(b"\n")
                tail = lines.pop()
                timer.touch(line=bool(lines))
                if lines:
                    yield lines
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream timed out mid-stream") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream stream broke ({_reason(exc)})") from exc
        finally:
            timer.cancel()
        if tail:
            yield [tail]

    def close(self) -> None:
        """Drop the connection: tells the upstream to stop generating."""
        self._resp.close()

    def release(self) -> None:
        self._resp.release()


class Upstream:
    """A pooled client shared by every deployment."""

    def __init__(self, *, max_connections: int | None = None) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        # one per deployment timeout: ClientTimeout is immutable, built once rather than per call
        self._timeouts: dict[tuple[float, bool], aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        limit = self._max_connections or default_max_connections()
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",)
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

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
        """Send a request; returns once the response headers are in."""
        assert self._session is not None, "Upstream.start() was not called"
        # A stream may legitimately run for long: bound the wait for its headers here, and
        # each read and the gaps between its lines in line_batches (one timer per stream).
        timeout = self._timeouts.get((timeout_s, stream))
        if timeout is None:
            timeout = self._timeouts[timeout_s, stream] = (
                aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=None)
                if stream
                else aiohttp.ClientTimeout(total=timeout_s)
            )
        request = self._session.request(
            method, url, data=body or None, headers=headers, timeout=timeout
        )
        try:
            if stream:
                async with asyncio.timeout(timeout_s):
                    resp = await request
            else:
                resp = await request
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream unreachable ({_reason(exc)})") from exc
        return UpstreamResponse(resp, timeout_s)


class _IdleTimer:
    """A stream's two deadlines (the next read, the next complete line) on one timer for the
    whole stream: a read moves them (a float or two stored) rather than cancelling and
    scheduling a timer per read, as a per-read timeout would; a timer that fires before the
    nearer deadline sleeps on to it. At a deadline the body's reader fails with UpstreamTimeout,
    waking the relay wherever it waits for the next read."""

    __slots__ = ("_content", "_handle", "_line_s", "_loop", "_read_s", "line_due", "read_due")

    def __init__(
        self, content: aiohttp.StreamReader, *, read_s: float | None, line_s: float | None
    ) -> None:
        self._content = content
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
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._expire)
            return
        self._content.set_exception(UpstreamTimeout("upstream timed out mid-stream"))


def default_max_connections() -> int:
    """Upstream connections one process may hold: half its file descriptors (each proxied
    request holds a client socket too), less a reserve for the journal, the ledger and logs.

    Every open stream holds one, so a fixed pool smaller than that (aiohttp's default is 100)
    queues new requests, streams or not, behind the streams already open."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 0  # no limit
    return max(100, (soft - FD_RESERVE) // 2)


def _reason(exc: aiohttp.ClientError) -> str:
    """Why, without the address: error messages reach clients, upstream addresses must not."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error  # its strerror may quote the address: take the errno's own text
        return os.strerror(err.errno) if err.errno else type(err).__name__
    return type(exc).__name__
