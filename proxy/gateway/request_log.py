"""The request log: one JSON line per metered attempt, to stdout or a file.

The line carries who, what, where and how long, never prompt or completion text, and never a
key (only its id). It goes through the ``tokenmeter.requests`` logger at INFO, so the serve log
level (``--log-level``) silences it like any other INFO line, and it never mixes with the
human-readable log: the logger has its own handler and does not propagate.
docs/observability.md describes every field.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from metering.events import UsageEvent

LOGGER = "tokenmeter.requests"


class RequestLog:
    """Writes the log line of each finished attempt; ``close`` detaches its handler."""

    def __init__(self, file: str | None) -> None:
        self._logger = logging.getLogger(LOGGER)
        self._logger.propagate = False
        handler: logging.Handler
        if file is None:
            handler = logging.StreamHandler(sys.stdout)
        else:
            # WatchedFileHandler reopens the file after logrotate moved it away
            from logging.handlers import WatchedFileHandler

            handler = WatchedFileHandler(file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._handler = handler
        self._logger.addHandler(handler)

    def write(self, event: UsageEvent, *, team: str | None, error_code: str | None) -> None:
        if self._logger.isEnabledFor(logging.INFO):
            line = log_line(event, team=team, error_code=error_code)
            self._logger.info(orjson.dumps(line).decode())

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()


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
