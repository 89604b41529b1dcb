"""The stream relays (on OpenAI-shaped upstreams: the Chat pass-through, Messages → Chat,
Responses → Chat; on Anthropic upstreams: the Messages pass-through, Chat → Messages,
Responses → Messages) on both of their paths: under ``serve``'s own HTTP protocol, which writes each
upstream read on to the client from the upstream connection's callback (``ChunkWriter``), and
under another ASGI server (uvicorn's h11), where the body is yielded to ``send``. Same bytes to
the client, same back-pressure, same metering, either way.

The upstream here is a raw socket server, so a test controls exactly what arrives and when,
and sees how far the gateway let it write.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support import Gateway, wait_for

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(payload: dict[str, Any] | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


def content(text: str, i: int = 0) -> dict[str, Any]:
    delta = {"content": text}
    return {"id": f"c{i}", "object": "chat.completion.chunk", "model": "m", "choices": [
        {"index": 0, "delta": delta, "finish_reason": None}
    ]}  # fmt: skip


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
FINAL = {"id": "c9", "object": "chat.completion.chunk", "model": "m", "choices": [], "usage": USAGE}


class RawUpstream:
    """An OpenAI-shaped upstream on a loopback port, in a thread of its own: each request gets
    the writes a test scripted for it (bytes, or a float: a pause of that many seconds), as
    fast as the socket takes them. Counts the bytes the gateway accepted, and whether it hung
    up before the end."""

    def __init__(self) -> None:
        self.script: list[bytes | float] = []
        self.written = 0
        self.hung_up = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += conn.recv(65536)
            try:
                for step in [HEAD, *self.script]:
                    if isinstance(step, float):
                        time.sleep(step)
                        continue
                    conn.sendall(step)
                    self.written += len(step)
                conn.recv(1)  # until the gateway closes or reuses the connection
            except OSError:
                self.hung_up.set()

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def raw() -> Iterator[RawUpstream]:
    upstream = RawUpstream()
    yield upstream
    upstream.close()


@pytest.fixture(params=["serve", "h11"], ids=["direct", "asgi"])
def relay_gw(request, raw: RawUpstream, tmp_path: Path) -> Iterator[Gateway]:
    # the same upstream, once with the idle deadline short enough for a test to reach
    models = [
        {"name": name, "deployments": [{**deployment, "stream_idle_timeout_s": idle_s}]}
        for prefix, backend in (("raw", "vllm"), ("claude-raw", "anthropic"))
        for name, idle_s in ((prefix, 30), (f"{prefix}-drip", 1))
        for deployment in [{"backend": backend, "model": "m", "api_base": raw.url}]
    ]
    gw = Gateway(tmp_path / "tokenmeter.db", {"models": models}, http=request.param).start()
    yield gw
    gw.stop()


def post_stream(gw: Gateway, key: str, **extra: Any) -> httpx.Response:
    body = {"model": "raw", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json=body | extra,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


def payloads(r: httpx.Response) -> list[str]:
    return [line[6:] for line in r.text.split("\n") if line.startswith("data: ")]


@pytest.mark.parametrize("include_usage", [False, True])
def test_events_arriving_in_one_read_or_apart_reach_the_client_whole_and_in_order(
    relay_gw: Gateway, raw: RawUpstream, include_usage: bool
) -> None:
    events = [event(content(f"w{i}", i)) for i in range(6)]
    together = b"".join(events[:3])
    # three events in one read; one split mid-line across reads; a usage-only chunk, [DONE]
    split = events[4]
    raw.script = [
        chunk(together),
        0.05,
        chunk(events[3] + split[:9]),
        0.05,
        chunk(split[9:] + events[5]),
        chunk(event(FINAL) + event("[DONE]")),
        chunk(b""),
    ]
    key = relay_gw.create_key(user="alice")
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    got = payloads(post_stream(relay_gw, key, **options))
    texts = [json.loads(p)["choices"][0]["delta"]["content"] for p in got[:6]]
    assert texts == [f"w{i}" for i in range(6)]
    assert got[-1] == "[DONE]"
    usage_chunks = [json.loads(p) for p in got[6:-1]]
    assert usage_chunks == ([{**FINAL}] if include_usage else [])
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("ok", 7, 3)
    assert row["usage_source"] == "upstream"


def test_a_last_line_without_its_newline_still_ends_the_stream(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    raw.script = [chunk(event(content("a")) + event(FINAL) + b"data: [DONE]"), chunk(b"")]
    got = payloads(post_stream(relay_gw, relay_gw.create_key(user="alice")))
    assert got[-1] == "[DONE]" and json.loads(got[0])["choices"][0]["delta"]["content"] == "a"
    [row] = relay_gw.wait_events(1)
    assert row["status"] == "ok"


def test_an_upstream_that_ends_without_done_gets_an_error_event_and_an_estimate(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    raw.script = [chunk(event(content("a")) + event(content("b"))), chunk(b"")]
    got = payloads(post_stream(relay_gw, relay_gw.create_key(user="alice")))
    assert "closed the stream before it finished" in got[-2] and got[-1] == "[DONE]"
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["usage_source"], row["output_tokens"]) == (
        "upstream_error",
        "estimated",
        2,
    )


def test_an_upstream_that_drips_without_a_line_times_out_mid_stream(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    raw.script = [chunk(event(content("a")))] + [0.2, chunk(b"x")] * 15  # 3 s, no newline
    got = payloads(post_stream(relay_gw, relay_gw.create_key(user="alice"), model="raw-drip"))
    assert "timed out mid-stream" in got[-1]
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["output_tokens"]) == ("timeout", 1)
    assert raw.hung_up.wait(5)  # the gateway dropped the upstream


@pytest.mark.parametrize("model", ["raw", "claude-raw"])
def test_an_upstream_line_over_the_limit_ends_the_stream_as_its_error(
    relay_gw: Gateway, raw: RawUpstream, model: str
) -> None:
    opening = b"".join(message_events(["a"])[:3]) if model == "claude-raw" else event(content("a"))
    endless = b"data: " + b"x" * (9 << 20)  # 9 MiB and no newline
    raw.script = [
        chunk(opening),
        *(chunk(endless[i : i + 65536]) for i in range(0, 9 << 20, 65536)),
    ]
    key = relay_gw.create_key(user="alice")
    body = {"model": model, "stream": True, "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    path = "/v1/messages" if model == "claude-raw" else "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}
    r = httpx.post(relay_gw.url + path, json=body, headers=headers, timeout=30)
    assert r.status_code == 200 and len(r.content) < 1 << 20
    assert "upstream sent a line over 8 MiB" in r.text
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["output_tokens"]) == ("upstream_error", 1)
    assert raw.hung_up.wait(5)


def still(raw: RawUpstream) -> int:
    """What the upstream has written, once it wrote nothing more for half a second (socket
    buffers on the way fill for a second or two first); 0 until then."""
    before = raw.written
    time.sleep(0.5)
    return before if before and raw.written == before else 0


def stalled_client(gw: Gateway, path: str, body: dict[str, Any]) -> socket.socket:
    """A raw client that sent its streaming request and reads nothing yet (a 16 KB receive
    buffer), so the gateway has to hold the upstream back for it."""
    key = gw.create_key(user="alice")
    data = orjson.dumps(body)
    client = socket.create_connection(("127.0.0.1", gw.port))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    head = (
        f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n"
        f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n"
    )
    client.sendall(head.encode() + data)
    return client


def read_all(client: socket.socket) -> bytearray:
    """The rest of the chunked response, read quickly."""
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    received = bytearray()
    client.settimeout(20)
    while not received.endswith(b"0\r\n\r\n"):
        data = client.recv(1 << 20)
        assert data, "the gateway closed before the end"
        received += data
    return received


def test_a_client_that_stops_reading_holds_the_upstream_back_and_then_gets_every_byte(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    text = "w" * 1000
    n = 60_000  # 60 MB: more than the socket buffers on the way hold
    batch = b"".join(event(content(text, i)) for i in range(100))
    total = len(batch) * n // 100
    raw.script = [chunk(batch)] * (n // 100) + [chunk(event(FINAL) + event("[DONE]")), chunk(b"")]
    # the model whose upstream deadline (1 s without a line) the client's stall outlasts
    body = {"model": "raw-drip", "stream": True, "messages": [{"role": "user"}]}
    with stalled_client(relay_gw, "/v1/chat/completions", body) as client:
        held = wait_for(lambda: still(raw), timeout_s=20)  # the client reads nothing meanwhile
        # held back: what the kernel's socket buffers on the way take (they grow to tens of MB
        # on a fast loopback), not the whole stream read into the gateway's memory
        assert held < total * 3 / 4
        time.sleep(1.5)  # a client slower than its upstream: no upstream timeout for it
        received = read_all(client)
    assert received.count(b'"content":"' + text.encode()) == n
    assert received.count(b"data: [DONE]") == 1
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["output_tokens"]) == ("ok", 3)


def test_a_client_that_stalls_and_then_hangs_up_drops_the_upstream_and_is_metered(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    batch = b"".join(event(content("w" * 1000, i)) for i in range(100))
    raw.script = [chunk(batch)] * 400 + [chunk(event(FINAL) + event("[DONE]")), chunk(b"")]
    body = {"model": "raw", "stream": True, "messages": [{"role": "user"}]}
    with stalled_client(relay_gw, "/v1/chat/completions", body):
        wait_for(lambda: still(raw), timeout_s=20)  # held back: the relay waits on the client
    # the client left without reading: the relay stops waiting, the upstream is dropped
    assert raw.hung_up.wait(10)
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["usage_source"]) == ("cancelled", "estimated")
    assert 0 < row["output_tokens"] < 40_000


def test_a_client_hang_up_drops_the_upstream_and_meters_the_chunks_so_far(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    raw.script = [chunk(event(content("a", i))) for i in range(3)] + [
        x for i in range(100) for x in (0.05, chunk(event(content("b", i))))
    ]
    key = relay_gw.create_key(user="alice")
    body = {"model": "raw", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST",
            relay_gw.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as r,
    ):
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data: ")
            if seen == 5:
                break
    assert raw.hung_up.wait(5)
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["usage_source"]) == ("cancelled", "estimated")
    assert 5 <= row["output_tokens"] < 103


def test_a_bug_in_the_relay_ends_the_stream_in_shape_and_is_metered(
    relay_gw: Gateway, raw: RawUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxy.gateway.relays import openai_relay

    def boom(self: object, payloads: list[bytes]) -> list[bytes]:
        raise LookupError("boom")

    raw.script = [chunk(event(content("a"))), 0.05, chunk(event(FINAL) + event("[DONE]"))]
    monkeypatch.setattr(openai_relay._Frames, "frame", boom)
    got = payloads(post_stream(relay_gw, relay_gw.create_key(user="alice")))
    assert "internal error (LookupError)" in got[-1]
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["error_detail"]) == ("internal_error", "LookupError")


@pytest.mark.parametrize(
    ("path", "delta", "end"),
    [
        ("/v1/messages", "text_delta", "message_stop"),
        ("/v1/responses", "response.output_text.delta", "response.completed"),
    ],
    ids=["messages", "responses"],
)
def test_translated_streams_reach_the_client_whole_and_are_metered(
    relay_gw: Gateway, raw: RawUpstream, path: str, delta: str, end: str
) -> None:
    events = [event(content(f"w{i}", i)) for i in range(4)]
    raw.script = [
        chunk(events[0] + events[1][:20]),
        0.05,
        chunk(events[1][20:] + events[2]),
        chunk(events[3] + event(FINAL) + event("[DONE]")),
        chunk(b""),
    ]
    key = relay_gw.create_key(user="alice")
    body: dict[str, Any] = {"model": "raw", "stream": True, "max_tokens": 16}
    body |= (
        {"input": "hi"}
        if path == "/v1/responses"
        else {"messages": [{"role": "user", "content": "hi"}]}
    )
    r = httpx.post(
        relay_gw.url + path,
        json=body,
        headers={"Authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    data = [json.loads(p) for p in payloads(r)]
    texts = [text_of(d) for d in data if delta in kinds(d)]
    assert texts == ["w0", "w1", "w2", "w3"]
    assert data[-1]["type"] == end
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("ok", 7, 3)


def kinds(event: dict[str, Any]) -> tuple[object, ...]:
    """An event's type, and its delta's when the delta is an object (Messages)."""
    delta = event.get("delta")
    return (event.get("type"), delta.get("type") if isinstance(delta, dict) else None)


def text_of(event: dict[str, Any]) -> str:
    """A text delta's text: a Messages ``content_block_delta``'s or a Responses delta's."""
    delta = event["delta"]
    return str(delta["text"] if isinstance(delta, dict) else delta)


