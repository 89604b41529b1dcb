"""Closed-loop HTTP/1.1 load generator for the gateway benchmark.

    python bench/loadgen.py --url http://127.0.0.1:4100/v1 --model mock-gpt -c 8 -d 10 -w 2 \
        [--stream] [--api anthropic] [--key KEY] [--max-requests N]

`c` keep-alive connections (opened one after another over the first half of the warm-up), each
with exactly one request in flight, like `wrk -c`. After the warm-up, every response completed
inside the measurement window counts; the window closes after `--duration` seconds or at
`--max-requests` responses, whichever comes first. Per request: latency (request written -> last
byte) and, for streams, TTFC (request written -> first body bytes carrying generated text);
where the target sends tokenmeter's `x-tokenmeter-overhead-ms` header, the gateway's own time
(`own_ms`: everything but waiting on its upstream), which tells a slow request the gateway made
slow from one the machine did.

Every response is validated: HTTP 200 and a usage block (JSON), or the terminal `[DONE]` /
`message_stop` (streams). Failures, connection errors, timeouts and requests still unfinished
after the grace period are `errors` (warm-up included). Prints one JSON object on stdout; the
window is reported on the system-wide monotonic clock so a caller can align /proc samples.
It runs in its own process, on uvloop + httptools, so it is never the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

# generated text in a chunk: an OpenAI `"content":"x` or an Anthropic `"text":"x` (not empty)
CONTENT = re.compile(rb'"(?:content|text|delta)"\s*:\s*"[^"]')
OWN_HEADER = b"x-tokenmeter-overhead-ms"


@dataclass(frozen=True)
class Shape:
    """What to send and how to tell a good response."""

    host: str
    port: int
    request: bytes
    stream: bool
    marker: bytes  # must be in the body (JSON) or in its last bytes (stream)


@dataclass
class Tally:
    """Everything measured, shared by the connections."""

    window_start: float
    window_end: float
    max_requests: int
    latency: list[float] = field(default_factory=list)
    ttfc: list[float] = field(default_factory=list)
    own: list[float] = field(default_factory=list)  # x-tokenmeter-overhead-ms, in seconds
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)

    def fail(self, kind: str, body: bytes = b"") -> None:
        self.errors[kind] += 1
        if body and len(self.samples) < 3:
            self.samples.append(body[:300].decode("utf-8", "replace"))

    def record(self, started: float, done: float, first_content: float, own: float | None) -> None:
        if not self.window_start <= done <= self.window_end:
            return
        self.latency.append(done - started)
        if own is not None:
            self.own.append(own)
        if first_content:
            self.ttfc.append(first_content - started)
        if len(self.latency) >= self.max_requests:
            self.window_end = done


def api_request(api: str, model: str, stream: bool) -> tuple[str, dict[str, object], bytes]:
    """(path under the API's base, JSON body, what every complete answer contains) of one
    OpenAI chat completion or response, or Anthropic message."""
    messages = [{"role": "user", "content": "Write a haiku about metering tokens."}]
    body: dict[str, object] = {"model": model, "messages": messages, "max_tokens": 64}
    if api == "responses":
        path = "/responses"
        marker = b"response.completed" if stream else b'"output_tokens"'
        body = {"model": model, "input": messages[0]["content"], "max_output_tokens": 64}
    elif api == "openai":
        path = "/chat/completions"
        marker = b"[DONE]" if stream else b'"completion_tokens"'
        if stream:
            body["stream_options"] = {"include_usage": True}
    else:
        path = "/messages"
        marker = b"message_stop" if stream else b'"output_tokens"'
    if stream:
        body["stream"] = True
    return path, body, marker


def build_shape(url: str, api: str, model: str, stream: bool, key: str) -> Shape:
    """The request bytes for an OpenAI chat completion or response, or an Anthropic message."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"only http:// loopback targets: {url}")
    base = parts.path.rstrip("/")
    suffix, body, marker = api_request(api, model, stream)
    if api == "anthropic":
        path = (base if base.endswith("/v1") else base + "/v1") + suffix
    else:
        path = (base or "/v1") + suffix
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\nx-api-key: {key}\r\nanthropic-version: 2023-06-01\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    )
    return Shape(parts.hostname, parts.port or 80, head.encode() + payload, stream, marker)


