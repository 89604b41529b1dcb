"""The upstream HTTP/1.1 client itself (relays/http/), against a loopback server that answers
each request with scripted bytes and counts the connections they came on."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import socket
import ssl
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from proxy.gateway.relays.http.request import parse_target
from proxy.gateway.relays.upstream import Upstream, UpstreamError, UpstreamTimeout

Reply = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]
"""Answers the request (its head) on connection number n; False: close the connection."""


def ok(body: bytes, *headers: str) -> bytes:
    fields = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{fields}\r\n".encode() + body


def chunked(*parts: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


class Wire:
    """A loopback server: ``reply`` answers every request; what it saw is kept."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[tuple[int, bytes]] = []  # (connection number, request head)
        self.hung_up: list[int] = []  # connections the client closed
        self.ended: list[int] = []  # connections closed, by either side
        self.server: asyncio.Server | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Wire:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_context)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, path: str = "/v1/chat/completions", host: str = "127.0.0.1") -> str:
        scheme = "https" if host == "localhost" else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = self.connections
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.hung_up.append(n)
                    return
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.lower().split(b"\r\n")
                        if line.startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.requests.append((n, head))
                if not await self.reply(n, head, writer):
                    break
                await writer.drain()
        except ConnectionError:
            self.hung_up.append(n)
        finally:
            writer.close()
            self.ended.append(n)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


def answer(data: bytes, *, close: bool = False) -> Reply:
    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        return not close

    return reply


