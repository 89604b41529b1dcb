"""What the request path reports besides the ledger: the request log line and the trace spans.

Built once in the lifespan; ``None`` when both are off, so the hot path pays one ``is None``
test per hook and imports nothing of OpenTelemetry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from metering.events import UsageEvent
from proxy.config.settings import ConfigError, Settings
from proxy.gateway.observability.request_log import RequestLog

if TYPE_CHECKING:
    from proxy.gateway.call import Call
    from proxy.gateway.observability.tracing import Tracer


class Telemetry:
    """Fans each hook out to the request log and the tracer, whichever are on."""

    def __init__(self, log: RequestLog | None, tracer: Tracer | None) -> None:
        self._log = log
        self._tracer = tracer

    def request_started(self, call: Call, headers: Mapping[str, str]) -> None:
        if self._tracer is not None:
            self._tracer.request_started(call, headers)

    def attempt_started(self, call: Call) -> None:
        if self._tracer is not None:
            self._tracer.attempt_started(call)

    def propagate(self, call: Call, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` for the upstream, with the attempt's W3C trace context added."""
        return self._tracer.inject(call, headers) if self._tracer is not None else headers

    def finished(self, call: Call, event: UsageEvent, error_code: str | None) -> None:
        if self._log is not None:
            self._log.write(event, team=call.key.team, error_code=error_code)
        if self._tracer is not None:
            self._tracer.finished(call, event, error_code)

    def discarded(self, call: Call) -> None:
        if self._tracer is not None:
            self._tracer.discarded(call)

    async def close(self) -> None:
        if self._log is not None:
            self._log.close()
        if self._tracer is not None:
            await asyncio.to_thread(self._tracer.shutdown)  # flushes spans over HTTP


def build_telemetry(settings: Settings) -> Telemetry | None:
    """The request log and tracer the settings ask for; ConfigError if tracing cannot start."""
    log = RequestLog(settings.request_log.file) if settings.request_log.enabled else None
    tracer = None
    if settings.tracing.enabled:
        check_tracing_installed()
        from proxy.gateway.observability.tracing import Tracer

        tracer = Tracer(settings.tracing)
    return None if log is None and tracer is None else Telemetry(log, tracer)


def check_tracing_installed() -> None:
    """ConfigError naming the extra when tracing is on but OpenTelemetry is not installed."""
    modules = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
    missing = [m for m in modules if not _found(m)]
    if missing:
        raise ConfigError(
            "tracing.enabled: OpenTelemetry is not installed (missing "
            f"{', '.join(missing)}): pip install 'tokenmeter[otel]'"
        )


def _found(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
