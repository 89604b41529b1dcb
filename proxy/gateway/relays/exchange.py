"""One exchange with an upstream, shared by both relays: send and read with the wait timed,
upstream errors recorded and turned into the client's status, the error event of a cut stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson

from metering.events import Status
from proxy.gateway.call import Call
from proxy.gateway.deployments import Deployment
from proxy.gateway.errors import ProxyError, upstream_message
from proxy.gateway.relays.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout

T = TypeVar("T")

if TYPE_CHECKING:
    from proxy.gateway.http_limits import ChunkWriter
    from proxy.gateway.relays.streaming import Direct


@contextmanager
def waiting_on_upstream(call: Call, dep: Deployment) -> Iterator[None]:
    """Time spent inside counts as upstream wait; failures are recorded and become 502/504."""
    t0 = time.perf_counter()
    try:
        yield
    except UpstreamTimeout as exc:
        call.finish("timeout", 504, error_code="upstream_timeout")
        raise ProxyError(
            504, f"upstream timed out after {dep.timeout_s:g} s", code="upstream_timeout"
        ) from exc
    except UpstreamError as exc:
        call.finish("upstream_error", 502, error_code="upstream_unavailable", detail=str(exc))
        raise ProxyError(502, f"deployment {dep.name}: {exc}", code="upstream_unavailable") from exc
    finally:
        call.upstream_s += time.perf_counter() - t0


async def send_timed(
    upstream: Upstream,
    call: Call,
    dep: Deployment,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> UpstreamResponse:
    """Send and wait for the response headers."""
    headers = headers or dep.headers
    if call.spans is not None and call.telemetry is not None:
        headers = call.telemetry.propagate(call, headers)
    with waiting_on_upstream(call, dep):
        return await upstream.send(
            dep.url(path),
            body=body,
            headers=headers,
            timeout_s=dep.timeout_s,
            stream=call.stream,
        )


async def read_timed(resp: UpstreamResponse, call: Call, dep: Deployment) -> bytes:
    with waiting_on_upstream(call, dep):
        return await resp.read()


async def raise_for_upstream(
    resp: UpstreamResponse,
    call: Call,
    dep: Deployment,
    *,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Upstream 4xx pass through with their message (a 429 with its Retry-After and rate-limit
    headers, and ``headers``); 5xx become 502. Both are recorded."""
    if resp.status < 400:
        return
    message = upstream_message(await read_timed(resp, call, dep))
    if resp.status >= 500:
        call.finish(
            "upstream_error", 502, error_code="upstream_error", detail=f"upstream {resp.status}"
        )
        raise ProxyError(
            502, f"deployment {dep.name} returned {resp.status}: {message}", code="upstream_error"
        )
    status: Status = "upstream_error" if resp.status == 429 else "client_error"
    code = upstream_code(resp.status)
    call.finish(status, resp.status, error_code=code)
    passed = {**rate_limit_headers(resp.headers), **(headers or {})}
    raise ProxyError(resp.status, message, code=code, headers=passed or None)


def upstream_code(status: int) -> str:
    """The error code of a request an upstream refused or failed with ``status``."""
    if status >= 500:
        return "upstream_error"
    return "upstream_rate_limited" if status == 429 else "upstream_rejected"


_RATE_LIMIT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")


def rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """What a client's retry logic reads: Retry-After (the SDKs honour it) and the limits."""
    return {
        k.lower(): v
        for k, v in headers.items()
        if k.lower() in ("retry-after", "retry-after-ms")
        or k.lower().startswith(_RATE_LIMIT_PREFIXES)
    }


def parse_answer(
    data: bytes, call: Call, dep: Deployment, *, valid: Callable[[Any], bool], what: str
) -> Any:
    """A 200's body, parsed, if it is the protocol's answer; else recorded and a 502: a garbage
    200 is the upstream's failure, never the client's answer nor an ``ok`` event."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if parsed is None or not valid(parsed):
        call.finish("upstream_error", 502, error_code="upstream_invalid_response")
        raise ProxyError(
            502,
            f"deployment {dep.name} answered 200 with a body that is not {what}",
            code="upstream_invalid_response",
        )
    return parsed


def is_chat_completion(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("choices"), list)


def is_embeddings(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("data"), list)


def is_anthropic_message(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("content"), list)


def has(data: bytes, sub: bytes) -> bool:
    """``sub in data``, for the per-chunk paths: CPython 3.11's ``bytes.__contains__`` first
    tries its argument as an int and raises and clears a formatted TypeError when it is not,
    ~1,900 instructions per test, 8 % of a relayed chunk's (callgrind); ``find`` does not."""
    return data.find(sub) >= 0


def scrub_event(call: Call, data: bytes) -> bytes:
    """An upstream's in-stream error event, with its key and address redacted (it may echo
    either); other events pass untouched (the check is one substring search)."""
    dep = call.deployment
    if dep is None or not has(data, b'"error"'):
        return data
    return dep.redactor.scrub_bytes(data)