@pytest.fixture(
    scope="module",
    params=[asyncio.DefaultEventLoopPolicy(), uvloop.EventLoopPolicy()],
    ids=["asyncio", "uvloop"],
)
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test on both loops: serve runs on uvloop, whose transports differ in the details."""
    policy: asyncio.AbstractEventLoopPolicy = request.param
    return policy


async def until(check: Callable[[], object], *, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def post(upstream: Upstream, url: str, *, stream: bool = False, timeout_s: float = 5):
    return await upstream.send(
        url,
        body=b"{}",
        headers={"content-type": "application/json"},
        timeout_s=timeout_s,
        stream=stream,
    )


async def body_of(upstream: Upstream, url: str) -> bytes:
    resp = await post(upstream, url)
    return await resp.read()


# --- keep-alive --------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(upstream: Upstream) -> None:
    wire = await Wire(answer(ok(b"{}"))).start()
    assert [await body_of(upstream, wire.url()) for _ in range(3)] == [b"{}"] * 3
    assert wire.connections == 1 and [n for n, _ in wire.requests] == [0, 0, 0]
    await wire.stop()


async def test_a_response_saying_connection_close_is_not_reused(upstream: Upstream) -> None:
    wire = await Wire(answer(ok(b"{}", "connection: close"))).start()
    await body_of(upstream, wire.url())
    await body_of(upstream, wire.url())
    assert wire.connections == 2
    await wire.stop()


async def test_an_idle_connection_the_server_closed_is_not_reused(upstream: Upstream) -> None:
    wire = await Wire(answer(ok(b"{}"), close=True)).start()  # closes without saying so
    await body_of(upstream, wire.url())
    await until(lambda: wire.ended == [0])
    assert await body_of(upstream, wire.url()) == b"{}"
    assert wire.connections == 2
    await wire.stop()


async def test_a_request_the_server_dropped_unanswered_on_a_reused_connection_is_sent_again(
    upstream: Upstream,
) -> None:
    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        if len(wire.requests) == 2:
            return False  # the second request, on the kept-alive connection: no answer
        writer.write(ok(b"{}"))
        return True

    wire = await Wire(reply).start()
    await body_of(upstream, wire.url())
    assert await body_of(upstream, wire.url()) == b"{}"
    assert [n for n, _ in wire.requests] == [0, 0, 1]
    await wire.stop()


async def test_a_request_is_never_sent_again_once_a_response_byte_arrived(
    upstream: Upstream,
) -> None:
    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b"{}") if len(wire.requests) == 1 else b"HTTP/1.1 2")
        return len(wire.requests) == 1

    wire = await Wire(reply).start()
    await body_of(upstream, wire.url())
    with pytest.raises(UpstreamError, match=r"upstream unreachable \(ServerDisconnectedError\)"):
        await body_of(upstream, wire.url())
    assert len(wire.requests) == 2
    await wire.stop()


async def test_a_new_connection_dropped_unanswered_is_not_sent_again(upstream: Upstream) -> None:
    wire = await Wire(answer(b"", close=True)).start()
    with pytest.raises(UpstreamError, match=r"\(ServerDisconnectedError\)"):
        await body_of(upstream, wire.url())
    assert len(wire.requests) == 1
    await wire.stop()


STREAM_HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


def streaming_then(after_release: bytes | None) -> tuple[Reply, asyncio.Event]:
    """The first request gets a stream's head and one line; ``after_release`` follows once the
    event is set (None: nothing follows). Later requests get a small JSON answer."""
    released = asyncio.Event()

    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 0 and not released.is_set():
            writer.write(STREAM_HEAD + b"e\r\ndata: [DONE]\n\n\r\n")
            if after_release is None:
                return True
            await writer.drain()
            await released.wait()
            writer.write(after_release)
        else:
            writer.write(ok(b"{}"))
        return True

    return reply, released


async def released_after_the_first_line(upstream: Upstream, wire: Wire) -> None:
    resp = await post(upstream, wire.url(), stream=True)
    assert await anext(resp.line_batches()) == [b"data: [DONE]", b""]
    resp.release()


async def test_a_stream_released_with_only_its_end_in_flight_is_pooled_once_it_arrives(
    upstream: Upstream,
) -> None:
    reply, released = streaming_then(b"0\r\n\r\n")
    wire = await Wire(reply).start()
    await released_after_the_first_line(upstream, wire)
    released.set()
    await until(lambda: len(wire.requests) == 1 and upstream_idle(upstream))
    assert await body_of(upstream, wire.url()) == b"{}"
    assert wire.connections == 1
    await wire.stop()


async def test_a_stream_released_with_more_than_its_end_to_come_is_closed(
    upstream: Upstream,
) -> None:
    more = b"%x\r\n%s\r\n" % (32768, b"x" * 32768)
    reply, released = streaming_then(more)
    wire = await Wire(reply).start()
    await released_after_the_first_line(upstream, wire)
    released.set()
    await until(lambda: wire.hung_up == [0])
    assert await body_of(upstream, wire.url()) == b"{}"
    assert wire.connections == 2
    await wire.stop()


async def test_a_stream_released_whose_end_never_comes_is_closed(upstream: Upstream) -> None:
    reply, _ = streaming_then(None)
    wire = await Wire(reply).start()
    started = time.monotonic()
    await released_after_the_first_line(upstream, wire)
    await until(lambda: wire.hung_up == [0])
    assert 0.9 <= time.monotonic() - started < 3  # LINGER_S
    await wire.stop()


async def test_a_closed_stream_drops_its_connection_at_once(upstream: Upstream) -> None:
    reply, _ = streaming_then(None)
    wire = await Wire(reply).start()
    resp = await post(upstream, wire.url(), stream=True)
    started = time.monotonic()
    resp.close()
    await until(lambda: wire.hung_up == [0])
    assert time.monotonic() - started < 0.5
    await wire.stop()


def upstream_idle(upstream: Upstream) -> bool:
    return upstream._pool is not None and upstream._pool.idle > 0


async def test_a_stream_read_to_its_end_goes_back_to_the_pool(upstream: Upstream) -> None:
    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(chunked(b"data: 1\n", b"data: 2\n") if len(wire.requests) == 1 else ok(b"{}"))
        return True

    wire = await Wire(reply).start()
    resp = await post(upstream, wire.url(), stream=True)
    assert [line async for batch in resp.line_batches() for line in batch] == [
        b"data: 1",
        b"data: 2",
    ]
    resp.release()
    assert await body_of(upstream, wire.url()) == b"{}"
    assert wire.connections == 1
    await wire.stop()


# --- bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "close"),
    [
        (ok(b'{"a": 1}'), False),
        (chunked(b'{"a"', b": 1}"), False),
        (b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"a": 1}', True),
        (ok(gzip.compress(b'{"a": 1}'), "content-encoding: gzip"), False),
        (ok(zlib.compress(b'{"a": 1}'), "content-encoding: deflate"), False),
        (ok(zlib.compress(b'{"a": 1}')[2:-4], "content-encoding: deflate"), False),  # raw
    ],
    ids=["content-length", "chunked", "until-eof", "gzip", "deflate", "raw-deflate"],
)
async def test_bodies_in_every_framing_and_encoding(
    upstream: Upstream, raw: bytes, close: bool
) -> None:
    wire = await Wire(answer(raw, close=close)).start()
    assert await body_of(upstream, wire.url()) == b'{"a": 1}'
    await wire.stop()


async def test_a_gzip_stream_is_decoded_as_it_arrives(upstream: Upstream) -> None:
    squeeze = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    first = squeeze.compress(b"data: 1\n") + squeeze.flush(zlib.Z_SYNC_FLUSH)
    rest = squeeze.compress(b"data: 2\n") + squeeze.flush()
    sent = asyncio.Event()

    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-encoding: gzip\r\n\r\n"
        )
        writer.write(b"%x\r\n%s\r\n" % (len(first), first))
        await sent.wait()
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        return True

    wire = await Wire(reply).start()
    resp = await post(upstream, wire.url(), stream=True)
    batches = resp.line_batches()
    assert await anext(batches) == [b"data: 1"]  # before the rest was even sent
    sent.set()
    assert [batch async for batch in batches] == [[b"data: 2"]]
    resp.release()
    await wire.stop()


class Collect:
    """A LineFeed sink that keeps the batches and asks to stop after ``stop_after`` of them."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.batches: list[list[bytes]] = []
        self.stop_after = stop_after

    def __call__(self, lines: list[bytes]) -> bool:
        self.batches.append(lines)
        return len(self.batches) == self.stop_after


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
async def test_a_fed_stream_hands_over_what_line_batches_yields(
    upstream: Upstream, gzipped: bool
) -> None:
    parts = [b"data: 1\ndata: 2\n", b"data: 3", b"\ndata: 4\n", b"data: [DONE]"]
    squeeze = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    sent = asyncio.Event()

    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        encoding = b"content-encoding: gzip\r\n" if gzipped else b""
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n" + encoding + b"\r\n")
        for i, part in enumerate(parts):
            if gzipped:
                part = squeeze.compress(part) + squeeze.flush(
                    zlib.Z_SYNC_FLUSH if i < len(parts) - 1 else zlib.Z_FINISH
                )
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await sent.wait()
        writer.write(b"0\r\n\r\n")
        return True

    wire = await Wire(reply).start()
    resp = await post(upstream, wire.url(), stream=True)
    feed = resp.feed()
    sink = Collect(stop_after=1)
    assert await feed.pump(sink) is False  # the sink asked to stop after the first read
    assert sink.batches == [[b"data: 1", b"data: 2"]]
    sent.set()  # the rest arrives while nobody pumps: buffered, handed over by the next pump
    await until(lambda: resp._conn is not None and resp._conn._buffered > 0)
    sink.stop_after = None
    assert await feed.pump(sink) is True
    feed.close()
    got = [line for batch in sink.batches for line in batch]
    assert got == [b"data: 1", b"data: 2", b"data: 3", b"data: 4", b"data: [DONE]"]
    assert sink.batches[-1] == [b"data: [DONE]"]  # the line without its newline, last
    resp.release()
    await wire.stop()


