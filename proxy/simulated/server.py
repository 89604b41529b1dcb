"""Run a fake upstream app on a real loopback socket in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import uvicorn
from starlette.applications import Starlette

from proxy.simulated.recording import FakeStats, RecordedRequest, Recorder

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


class FakeServer:
    """uvicorn in a daemon thread with its own event loop.

    The socket is bound here, before uvicorn starts, so port 0 resolves to a
    real port that is known the moment `start()` returns and no other process
    can grab it in between.
    """

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        recorder = getattr(app.state, "recorder", None)
        # Apps that do not record still run; they just report nothing.
        self.recorder: Recorder = recorder if isinstance(recorder, Recorder) else Recorder()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def requests(self) -> Sequence[RecordedRequest]:
        """The latest requests received (the most recent ``MAX_RECORDED``)."""
        return self.recorder.requests

    @property
    def stats(self) -> FakeStats:
        return self.recorder.stats

    def reset(self) -> None:
        """Forget recorded requests and zero the counters."""
        self.recorder.reset()

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("FakeServer already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # An explicit IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted
        # sockets whose proto says TCP, and without it every two-write response
        # (headers, then body) stalls ~40 ms on Nagle plus delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            loop="asyncio",
            http="httptools",
            lifespan="off",
            # None keeps uvicorn from reconfiguring the host process's logging.
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run,
            args=(self._server, sock),
            name=f"fake-upstream-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._wait_until_accepting()
        return self

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:
            # Handed to the starting thread, which raises it with context.
            self._error = exc
        finally:
            sock.close()

    def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        assert self._server is not None and self._thread is not None
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(
                    f"fake server on port {self.port} failed to start"
                ) from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"fake server on port {self.port} did not start")
            time.sleep(0.005)
        # `started` is set once listening; a real connect proves the socket accepts.
        with socket.create_connection((self.host, self.port), timeout=_START_TIMEOUT):
            pass

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(_STOP_TIMEOUT)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(_STOP_TIMEOUT)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