def test_an_error_chunk_mid_stream_ends_a_translated_stream_as_the_upstream_error(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    failure = {"error": {"message": "out of memory", "type": "server_error"}}
    raw.script = [chunk(event(content("a")) + event(failure)), 2.0]
    key = relay_gw.create_key(user="alice")
    body = {
        "model": "raw",
        "stream": True,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    }
    r = httpx.post(
        relay_gw.url + "/v1/messages",
        json=body,
        headers={"Authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    data = [json.loads(p) for p in payloads(r)]
    assert data[-1]["type"] == "error" and "out of memory" in data[-1]["error"]["message"]
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["output_tokens"]) == ("upstream_error", 1)


# Anthropic upstreams: the same relay, its lines split into Anthropic's events


def aevent(kind: str, crlf: bool = False, **fields: Any) -> bytes:
    text = b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields})
    text += b"\n\n"
    return text.replace(b"\n", b"\r\n") if crlf else text


def message_events(texts: list[str], crlf: bool = False) -> list[bytes]:
    """A whole Messages stream: 11 input tokens and 5 read from cache (16 input as the ledger
    counts them), 4 output, ``texts`` as the text deltas."""
    usage = {"input_tokens": 11, "cache_read_input_tokens": 5, "output_tokens": 1}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
               "content": [], "stop_reason": None, "usage": usage}  # fmt: skip
    block = {"type": "text", "text": ""}
    return [
        aevent("message_start", crlf, message=message),
        aevent("content_block_start", crlf, index=0, content_block=block),
        *(
            aevent("content_block_delta", crlf, index=0, delta={"type": "text_delta", "text": t})
            for t in texts
        ),
        aevent("content_block_stop", crlf, index=0),
        aevent(
            "message_delta", crlf, delta={"stop_reason": "end_turn"}, usage={"output_tokens": 4}
        ),
        aevent("message_stop", crlf),
    ]