async def test_a_fed_stream_that_breaks_raises_upstream_error(upstream: Upstream) -> None:
    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\ndata: 1\n\r\n")
        await writer.drain()
        return False  # closed mid-body

    wire = await Wire(reply).start()
    resp = await post(upstream, wire.url(), stream=True)
    feed = resp.feed()
    sink = Collect()
    with pytest.raises(UpstreamError, match="upstream stream broke"):
        await feed.pump(sink)
    feed.close()
    assert sink.batches == [[b"data: 1"]]
    resp.close()
    await wire.stop()


async def test_a_fed_stream_that_goes_quiet_ends_at_its_read_deadline(upstream: Upstream) -> None:
    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\ndata: 1\n\r\n")
        await asyncio.sleep(3)
        return False

    wire = await Wire(reply).start()
    resp = await post(upstream, wire.url(), stream=True, timeout_s=0.3)
    feed = resp.feed()
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await feed.pump(Collect())
    assert time.monotonic() - started < 2
    feed.close()
    resp.close()
    await wire.stop()


def lines_every(seconds: float, count: int) -> Reply:
    """A stream of ``count`` lines, one every ``seconds``, then its end."""

    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(count):
            line = b"data: %d\n" % i
            writer.write(b"%x\r\n%s\r\n" % (len(line), line))
            await writer.drain()
            await asyncio.sleep(seconds)
        writer.write(b"0\r\n\r\n")
        return True

    return reply


