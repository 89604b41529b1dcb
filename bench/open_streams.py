"""How many concurrent open streams one gateway worker holds, at what memory, and how fast a new
request still gets its first chunk while they run.

    python bench/open_streams.py --streams 2000 --interval 0.1 --seconds 60

Starts a slow OpenAI-shaped upstream (one content chunk per ``--interval`` on every open stream,
for ``--seconds``, then usage and ``[DONE]``), `tokenmeter serve` with one worker on it (SQLite
ledger, journal on, as bench/run.py configures it), opens ``--streams`` streaming chat
completions in bursts of 100, and once every one of them has its first chunk (``all_streaming_s``
after the first was sent) sends a probe request every ``--probe-every`` seconds while they run,
timing its first content chunk. ``--api messages`` makes every stream a Messages stream of
Claude Code's shape (``/v1/messages`` to an Anthropic-shaped upstream: the native pass-through)
instead of a chat completion. Reports: streams completed and failed, probe time to first chunk
p50/p99/max (a probe without a first chunk within 5 s counts in ``probes_failed``) and the
slowest probes' offsets from ``all_streaming_s``, the gateway's RSS before, at its peak and per
open stream, and the completed streams the ledger holds. Clients and upstream are raw asyncio
protocols, so their own cost stays small next to the gateway's.

The streams' chunks are spread evenly over each interval (stream i ticks in phase i mod
``PHASES``), as many users' generations are; ``--synchronized`` sends every stream's chunk at
the same instant instead, the worst case for a new request, which then waits behind one chunk
of every open stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple, cast

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def frame(payload: dict[str, object]) -> bytes:
    event = b"data: " + orjson.dumps(payload) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


CHUNK = frame(
    {
        "id": "slow",
        "object": "chat.completion.chunk",
        "model": "mock-gpt",
        "choices": [{"index": 0, "delta": {"content": " w"}, "finish_reason": None}],
    }
)


_COMPLETION = orjson.dumps(
    {
        "id": "slow",
        "object": "chat.completion",
        "model": "mock-gpt",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": 1, "total_tokens": 43},
    }
)
ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    % len(_COMPLETION)
    + _COMPLETION
)


def closing(chunks: int) -> bytes:
    usage = {"prompt_tokens": 42, "completion_tokens": chunks, "total_tokens": 42 + chunks}
    end = {"id": "slow", "object": "chat.completion.chunk", "model": "mock-gpt", "choices": []}
    done = b"data: [DONE]\n\n"
    return frame({**end, "usage": usage}) + b"%x\r\n%s\r\n" % (len(done), done) + b"0\r\n\r\n"


def anthropic_frame(kind: str, **fields: object) -> bytes:
    event = b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields})
    event += b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


_MESSAGE: dict[str, object] = {
    "id": "msg_slow",
    "type": "message",
    "role": "assistant",
    "model": "mock-claude",
    "content": [],
    "stop_reason": None,
    "usage": {"input_tokens": 42, "output_tokens": 1},
}
DELTA = anthropic_frame("content_block_delta", index=0, delta={"type": "text_delta", "text": " w"})
MESSAGE_OPENING = (
    anthropic_frame("message_start", message=_MESSAGE)
    + anthropic_frame("content_block_start", index=0, content_block={"type": "text", "text": ""})
    + DELTA
)


def message_closing(chunks: int) -> bytes:
    return (
        anthropic_frame("content_block_stop", index=0)
        + anthropic_frame(
            "message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": chunks}
        )
        + anthropic_frame("message_stop")
        + b"0\r\n\r\n"
    )


class SlowUpstream(asyncio.Protocol):
    """Answers every request with a stream; a shared ticker writes one chunk to each."""

    open: set[SlowUpstream] = set()
    opened = 0

    def __init__(self, chunks: int) -> None:
        self.phase = SlowUpstream.opened
        SlowUpstream.opened += 1
        self.left = chunks
        self.sent = 0
        self.messages = False  # an Anthropic Messages stream, not a chat completion
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head, sep, body = self.buf.partition(b"\r\n\r\n")
        if not sep or self.transport is None:
            return
        length = next(
            (
                int(h.split(b":")[1])
                for h in head.lower().split(b"\r\n")
                if h.startswith(b"content-length:")
            ),
            0,
        )
        if len(body) < length:
            return
        self.buf = body[length:]
        if b'"stream":true' not in body[:length].replace(b" ", b""):
            self.transport.write(ANSWER)  # the harness's readiness check
            return
        self.messages = head.startswith(b"POST /v1/messages")
        self.transport.write(HEAD + (MESSAGE_OPENING if self.messages else CHUNK))
        self.sent = 1
        SlowUpstream.open.add(self)

    def tick(self) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            SlowUpstream.open.discard(self)
        elif self.sent >= self.left:
            end = message_closing if self.messages else closing
            self.transport.write(end(self.sent))
            SlowUpstream.open.discard(self)
        else:
            self.transport.write(DELTA if self.messages else CHUNK)
            self.sent += 1

    def connection_lost(self, exc: Exception | None) -> None:
        SlowUpstream.open.discard(self)


INTERVAL_S = 0.1  # s between a stream's chunks, by default
PROBE_TIMEOUT_S = 5.0
PHASES = 10  # ticks per interval when the streams' chunks are spread out


async def ticker(interval: float, *, synchronized: bool) -> None:
    """Each open stream gets one chunk per ``interval``: all at once, or phase by phase."""
    phases = 1 if synchronized else PHASES
    loop = asyncio.get_running_loop()
    due = loop.time()
    phase = 0
    while True:
        due += interval / phases
        await asyncio.sleep(max(0.0, due - loop.time()))
        for stream in list(SlowUpstream.open):
            if stream.phase % phases == phase:
                stream.tick()
        phase = (phase + 1) % phases


class StreamClient(asyncio.Protocol):
    """One streaming request: when its first content chunk came and whether [DONE] did."""

    def __init__(self, request: Request, *, close_after_first: bool) -> None:
        self.request = request.data
        self.first, self.end = request.first, request.end
        self.close_after_first = close_after_first
        self.sent_at = 0.0
        self.first_at: float | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.streaming = asyncio.Event()  # its first content chunk came, or it ended
        self.tail = b""
        self.status = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.status:
            self.status = data[9:12]
        seen = self.tail + data
        if self.first_at is None and self.first in seen:
            self.first_at = time.perf_counter()
            self.streaming.set()
            if self.close_after_first:
                self.transport.close()
        if self.end in seen and not self.done.done():
            self.done.set_result(b"error" not in seen)
            self.transport.close()
        self.tail = seen[-64:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.streaming.set()
        if not self.done.done():
            self.done.set_result(self.close_after_first and self.first_at is not None)


class Request(NamedTuple):
    """A streaming request's bytes, and what marks its first content and its end."""

    data: bytes
    first: bytes
    end: bytes


