"""The upstream client's stream deadlines and pool, against a real upstream on a loopback socket
that sends its lines on a schedule."""

from __future__ import annotations

import asyncio
import resource
import time

import pytest

from proxy.gateway.relays.upstream import (
    FD_RESERVE,
    Upstream,
    UpstreamTimeout,
    default_max_connections,
)

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve(writes: list[tuple[float, bytes]], *, end: bool) -> asyncio.Server:
    """Answers one request with ``writes`` (delay in s, bytes) then, if ``end``, the last chunk."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(HEAD)
        for delay, data in writes:
            await asyncio.sleep(delay)  # the upstream's own pace, not a wait for state
            writer.write(chunk(data))
        if end:
            writer.write(b"0\r\n\r\n")
        await reader.read()  # until the client hangs up
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def lines_of(
    server: asyncio.Server, upstream: Upstream, *, timeout_s: float, idle_s: float
) -> list[bytes]:
    port = server.sockets[0].getsockname()[1]
    resp = await upstream.send(
        f"http://127.0.0.1:{port}/", body=b"{}", headers={}, timeout_s=timeout_s, stream=True
    )
    got: list[bytes] = []
    try:
        async for batch in resp.line_batches(idle_s):
            got += batch
    finally:
        resp.close()
    return got


async def test_lines_that_keep_coming_outlast_the_idle_deadline_many_times(
    upstream: Upstream,
) -> None:
    server = await serve([(0.1, b"data: %d\n" % i) for i in range(8)], end=True)
    async with server:
        got = await lines_of(server, upstream, timeout_s=5, idle_s=0.25)
    assert got == [b"data: %d" % i for i in range(8)]


async def test_a_stream_that_drips_without_a_line_ends_at_the_idle_deadline(
    upstream: Upstream,
) -> None:
    server = await serve([(0, b"data: 0\n")] + [(0.1, b"x")] * 30, end=True)
    async with server:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await lines_of(server, upstream, timeout_s=5, idle_s=0.5)
    assert 0.499 <= time.monotonic() - started < 2.5  # libuv counts whole ms


async def test_a_stream_that_stops_sending_ends_at_the_read_deadline(upstream: Upstream) -> None:
    server = await serve([(0, b"data: 0\n"), (0.2, b"data: 1\n")], end=False)
    async with server:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await lines_of(server, upstream, timeout_s=0.5, idle_s=60)
    assert 0.699 <= time.monotonic() - started < 2.5


def test_the_pool_holds_half_the_descriptors_so_open_streams_never_queue_new_requests() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    try:
        assert default_max_connections() == (4096 - FD_RESERVE) // 2
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