class Connection(asyncio.Protocol):
    """One keep-alive connection; `exchange` sends a request and waits for the full response."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[float] | None = None
        self.body: list[bytes] = []
        self.first_content = 0.0
        self.own: float | None = None
        self.keep_alive = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._settle(exc or ConnectionResetError("closed by the server"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._settle(exc)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == len(OWN_HEADER) and name.lower() == OWN_HEADER:
            self.own = float(value) / 1e3

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, chunk: bytes) -> None:
        if not self.shape.stream:
            self.body.append(chunk)
            return
        if not self.first_content and CONTENT.search(chunk):
            self.first_content = time.perf_counter()
        self.body = [(self.body[0] if self.body else b"")[-256:] + chunk]  # keep only the tail

    def on_message_complete(self) -> None:
        self._settle(None)

    def _settle(self, exc: Exception | None) -> None:
        if self.waiter is None or self.waiter.done():
            return
        if exc is None:
            self.waiter.set_result(time.perf_counter())
        else:
            self.waiter.set_exception(exc)

    async def exchange(self, limit: float) -> tuple[float, float, int, bytes]:
        """(started, done, status, body or its tail) of one request."""
        assert self.transport is not None
        self.body, self.first_content, self.own = [], 0.0, None
        self.waiter = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self.transport.write(self.shape.request)
        done = await asyncio.wait_for(self.waiter, limit)
        return started, done, self.parser.get_status_code(), b"".join(self.body)

    def reusable(self) -> bool:
        return self.keep_alive and not self.closed


async def connect(shape: Shape) -> Connection:
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(
        loop.create_connection(lambda: Connection(shape), shape.host, shape.port), 5
    )
    return conn


async def client(shape: Shape, tally: Tally, delay: float, limit: float) -> None:
    """One closed-loop client: request after request until the window closes."""
    await asyncio.sleep(delay)
    conn: Connection | None = None
    while time.perf_counter() < tally.window_end:
        try:
            conn = conn if conn and conn.reusable() else await connect(shape)
            started, done, status, body = await conn.exchange(limit)
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            tally.fail(type(exc).__name__)
            if conn and conn.transport:
                conn.transport.close()
            conn = None
            await asyncio.sleep(0.05)
            continue
        if status != 200:
            tally.fail(f"http_{status}", body)
        elif shape.marker not in body:
            tally.fail("invalid_body", body)
        else:
            tally.record(started, done, conn.first_content, conn.own)
    if conn and conn.transport:
        conn.transport.close()


def percentiles(values: list[float], points: tuple[int, ...]) -> dict[str, float] | None:
    """Nearest-rank percentiles in milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    last = len(ordered) - 1
    return {f"p{p}": round(ordered[min(last, len(ordered) * p // 100)] * 1e3, 3) for p in points}


async def run(args: argparse.Namespace) -> dict[str, object]:
    shape = build_shape(args.url, args.api, args.model, args.stream, args.key)
    begin = time.perf_counter()
    to_monotonic = time.monotonic() - begin
    start = begin + args.warmup
    tally = Tally(start, start + args.duration, args.max_requests)
    ramp = args.warmup / 2
    tasks = [
        asyncio.create_task(client(shape, tally, ramp * i / args.concurrency, args.timeout))
        for i in range(args.concurrency)
    ]
    _, pending = await asyncio.wait(tasks, timeout=tally.window_end - begin + args.grace)
    for task in pending:
        task.cancel()
        tally.fail("unfinished")
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception):
            tally.fail(f"crash_{type(outcome).__name__}", repr(outcome).encode())
    window = tally.window_end - tally.window_start
    return {
        "url": args.url,
        "api": args.api,
        "model": args.model,
        "stream": args.stream,
        "concurrency": args.concurrency,
        "window_s": round(window, 3),
        "requests": len(tally.latency),
        "rps": round(len(tally.latency) / window, 1),
        "latency_ms": percentiles(tally.latency, (50, 90, 99)),
        "ttfc_ms": percentiles(tally.ttfc, (50, 99)) if args.stream else None,
        "own_ms": percentiles(tally.own, (50, 99)),
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
        "error_samples": tally.samples,
        "window": [tally.window_start + to_monotonic, tally.window_end + to_monotonic],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="OpenAI-style base URL, e.g. http://h:p/v1")
    parser.add_argument("--api", choices=("openai", "responses", "anthropic"), default="openai")
    parser.add_argument("--model", default="mock-gpt")
    parser.add_argument("--key", default="sk-bench", help="sent as Bearer and x-api-key")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="window, seconds")
    parser.add_argument("-w", "--warmup", type=float, default=2.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="closes the window")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--grace", type=float, default=5.0, help="for in-flight requests")
    parser.add_argument("--cpu", type=int, help="run on this CPU only (bench/run.py --placement)")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    print(json.dumps(uvloop.run(run(args))))


if __name__ == "__main__":
    main()