class EventFeed(Generic[T]):
    """The events of an upstream's stream, as ``split`` makes them of its lines, in the
    batches the network delivered them (what arrived together leaves in one write); the wait
    counts as upstream time, and ``done`` is set once ``split`` saw the stream's last event
    (nothing after it is read).

    ``relayed`` runs a relay's per-batch ``handle`` over them, writing its output to the client
    from the upstream connection's read callback when the response has a chunk writer."""

    __slots__ = ("_batches", "_call", "_resp", "_split", "done", "last")

    def __init__(self, resp: UpstreamResponse, call: Call, split: Split[T]) -> None:
        self._resp = resp
        self._batches: AsyncIterator[list[bytes]] | None = None
        self._call = call
        self._split = split
        self.done = False
        self.last = b""  # what ``relayed``'s handle made of the batch that ended the stream

    def __aiter__(self) -> EventFeed[T]:
        return self

    async def __anext__(self) -> list[T]:
        if self.done:
            raise StopAsyncIteration
        batches = self._batches
        if batches is None:
            batches = self._batches = self._resp.line_batches(idle_timeout_s(self._call))
        t0 = time.perf_counter()
        try:  # not anext(it, None): its wrapper is one more awaitable per chunk
            lines = await batches.__anext__()
        finally:
            self._call.upstream_s += time.perf_counter() - t0
        events, self.done = self._split(lines)
        return events

    async def relayed(self, handle: Handle[T], direct: Direct) -> AsyncIterator[bytes]:
        """What ``handle`` makes of each batch, for the client: yielded, or written by
        ``direct.writer`` from the read callback (nothing yielded) when the response has one.
        Ends at the stream's last event (``done``; what ``handle`` made of that last batch is
        kept in ``last``, to leave once the stream is journaled), at the upstream's end, or
        when ``handle`` returned None (it keeps what to send). Raises what ``handle`` raised."""
        writer = direct.writer
        if writer is None:
            async for batch in self:
                out = handle(batch)
                if out is None:
                    return
                if self.done:
                    self.last = out
                    return
                if out:
                    yield out
            return
        sink = _Sink(self._split, handle, writer)
        feed = self._resp.feed(idle_timeout_s(self._call))
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    ended = await feed.pump(sink)
                finally:
                    self._call.upstream_s += time.perf_counter() - t0 - sink.spent_s
                    sink.spent_s = 0.0
                if sink.error is not None:
                    raise sink.error
                if sink.done:
                    self.done, self.last = True, sink.held
                if sink.stopped or ended:
                    return
                await writer.drain()  # the client reads slower than the upstream writes
        finally:
            feed.close()


class ChatPayloads(EventFeed[bytes]):
    """The ``data:`` payloads of an OpenAI-shaped event stream (``chat_payloads``); ``done``
    once ``[DONE]`` arrived."""

    __slots__ = ()

    def __init__(self, resp: UpstreamResponse, call: Call) -> None:
        super().__init__(resp, call, chat_payloads)


Split = Callable[[list[bytes]], tuple[list[T], bool]]
"""A stream's lines as events: a batch's complete events, and whether the last one came."""

Handle = Callable[[list[T]], bytes | None]
"""A relay's work on one batch of events: the bytes for the client, or None to stop."""


class _Sink(Generic[T]):
    """``EventFeed.relayed``'s work per upstream read, in the connection's read callback: the
    batch's events through ``handle`` and on to the client. Asks the pump to stop at the last
    event (keeping the last output), when ``handle`` returned None, when the client's buffer is
    full, or on an error (kept: a sink must not raise inside the parser)."""

    __slots__ = ("done", "error", "handle", "held", "spent_s", "split", "stopped", "writer")

    def __init__(self, split: Split[T], handle: Handle[T], writer: ChunkWriter) -> None:
        self.split = split
        self.handle = handle
        self.writer = writer
        self.done = False
        self.stopped = False
        self.held = b""
        self.error: Exception | None = None
        self.spent_s = 0.0  # time in here: the gateway's, not the upstream's

    def __call__(self, lines: list[bytes]) -> bool:
        t0 = time.perf_counter()
        try:
            events, done = self.split(lines)
            out = self.handle(events)
            if out is None:
                self.stopped = True
                return True
            if done:
                self.done, self.held = True, out
                return True
            if out:
                self.writer.write(out)
            return self.writer.paused
        except Exception as exc:
            self.error = exc
            return True
        finally:
            self.spent_s += time.perf_counter() - t0


def chat_payloads(lines: list[bytes]) -> tuple[list[bytes], bool]:
    """The ``data:`` payloads of a batch of event-stream lines, and whether ``[DONE]`` came
    (what follows it is dropped)."""
    payloads: list[bytes] = []
    for line in lines:
        if not line or line[:5] != b"data:":  # half are the blank lines between events;
            continue  # a slice compares in fewer instructions than startswith parses args
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return payloads, True
        payloads.append(payload)
    return payloads, False


def idle_timeout_s(call: Call) -> float | None:
    dep = call.deployment
    return dep.stream_idle_timeout_s if dep is not None else None


DRAIN_MESSAGE = "the gateway is shutting down: stream ended at the drain deadline"


def error_event(message: str) -> bytes:
    body = {"error": {"message": message, "type": "upstream_error", "code": "upstream_error"}}
    return b"data: " + orjson.dumps(body) + b"\n\n"