@pytest.mark.parametrize("reader", ["line_batches", "feed"])
async def test_a_reader_held_up_by_its_client_outlasts_the_stream_deadlines(
    upstream: Upstream, reader: str
) -> None:
    wire = await Wire(lines_every(0.05, 20)).start()  # a line every 50 ms for 1 s
    resp = await post(upstream, wire.url(), stream=True, timeout_s=0.3)
    got: list[bytes] = []
    if reader == "line_batches":
        batches = resp.line_batches(0.3)
        got += await anext(batches)
        await asyncio.sleep(1.5)  # its client reads nothing meanwhile: the lines wait unread
        got += [line async for batch in batches for line in batch]
    else:
        feed = resp.feed(0.3)
        sink = Collect(stop_after=1)
        assert await feed.pump(sink) is False
        await asyncio.sleep(1.5)
        sink.stop_after = None
        assert await feed.pump(sink) is True
        feed.close()
        got = [line for batch in sink.batches for line in batch]
    assert got == [b"data: %d" % i for i in range(20)]
    resp.release()
    await wire.stop()


async def test_bytes_unread_while_the_reader_waits_do_not_put_off_the_line_deadline(
    upstream: Upstream,
) -> None:
    wire = await Wire(lines_every(5, 1)).start()  # one line, then nothing for 5 s
    resp = await post(upstream, wire.url(), stream=True)
    batches = resp.line_batches(0.3)
    assert await anext(batches) == [b"data: 0"]
    waiting = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.05)
    # bytes parsed just as the deadline passes, the waiting reader not resumed yet: the
    # upstream was still late with its line
    assert resp._conn is not None
    resp._conn._chunks.append(b"x")
    with pytest.raises(UpstreamTimeout):
        await asyncio.wait_for(waiting, 3)
    resp.close()
    await wire.stop()


def pieces(data: bytes, size: int = 48 * 1024) -> Reply:
    """A stream of ``data`` in chunks of ``size`` bytes, each flushed on its own."""

    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(0, len(data), size):
            piece = data[i : i + size]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        return True

    return reply


async def stream_lines(upstream: Upstream, url: str, reader: str) -> list[bytes]:
    resp = await post(upstream, url, stream=True)
    try:
        if reader == "line_batches":
            return [line async for batch in resp.line_batches() for line in batch]
        feed = resp.feed()
        sink = Collect()
        try:
            assert await feed.pump(sink) is True
        finally:
            feed.close()
        return [line for batch in sink.batches for line in batch]
    finally:
        resp.close()


@pytest.mark.parametrize("reader", ["line_batches", "feed"])
async def test_a_line_longer_than_many_reads_arrives_whole(upstream: Upstream, reader: str) -> None:
    long = b"data: " + b"a" * (3 << 20)  # 3 MiB in 64 pieces
    wire = await Wire(pieces(long + b"\ndata: 1\n" + b"b" * 70_000)).start()
    got = await stream_lines(upstream, wire.url(), reader)
    assert got == [long, b"data: 1", b"b" * 70_000]
    await wire.stop()


