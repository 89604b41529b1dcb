"""A child process kept running: restarted with backoff when it exits on its own."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time

log = logging.getLogger("tokenmeter")

_MAX_BACKOFF_S = 30.0
_HEALTHY_RUN_S = 60.0  # a child that ran this long before dying restarts without delay


class Supervised:
    """``cmd`` in a session of its own (a terminal's Ctrl-C or hang-up reaches serve, which
    stops it in order, not the child directly)."""

    def __init__(self, name: str, cmd: list[str]) -> None:
        self.name = name
        self._cmd = cmd
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name=f"supervise {name}", daemon=True)
        self.restarts = 0

    def start(self) -> Supervised:
        self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> None:
        with self._lock:
            if not self._stopping.is_set():
                self._proc = subprocess.Popen(self._cmd, start_new_session=True)

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            assert self._proc is not None
            started = time.monotonic()
            code = self._proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= _HEALTHY_RUN_S:
                backoff = 1.0
            log.error("%s exited (code %s); restarting in %.0f s", self.name, code, backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            self.restarts += 1
            self._spawn()

    def stop(self, *, timeout_s: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %.0f s; killed", self.name, timeout_s)
            proc.kill()
            proc.wait()
