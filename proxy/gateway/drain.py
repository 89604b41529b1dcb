"""Graceful drain: on SIGTERM, open streams may finish until the drain deadline, then are cut.

The server (uvicorn) stops accepting and waits for open connections on SIGTERM, but it cannot
know a stream's end is worth waiting for, and when it finally cancels a request the stream's
usage would be lost with it. So each process hooks SIGTERM (and SIGINT) too: it starts the
deadline, and at the deadline cuts every stream still open (an error event to the client, the
event metered ``cancelled`` with its tokens so far) while the journal is still open. The server's
own grace period is set a little longer than the drain (``tokenmeter serve`` does).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType
from typing import Any

from proxy.gateway.relays.streaming import EventStreamResponse

log = logging.getLogger(__name__)

DEFAULT_DRAIN_TIMEOUT_S = 120.0  # long enough for a typical completion of a large model
SERVER_GRACE_S = 5.0  # the server's wait beyond the drain: time to send the cut and flush


class Drain:
    """The open streams of this process, and the deadline once a shutdown began."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.draining = False
        self._streams: set[EventStreamResponse] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def track(self, response: EventStreamResponse) -> None:
        self._streams.add(response)
        response.done.append(lambda: self._streams.discard(response))
        if self.draining and self._task is not None and self._task.done():
            response.cut()  # started after the deadline: nothing left to wait for

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.warning(
            "shutting down: %d open stream(s) may run %g s more before they are cut",
            len(self._streams),
            self.timeout_s,
        )
        self._task = asyncio.get_running_loop().create_task(self._deadline())

    async def _deadline(self) -> None:
        await asyncio.sleep(self.timeout_s)  # the deadline itself, not a wait for state
        self.cut_all()

    def cut_all(self) -> None:
        if self._streams:
            log.warning("drain deadline passed: cutting %d open stream(s)", len(self._streams))
        for stream in list(self._streams):
            stream.cut()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def hook_signals(drain: Drain) -> None:
    """Chain our drain start before the server's own SIGTERM/SIGINT handlers (main thread only:
    a server embedded in a thread, as in tests, drives ``Drain.begin`` itself)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(drain.begin)
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)
