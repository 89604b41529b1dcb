"""The one module that speaks HTTP to upstreams (aiohttp: pooled keep-alive connections).

Everything else talks to ``Upstream.send`` and ``UpstreamResponse``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping

import aiohttp


class UpstreamError(Exception):
    """The upstream could not be reached or broke the connection."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the deployment's timeout."""


class UpstreamResponse:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
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

        With ``idle_timeout_s``, UpstreamTimeout once that long passes without a complete line:
        an upstream dripping a byte at a time defeats a per-read timeout, not this one.
        """
        content = self._resp.content
        loop = asyncio.get_running_loop()
        tail = b""
        idle = idle_timeout_s
        deadline = loop.time() + idle if idle is not None else None
        try:
            while True:
                async with asyncio.timeout_at(deadline):
                    data = await content.readany()
                if not data:
                    break
                lines = (tail + data).split(b"\n")
                tail = lines.pop()
                if lines:
                    if idle is not None:
                        deadline = loop.time() + idle
                    yield lines
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream timed out mid-stream") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream stream broke ({_reason(exc)})") from exc
        if tail:
            yield [tail]

    def close(self) -> None:
        """Drop the connection: tells the upstream to stop generating."""
        self._resp.close()

    def release(self) -> None:
        self._resp.release()


class Upstream:
    """A pooled client shared by every deployment."""

    def __init__(self, *, max_connections: int = 1000) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300
        )
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
        # A stream may legitimately run for long: bound each read, not the whole exchange.
        timeout = (
            aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
            if stream
            else aiohttp.ClientTimeout(total=timeout_s)
        )
        try:
            resp = await self._session.request(
                method, url, data=body or None, headers=headers, timeout=timeout
            )
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream unreachable ({_reason(exc)})") from exc
        return UpstreamResponse(resp)


def _reason(exc: aiohttp.ClientError) -> str:
    """Why, without the address: error messages reach clients, upstream addresses must not."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error  # its strerror may quote the address: take the errno's own text
        return os.strerror(err.errno) if err.errno else type(err).__name__
    return type(exc).__name__
