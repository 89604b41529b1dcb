"""The request log: one JSON line per metered attempt, to stdout or a file.

The line carries who, what, where and how long, never prompt or completion text, and never a
key (only its id). It is written when the ``tokenmeter.requests`` logger is enabled for INFO, so
the serve log level (``--log-level``) silences it like any other INFO line; it never mixes with
the human-readable log on stderr.
docs/observability.md describes every field.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TextIO

import orjson

from metering.events import UsageEvent

LOGGER = "tokenmeter.requests"
REOPEN_CHECK_S = 1.0  # how soon a rotated file is noticed


class RequestLog:
    """Writes the log line of each finished attempt; ``close`` releases the file.

    The logger only gates by level; the line itself is one ``write`` of bytes, not a trip
    through ``logging``'s records and formatters (that tripled its cost). A file is opened in
    append mode unbuffered, so several workers' lines never interleave, and reopened when
    logrotate moved it away (checked at most once a second).
    """

    def __init__(self, file: str | None) -> None:
        self._logger = logging.getLogger(LOGGER)
        self._path = Path(file) if file is not None else None
        self._file: BinaryIO | None = None
        # bound now, as a logging handler would be; a text-only stdout gets the text
        self._stdout_text: TextIO = sys.stdout
        self._stdout: BinaryIO | None = getattr(sys.stdout, "buffer", None)
        self._inode = 0
        self._checked = 0.0
        if self._path is not None:
            self._open()

    def write(self, event: UsageEvent, *, team: str | None, error_code: str | None) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        line = orjson.dumps(log_line(event, team=team, error_code=error_code)) + b"\n"
        if self._path is None:
            if self._stdout is None:
                self._stdout_text.write(line.decode())
                self._stdout_text.flush()
            else:
                self._stdout.write(line)
                self._stdout.flush()
            return
        now = time.monotonic()
        if now - self._checked > REOPEN_CHECK_S:
            self._checked = now
            self._reopen_if_moved()
        assert self._file is not None
        self._file.write(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> None:
        assert self._path is not None
        self._file = self._path.open("ab", buffering=0)
        self._inode = os.fstat(self._file.fileno()).st_ino

    def _reopen_if_moved(self) -> None:
        assert self._path is not None
        try:
            moved = self._path.stat().st_ino != self._inode
        except FileNotFoundError:
            moved = True
        if moved:
            self.close()
            self._open()


def log_line(event: UsageEvent, *, team: str | None, error_code: str | None) -> dict[str, object]:
    """The fields of one line, in a stable order (docs/observability.md)."""
    u = event.usage
    return {
        "time": datetime.fromtimestamp(event.started_at, UTC).isoformat(timespec="milliseconds"),
        "request_id": event.request_id,
        "event_id": event.id,
        "attempt": event.attempt,
        "key_id": event.key_id,
        "user": event.user,
        "team": team,
        "agent": event.agent,
        "session": event.session,
        "use_case": event.use_case,
        "model": event.model,
        "deployment": event.deployment,
        "backend": event.backend,
        "upstream_model": event.upstream_model,
        "on_prem": event.on_prem,
        "stream": event.stream,
        "status": event.status,
        "http_status": event.http_status,
        "error_code": error_code if error_code or event.status == "ok" else event.status,
        "error_detail": event.error_detail or None,
        "input_tokens": u.input_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "cache_write_1h_tokens": u.cache_write_1h_tokens,
        "output_tokens": u.output_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "usage_source": event.usage_source,
        "cost_micro_usd": event.cost_micro_usd,
        "latency_ms": round(event.latency_s * 1000, 3),
        "ttft_ms": None if event.ttft_s is None else round(event.ttft_s * 1000, 3),
        "overhead_ms": round(event.overhead_s * 1000, 3),
    }