@pytest.mark.parametrize("reader", ["line_batches", "feed"])
async def test_a_line_over_the_limit_is_an_upstream_error(upstream: Upstream, reader: str) -> None:
    from proxy.gateway.relays.upstream import MAX_LINE_BYTES

    wire = await Wire(pieces(b"data: 1\ndata: " + b"a" * MAX_LINE_BYTES)).start()
    with pytest.raises(UpstreamError, match="upstream sent a line over 8 MiB"):
        await stream_lines(upstream, wire.url(), reader)
    await wire.stop()


async def test_a_corrupt_gzip_body_is_an_upstream_error(upstream: Upstream) -> None:
    wire = await Wire(answer(ok(b"not gzip at all", "content-encoding: gzip"))).start()
    with pytest.raises(UpstreamError, match=r"upstream connection failed \(ClientPayloadError\)"):
        await body_of(upstream, wire.url())
    await wire.stop()


async def test_an_interim_answer_is_skipped_for_the_final_one(upstream: Upstream) -> None:
    interim = b"HTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\n\r\n"
    wire = await Wire(answer(interim + ok(b"{}", "request-id: r1"))).start()
    resp = await post(upstream, wire.url())
    assert (resp.status, resp.headers.get("request-id"), resp.headers.get("link")) == (
        200,
        "r1",
        None,
    )
    assert await resp.read() == b"{}"
    await wire.stop()


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_end_at_their_headers(upstream: Upstream, status: int) -> None:
    wire = await Wire(answer(f"HTTP/1.1 {status} X\r\n\r\n".encode())).start()
    assert await body_of(upstream, wire.url()) == b""
    assert await body_of(upstream, wire.url()) == b""
    assert wire.connections == 1
    await wire.stop()


async def test_a_head_response_has_no_body_and_the_connection_is_reused(
    upstream: Upstream,
) -> None:
    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            ok(b"") if head.startswith(b"GET") else b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"
        )
        return True

    wire = await Wire(reply).start()
    resp = await upstream.send(
        wire.url(), body=b"", headers={}, timeout_s=5, stream=False, method="HEAD"
    )
    assert resp.headers["Content-Length"] == "9" and await resp.read() == b""
    resp = await upstream.send(
        wire.url(), body=b"", headers={}, timeout_s=5, stream=False, method="GET"
    )
    assert resp.status == 200 and await resp.read() == b""
    assert wire.connections == 1
    await wire.stop()


async def test_the_request_head(upstream: Upstream) -> None:
    wire = await Wire(answer(ok(b"{}"))).start()
    await upstream.send(
        wire.url("/v1/chat/completions?api-version=1"),
        body=b'{"x": 1}',
        headers={"content-type": "application/json", "authorization": "Bearer k"},
        timeout_s=5,
        stream=False,
    )
    [(_, head)] = wire.requests
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions?api-version=1 HTTP/1.1"
    fields = {line.split(": ")[0].lower(): line.split(": ")[1] for line in lines[1:] if line}
    assert fields == {
        "host": f"127.0.0.1:{wire.port}",
        "content-type": "application/json",
        "authorization": "Bearer k",
        "accept-encoding": "gzip, deflate",
        "content-length": "8",
    }
    await wire.stop()


@pytest.mark.parametrize(
    ("url", "host", "port", "host_header", "path"),
    [
        (
            "http://[::1]:8000/v1/chat/completions",
            "::1",
            8000,
            "[::1]:8000",
            "/v1/chat/completions",
        ),
        (
            "https://api.example.com/v1/messages",
            "api.example.com",
            443,
            "api.example.com",
            "/v1/messages",
        ),
        (
            "http://gpu-1:80/v1/embeddings?api-version=2",
            "gpu-1",
            80,
            "gpu-1",
            "/v1/embeddings?api-version=2",
        ),
    ],
)
def test_targets_ipv6_default_ports_and_queries(
    url: str, host: str, port: int, host_header: str, path: str
) -> None:
    target = parse_target(url)
    assert (target.host, target.port, target.host_header, target.path) == (
        host,
        port,
        host_header,
        path,
    )