def request_bytes(port: int, key: str, api: str = "chat") -> Request:
    if api == "messages":  # Claude Code's shape
        path, model, marks = "/v1/messages", "mock-claude", (b'"text_delta"', b"message_stop")
        auth = f"x-api-key: {key}\r\nanthropic-version: 2023-06-01"
    else:
        path, model, marks = "/v1/chat/completions", "mock-gpt", (b'"content"', b"[DONE]")
        auth = f"authorization: Bearer {key}"
    messages = [{"role": "user", "content": "hi"}]
    body = orjson.dumps({"model": model, "stream": True, "max_tokens": 1024, "messages": messages})
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{auth}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return Request(head.encode() + body, *marks)


async def open_stream(port: int, request: Request, *, probe: bool) -> StreamClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: StreamClient(request, close_after_first=probe), "127.0.0.1", port
    )
    return client


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def drive(args: argparse.Namespace, port: int, key: str, pid: int) -> dict[str, object]:
    request = request_bytes(port, key, args.api)
    rss_before = rss_mb(pid)
    started = time.perf_counter()
    clients: list[StreamClient] = []
    for i in range(0, args.streams, 100):  # open in bursts, as agents arrive
        batch = range(i, min(i + 100, args.streams))
        clients += await asyncio.gather(*(open_stream(port, request, probe=False) for _ in batch))
    opened_s = time.perf_counter() - started
    # probes measure a new request among running streams, not behind the opening burst
    await asyncio.wait_for(asyncio.gather(*(c.streaming.wait() for c in clients)), args.seconds)
    streaming_s = time.perf_counter() - started
    probes: list[tuple[float, float]] = []  # (time to first chunk, sent at)
    failed_probes = 0
    peak_rss = rss_before
    deadline = started + args.seconds + 30
    pending = [c.done for c in clients]
    while pending and time.perf_counter() < deadline:
        probe = await open_stream(port, request, probe=True)
        await asyncio.wait([probe.done], timeout=PROBE_TIMEOUT_S)
        if probe.first_at is not None:
            probes.append((probe.first_at - probe.sent_at, probe.sent_at))
        else:
            failed_probes += 1
            probe.transport.close()
        peak_rss = max(peak_rss, rss_mb(pid))
        _, pending_set = await asyncio.wait(pending, timeout=args.probe_every)
        pending = list(pending_set)
    ok = sum(1 for c in clients if c.done.done() and c.done.result())
    ttfc = sorted(t for t, _ in probes)
    slowest = sorted(probes, reverse=True)[:5]
    open_extra = max(0.0, peak_rss - rss_before)
    return {
        "api": args.api,
        "streams": args.streams,
        "interval_s": args.interval,
        "seconds": args.seconds,
        "synchronized": args.synchronized,
        "opened_in_s": round(opened_s, 2),
        "all_streaming_s": round(streaming_s, 2),
        "completed": ok,
        "failed": args.streams - ok,
        "probes": len(probes),
        "probes_failed": failed_probes,
        "probe_ttfc_p50_ms": round(statistics.median(ttfc) * 1e3, 2) if ttfc else None,
        "probe_ttfc_p99_ms": round(ttfc[int(len(ttfc) * 0.99)] * 1e3, 2) if ttfc else None,
        "probe_ttfc_max_ms": round(ttfc[-1] * 1e3, 2) if ttfc else None,
        # (ms, s after all streams were streaming): slow probes at the opening or all along
        "slowest_probes": [
            (round(t * 1e3, 1), round(at - started - streaming_s, 1)) for t, at in slowest
        ],
        "rss_before_mb": round(rss_before, 1),
        "rss_peak_mb": round(peak_rss, 1),
        "kb_per_open_stream": round(open_extra * 1024 / args.streams, 1),
    }