def post_messages(gw: Gateway, model: str = "claude-raw") -> httpx.Response:
    body = {"model": model, "stream": True, "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    r = httpx.post(
        gw.url + "/v1/messages",
        json=body,
        headers={"x-api-key": gw.create_key(user="alice"), "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_a_native_stream_reaches_the_client_byte_for_byte_however_it_was_read(
    relay_gw: Gateway, raw: RawUpstream, crlf: bool
) -> None:
    events = message_events([f"w{i}" for i in range(5)], crlf)
    sent = b"".join(events)
    # events together in a read, one split mid-line, one split between its lines
    cuts = [len(b"".join(events[:3])), len(b"".join(events[:4])) + 7, len(sent) - 3]
    pieces = [sent[a:b] for a, b in zip([0, *cuts], [*cuts, len(sent)], strict=True)]
    raw.script = [x for piece in pieces for x in (chunk(piece), 0.05)] + [chunk(b"")]
    r = post_messages(relay_gw)
    assert r.content == sent
    [row] = relay_gw.wait_events(1)
    got = (row["status"], row["input_tokens"], row["cache_read_tokens"], row["output_tokens"])
    assert got == ("ok", 16, 5, 4)
    assert row["usage_source"] == "upstream"


def test_a_native_stream_cut_before_message_stop_ends_with_an_error_event(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    events = message_events(["a", "b", "c"])
    raw.script = [chunk(b"".join(events[:4]) + events[4][:12]), chunk(b"")]  # ends mid-event
    data = sse_events(post_messages(relay_gw).text)
    assert [d["type"] for d in data[:-1]] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta"
    ]  # fmt: skip
    assert data[-1]["type"] == "error"
    assert "closed the stream before it finished" in data[-1]["error"]["message"]
    [row] = relay_gw.wait_events(1)
    # input and cache exact from message_start, output estimated from the deltas relayed
    got = (row["status"], row["usage_source"], row["input_tokens"], row["output_tokens"])
    assert got == ("upstream_error", "estimated", 16, 2)


def test_a_native_upstream_error_event_is_relayed_once_and_recorded(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    events = message_events(["a"])
    failure = {"type": "overloaded_error", "message": "Overloaded"}
    raw.script = [chunk(b"".join(events[:3]) + aevent("error", error=failure)), chunk(b"")]
    data = sse_events(post_messages(relay_gw).text)
    errors = [d for d in data if d["type"] == "error"]
    assert errors == [{"type": "error", "error": failure}]
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["input_tokens"]) == ("upstream_error", 16)


def test_a_broken_data_line_in_a_native_stream_is_dropped_and_the_counts_estimated(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    events = message_events(["a", "b"])
    events.insert(3, b"event: content_block_delta\ndata: {not json\n\n")
    raw.script = [chunk(b"".join(events)), chunk(b"")]
    r = post_messages(relay_gw)
    assert b"not json" not in r.content
    assert sse_events(r.text)[-1]["type"] == "message_stop"
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["usage_source"]) == ("ok", "estimated")


def test_a_native_upstream_that_drips_without_a_line_times_out_mid_stream(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    events = message_events(["a"])
    raw.script = [chunk(b"".join(events[:3]))] + [0.2, chunk(b"x")] * 15
    data = sse_events(post_messages(relay_gw, model="claude-raw-drip").text)
    assert data[-1]["type"] == "error" and "timed out" in data[-1]["error"]["message"]
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("timeout", 16, 1)
    assert raw.hung_up.wait(5)


def test_a_native_client_hang_up_drops_the_upstream_and_meters_what_it_saw(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    events = message_events([f"w{i}" for i in range(100)])
    raw.script = [chunk(b"".join(events[:5]))] + [x for e in events[5:] for x in (0.05, chunk(e))]
    key = relay_gw.create_key(user="alice")
    body = {
        "model": "claude-raw",
        "stream": True,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", relay_gw.url + "/v1/messages", json=body, headers=headers) as r,
    ):
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data:")
            if seen == 6:
                break
    assert raw.hung_up.wait(5)
    [row] = relay_gw.wait_events(1)
    got = (row["status"], row["usage_source"], row["input_tokens"])
    assert got == ("cancelled", "estimated", 16)
    assert 4 <= row["output_tokens"] < 100


def test_a_native_client_that_stops_reading_holds_the_upstream_back_with_no_timeout(
    relay_gw: Gateway, raw: RawUpstream
) -> None:
    n = 40_000  # ~40 MB of deltas
    events = message_events(["w" * 1000] * 100)
    middle = b"".join(events[2:-3])
    raw.script = [
        chunk(b"".join(events[:2])),
        *[chunk(middle)] * (n // 100),
        chunk(b"".join(events[-3:])),
        chunk(b""),
    ]
    total = len(middle) * (n // 100)
    body = {
        "model": "claude-raw-drip",  # its 1 s deadline: the client's stall outlasts it
        "stream": True,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with stalled_client(relay_gw, "/v1/messages", body) as client:
        held = wait_for(lambda: still(raw), timeout_s=20)
        assert held < total * 3 / 4
        time.sleep(1.5)  # a client slower than its upstream: no upstream timeout for it
        received = read_all(client)
    assert received.count(b'"text":"' + b"w" * 1000) == n
    assert received.count(b"event: message_stop") == 1
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["output_tokens"]) == ("ok", 4)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_streams_translated_from_an_anthropic_upstream_reach_the_client_and_are_metered(
    relay_gw: Gateway, raw: RawUpstream, path: str
) -> None:
    events = message_events([f"w{i}" for i in range(4)])
    sent = b"".join(events)
    raw.script = [chunk(sent[:300]), 0.05, chunk(sent[300:]), chunk(b"")]
    key = relay_gw.create_key(user="alice")
    body: dict[str, Any] = {"model": "claude-raw", "stream": True}
    if path == "/v1/responses":
        body["input"] = "hi"
    else:
        body |= {"messages": [{"role": "user", "content": "hi"}],
                 "stream_options": {"include_usage": True}}  # fmt: skip
    r = httpx.post(
        relay_gw.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    if path == "/v1/responses":
        data = sse_events(r.text)
        texts = [d["delta"] for d in data if d["type"] == "response.output_text.delta"]
        assert data[-1]["type"] == "response.completed"
        assert data[-1]["response"]["usage"]["output_tokens"] == 4
    else:
        got = payloads(r)
        assert got[-1] == "[DONE]"
        chunks = [json.loads(p) for p in got[:-1]]
        texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
        texts = [t for t in texts if t]
        assert chunks[-1]["usage"]["completion_tokens"] == 4
    assert texts == ["w0", "w1", "w2", "w3"]
    [row] = relay_gw.wait_events(1)
    got_row = (row["status"], row["input_tokens"], row["cache_read_tokens"], row["output_tokens"])
    assert got_row == ("ok", 16, 5, 4)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_an_anthropic_error_event_ends_a_translated_stream_in_the_clients_shape(
    relay_gw: Gateway, raw: RawUpstream, path: str
) -> None:
    events = message_events(["a"])
    failure = {"type": "overloaded_error", "message": "Overloaded"}
    raw.script = [chunk(b"".join(events[:3]) + aevent("error", error=failure)), 2.0]
    key = relay_gw.create_key(user="alice")
    body: dict[str, Any] = {"model": "claude-raw", "stream": True}
    body |= (
        {"input": "hi"}
        if path == "/v1/responses"
        else {"messages": [{"role": "user", "content": "hi"}]}
    )
    r = httpx.post(
        relay_gw.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    data = sse_events(r.text)
    last = data[-1]
    if path == "/v1/responses":
        assert last["type"] == "response.failed"
        assert "Overloaded" in last["response"]["error"]["message"]
    else:
        assert "Overloaded" in last["error"]["message"]
    [row] = relay_gw.wait_events(1)
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("upstream_error", 16, 1)