async def test_response_headers_are_case_insensitive(upstream: Upstream) -> None:
    wire = await Wire(answer(ok(b"{}", "Retry-After: 7", "X-RateLimit-Remaining: 0"))).start()
    resp = await post(upstream, wire.url())
    assert resp.headers["retry-after"] == resp.headers.get("RETRY-AFTER") == "7"
    assert "x-ratelimit-remaining" in resp.headers and resp.headers.get("missing") is None
    await resp.read()
    await wire.stop()


# --- the pool ---------------------------------------------------------------------------


async def test_at_the_limit_a_request_waits_for_a_connection_to_free() -> None:
    upstream = Upstream(max_connections=1)
    await upstream.start()
    release = asyncio.Event()

    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        if len(wire.requests) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
            await writer.drain()
            await release.wait()
            writer.write(b"{}")
        else:
            writer.write(ok(b"[]"))
        return True

    wire = await Wire(reply).start()
    first = await post(upstream, wire.url(), stream=True)
    second = asyncio.ensure_future(body_of(upstream, wire.url()))
    await asyncio.sleep(0.1)  # the second request's chance to (wrongly) open a connection
    assert not second.done() and wire.connections == 1
    release.set()
    assert [line async for batch in first.line_batches() for line in batch] == [b"{}"]
    first.release()
    assert await second == b"[]"
    assert wire.connections == 1 and len(wire.requests) == 2
    await upstream.stop()
    await wire.stop()


async def test_waiters_are_served_in_the_order_they_came() -> None:
    upstream = Upstream(max_connections=1)
    await upstream.start()
    wire = await Wire(answer(ok(b"{}"))).start()
    held = await post(upstream, wire.url("/held"), stream=True)
    waiting = []
    for name in ("a", "b", "c"):
        waiting.append(asyncio.ensure_future(body_of(upstream, wire.url(f"/{name}"))))
        await asyncio.sleep(0)  # each one queued before the next
    assert [line async for batch in held.line_batches() for line in batch] == [b"{}"]
    held.release()
    await asyncio.gather(*waiting)
    paths = [head.split(b" ")[1] for _, head in wire.requests]
    assert paths == [b"/held", b"/a", b"/b", b"/c"] and wire.connections == 1
    await upstream.stop()
    await wire.stop()