async def metered_ok(db: Path, expected: int) -> int:
    """Completed streams in the ledger (status ok), polled until they are all there or 15 s."""
    count = 0
    for _ in range(150):
        with sqlite3.connect(db) as conn:
            count = conn.execute(
                "SELECT count(*) FROM usage_events WHERE status = 'ok' AND stream"
            ).fetchone()[0]
        if count >= expected:
            break
        await asyncio.sleep(0.1)
    return int(count)


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    chunks = max(1, round(args.seconds / args.interval))
    upstream = await loop.create_server(lambda: SlowUpstream(chunks), "127.0.0.1", 0, backlog=4096)
    up_port = upstream.sockets[0].getsockname()[1]
    tick = asyncio.create_task(ticker(args.interval, synchronized=args.synchronized))
    work = Path(tempfile.mkdtemp(prefix="tokenmeter-open-streams-"))
    target = await asyncio.to_thread(
        harness.start_tokenmeter, 1, work, f"http://127.0.0.1:{up_port}", work
    )
    try:
        assert target.proc is not None and target.key is not None
        port = int(target.url.rsplit(":", 1)[1].split("/")[0])
        result = await drive(args, port, target.key, target.proc.pid)
        result["metered_ok"] = await metered_ok(work / "tokenmeter-1w.db", int(result["completed"]))
        return result
    finally:
        tick.cancel()
        upstream.close()
        for proc in reversed(harness.STARTED):
            harness.stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=INTERVAL_S, help="s between chunks")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each stream")
    parser.add_argument("--probe-every", type=float, default=0.25, help="s between probes")
    parser.add_argument(
        "--api",
        choices=["chat", "messages"],
        default="chat",
        help="chat completions, or Messages streams (Claude Code's) to an Anthropic upstream",
    )
    parser.add_argument(
        "--synchronized", action="store_true", help="every stream's chunk at the same instant"
    )
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(main_async(args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
