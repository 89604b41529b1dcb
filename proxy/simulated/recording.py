"""Request recording and counters, owned by the fake app itself.

The app (not the server) records, so the same app object can be mounted in any
ASGI server, and tests read what it saw without knowing how it is hosted.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

EXCHANGE_KEY = "tokenmeter.fake.exchange"
Counter = Literal["completed", "disconnected", "aborted"]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass(slots=True)
class FakeStats:
    requests: int = 0
    completed: int = 0
    disconnected: int = 0
    # Connections the fake cut on purpose (`cut_after`), kept apart from client hang-ups.
    aborted: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


MAX_RECORDED = 1000


class Recorder:
    """Written from the server's event loop, read from test threads."""

    def __init__(self) -> None:
        # Bounded: as the simulated backends of a long-running server, the fakes must not
        # keep every request body they ever saw.
        self.requests: deque[RecordedRequest] = deque(maxlen=MAX_RECORDED)
        self.stats = FakeStats()
        self._lock = threading.Lock()

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
            self.stats.requests += 1

    def count(self, counter: Counter) -> None:
        with self._lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    def reset(self) -> None:
        # In place, so references handed out earlier stay live.
        with self._lock:
            self.requests.clear()
            self.stats.requests = self.stats.completed = 0
            self.stats.disconnected = self.stats.aborted = 0


@dataclass(slots=True)
class Exchange:
    """Per-request context the handlers reach through the ASGI scope."""

    recorder: Recorder
    # The server's own `send`, before Starlette wraps it: the only handle on the
    # connection that lets a handler drop it without an answer.
    raw_send: Send
    request_id: str = field(default_factory=lambda: "req_" + uuid.uuid4().hex[:24])


def exchange_of(scope: Scope) -> Exchange | None:
    exchange = scope.get(EXCHANGE_KEY)
    return exchange if isinstance(exchange, Exchange) else None


def _recorded(scope: Scope, body: bytes) -> RecordedRequest:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    parsed: Any = None
    if body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
    return RecordedRequest(
        method=scope["method"],
        path=scope["path"],
        query=query,
        headers=headers,
        body=parsed if isinstance(parsed, dict) else None,
    )


async def _stats(request: Request) -> Response:
    recorder: Recorder = request.app.state.recorder
    return Response(orjson.dumps(recorder.stats.as_dict()), media_type="application/json")


class FakeApp(Starlette):
    """Starlette app that records every request and counts how responses ended."""

    def __init__(self, routes: Sequence[BaseRoute], *, request_id_header: str | None = None):
        super().__init__(routes=[*routes, Route("/_fake/stats", _stats, methods=["GET"])])
        self.recorder = Recorder()
        self.state.recorder = self.recorder
        self._request_id_header = request_id_header.encode() if request_id_header else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_fake/"):
            await super().__call__(scope, receive, send)
            return
        # Buffer the body up front so it is recorded even if a handler never reads it.
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        self.recorder.record(_recorded(scope, body))
        exchange = Exchange(self.recorder, send)
        scope[EXCHANGE_KEY] = exchange
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start" and self._request_id_header:
                names = {name.lower() for name, _ in message.get("headers", [])}
                if self._request_id_header not in names:
                    extra = (self._request_id_header, exchange.request_id.encode())
                    message = {**message, "headers": [*message.get("headers", []), extra]}
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.recorder.count("completed")

        await super().__call__(scope, replay, tracking_send)