async def test_waiting_for_a_connection_is_bounded_by_the_timeout() -> None:
    upstream = Upstream(max_connections=1)
    await upstream.start()
    wire = await Wire(answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")).start()
    held = await post(upstream, wire.url(), stream=True)
    with pytest.raises(UpstreamTimeout, match="upstream timed out"):
        await post(upstream, wire.url(), timeout_s=0.2)
    held.close()
    await until(lambda: wire.hung_up == [0])
    await upstream.stop()
    await wire.stop()


async def test_stop_closes_pooled_connections() -> None:
    upstream = Upstream()
    await upstream.start()
    wire = await Wire(answer(ok(b"{}"))).start()
    await body_of(upstream, wire.url())
    await upstream.stop()
    await until(lambda: wire.hung_up == [0])
    await wire.stop()


# --- failures and timeouts ---------------------------------------------------------------


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1/chat/completions"


async def test_a_refused_connection_is_named_without_the_address(upstream: Upstream) -> None:
    with pytest.raises(UpstreamError) as info:
        await post(upstream, refused_url())
    assert str(info.value) == "upstream unreachable (Connection refused)"


async def test_a_body_that_stalls_ends_at_the_exchange_deadline(upstream: Upstream) -> None:
    wire = await Wire(answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{")).start()
    started = time.monotonic()
    resp = await post(upstream, wire.url(), timeout_s=0.3)
    with pytest.raises(UpstreamTimeout, match="upstream timed out"):
        await resp.read()
    # libuv's clock counts whole milliseconds: its timer may fire a millisecond early by ours
    assert 0.299 <= time.monotonic() - started < 2
    await until(lambda: wire.hung_up == [0])
    await wire.stop()


async def test_a_stream_cut_mid_body_is_a_broken_stream(upstream: Upstream) -> None:
    raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\ndata: 1\n\r\n"
    wire = await Wire(answer(raw, close=True)).start()
    resp = await post(upstream, wire.url(), stream=True)
    batches = resp.line_batches()
    assert await anext(batches) == [b"data: 1"]
    with pytest.raises(UpstreamError, match=r"upstream stream broke \(ClientPayloadError\)"):
        await anext(batches)
    resp.close()
    await wire.stop()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (linger 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize(
    ("sent", "stream", "message"),
    [
        (b"", False, "upstream unreachable (ClientOSError)"),
        (ok(b"{}")[:-1], False, "upstream connection failed (ClientPayloadError)"),
        (STREAM_HEAD + b"8\r\ndata: 1\n\r\n", True, "upstream stream broke (ClientPayloadError)"),
    ],
    ids=["before-the-answer", "mid-body", "mid-stream"],
)
async def test_a_reset_is_named_by_when_it_came(
    upstream: Upstream, sent: bytes, stream: bool, message: str
) -> None:
    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(sent)
        await writer.drain()
        await until(lambda: stream is False or consumed)
        reset(writer)
        return False

    consumed = False
    wire = await Wire(reply).start()
    with pytest.raises(UpstreamError) as info:
        resp = await post(upstream, wire.url(), stream=stream)
        if stream:
            batches = resp.line_batches()
            assert await anext(batches) == [b"data: 1"]
            consumed = True
            await anext(batches)
        else:
            await resp.read()
    assert str(info.value) == message
    await wire.stop()


async def test_garbage_instead_of_http_is_an_upstream_error(upstream: Upstream) -> None:
    wire = await Wire(answer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")).start()
    with pytest.raises(UpstreamError, match=r"\(ClientResponseError\)"):
        await body_of(upstream, wire.url())
    await wire.stop()


async def test_a_cancelled_request_drops_its_connection(upstream: Upstream) -> None:
    wire = await Wire(answer(b"")).start()  # never answers
    task = asyncio.ensure_future(post(upstream, wire.url()))
    await until(lambda: wire.requests)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: wire.hung_up == [0])
    await wire.stop()


# --- flow control -----------------------------------------------------------------------


async def test_a_slow_reader_stops_the_upstream_instead_of_buffering(upstream: Upstream) -> None:
    line = b"x" * 65535 + b"\n"
    total = 64 * 1024 * 1024
    written = [0]
    blocked = [False]

    async def reply(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n".encode())
        while written[0] < total:
            writer.write(line * 16)
            written[0] += len(line) * 16
            blocked[0] = True
            await writer.drain()
            blocked[0] = False
        return True

    wire = await Wire(reply).start()
    resp = await post(upstream, wire.url(), stream=True)
    batches = resp.line_batches()
    got = len(await anext(batches))
    stalled_at = -1
    while stalled_at != written[0]:  # until the upstream's writes block for good
        stalled_at = written[0]
        await asyncio.sleep(0.2)
    assert blocked[0] and written[0] < total // 2
    async for batch in batches:
        got += len(batch)
    assert got == total // len(line)
    resp.release()
    await wire.stop()


# --- TLS ------------------------------------------------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_with_sni_verifies_the_certificate_and_keeps_alive(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: names.append(name)
    wire = await Wire(answer(ok(b"{}"))).start(server_context)

    trusting = Upstream(ssl_context=ssl.create_default_context(cafile=str(cert)))
    await trusting.start()
    assert [await body_of(trusting, wire.url(host="localhost")) for _ in range(2)] == [b"{}"] * 2
    assert wire.connections == 1 and names == ["localhost"]
    await trusting.stop()

    untrusting = Upstream()  # the system's CAs: our certificate is refused
    await untrusting.start()
    with pytest.raises(UpstreamError, match=r"upstream unreachable \(SSLCertVerificationError\)"):
        await body_of(untrusting, wire.url(host="localhost"))
    await untrusting.stop()
    await wire.stop()
