"""`tokenmeter serve`'s HTTP protocol writes each answer's head with its body: one writev for a
non-streamed answer instead of uvicorn's two sends, while a stream's head still leaves as soon
as it is ready, an interim 100 Continue at once, and nothing is lost or written after a hang-up.

The real protocol (uvicorn's httptools protocol and our subclass) on a running loop, fed the
request's bytes, writing to a transport that records each call."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from proxy.gateway.http_limits import HeadLimits, LimitedHttpToolsProtocol

LIMITS = HeadLimits(max_header_bytes=16384, max_headers=50, header_timeout_s=5.0)
BODY = b'{"ok":true}'


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []  # ("write" | "writelines" | "close", bytes)
        self.closing = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        assert not self.closing, "written after close"
        self.calls.append(("write", bytes(data)))

    def writelines(self, chunks: Any) -> None:
        assert not self.closing, "written after close"
        self.calls.append(("writelines", b"".join(chunks)))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", b""))

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def sent(self) -> bytes:
        return b"".join(data for _, data in self.calls)


def connect(app: Any) -> tuple[LimitedHttpToolsProtocol, RecordingTransport]:
    config = Config(app=app, lifespan="off", log_level="warning")
    protocol = LimitedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, limits=LIMITS
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


def request(path: str = "/x", body: bytes = b"{}", *, extra: bytes = b"") -> bytes:
    return (
        b"POST %b HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n%b\r\n%b" % (path.encode(), len(body), extra, body)
    )


async def answer(scope, receive, send) -> None:
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


async def settle(transport: RecordingTransport, calls: int, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.001)):
        if len(transport.calls) >= calls:
            break
        await asyncio.sleep(0.001)
    assert len(transport.calls) >= calls, transport.calls
    await asyncio.sleep(0.01)  # and nothing more arrives


async def test_an_answer_leaves_in_one_write_per_request_on_a_kept_alive_connection():
    protocol, transport = connect(answer)
    for n in (1, 2, 3):
        protocol.data_received(request())
        await settle(transport, n)
    assert [kind for kind, _ in transport.calls] == ["writelines"] * 3
    for _, data in transport.calls:
        head, body = data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 11" in head
        assert body == BODY


async def test_a_streams_head_leaves_alone_before_its_first_chunk():
    release = asyncio.Event()

    async def stream(scope, receive, send) -> None:
        await receive()
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await release.wait()  # the upstream's first event takes its time
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    protocol, transport = connect(stream)
    protocol.data_received(request())
    await settle(transport, 1)
    assert transport.calls[0][0] == "write"
    assert transport.calls[0][1].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.calls[0][1].endswith(b"transfer-encoding: chunked\r\n\r\n")
    release.set()
    await settle(transport, 3)
    assert transport.sent().endswith(b"9\r\ndata: 1\n\n\r\n0\r\n\r\n")


async def test_100_continue_is_sent_at_once_and_the_answer_after_it_in_one_write():
    protocol, transport = connect(answer)
    head_only = request(extra=b"expect: 100-continue\r\n").removesuffix(b"{}")
    protocol.data_received(head_only)
    await settle(transport, 1)  # the app waits for the body: the client is told to send it
    assert transport.calls == [("write", b"HTTP/1.1 100 Continue\r\n\r\n")]
    protocol.data_received(b"{}")
    await settle(transport, 2)
    kind, data = transport.calls[1]
    assert kind == "writelines" and data.startswith(b"HTTP/1.1 200 OK") and data.endswith(BODY)


async def test_a_failure_after_the_head_still_sends_the_head_before_closing(caplog):
    async def fails(scope, receive, send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    caplog.set_level(logging.ERROR, logger="uvicorn.error")
    protocol, transport = connect(fails)
    protocol.data_received(request())
    await settle(transport, 2)
    assert [kind for kind, _ in transport.calls] == ["write", "close"]
    assert transport.calls[0][1].startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("hang_up", ["before the head leaves", "while the body is awaited"])
async def test_a_client_gone_while_the_head_is_held_gets_nothing_written(hang_up, caplog):
    proceed = asyncio.Event()

    async def slow(scope, receive, send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await proceed.wait()
        await send({"type": "http.response.body", "body": b"late", "more_body": False})

    protocol, transport = connect(slow)
    protocol.data_received(request())
    if hang_up == "before the head leaves":
        for _ in range(50):  # the app's task runs and sends the head into the holder...
            await asyncio.sleep(0)
            if protocol.cycle.response_started:
                break
        assert protocol.cycle.response_started and transport.calls == []
        transport.closing = True  # ...and the client hangs up before the loop flushes it
        protocol.connection_lost(None)
    else:
        await settle(transport, 1)
        transport.closing = True
        protocol.connection_lost(None)
    proceed.set()
    await asyncio.sleep(0.05)
    writes = [data for kind, data in transport.calls if kind != "close"]
    assert all(data.startswith(b"HTTP/1.1 200") for data in writes)
    assert b"late" not in transport.sent()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
