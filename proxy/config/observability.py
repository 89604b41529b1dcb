"""Settings of what the gateway tells operators beyond metrics: the request log and traces."""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestLogSettings(_Strict):
    """One JSON line per metered request attempt (docs/observability.md lists the fields)."""

    enabled: bool = True
    file: str | None = Field(
        default=None, description="append to this file (reopened when rotated); default stdout"
    )


class TracingSettings(_Strict):
    """OTLP/HTTP export of OpenTelemetry GenAI spans; needs the ``otel`` extra."""

    enabled: bool = False
    endpoint: str = Field(
        default="http://127.0.0.1:4318/v1/traces", description="the collector's OTLP/HTTP URL"
    )
    service_name: str = "tokenmeter"
    headers: dict[str, str] = Field(default_factory=dict, description="e.g. an auth header")
    timeout_s: float = Field(default=10.0, gt=0)
    export_interval_s: float = Field(
        default=5.0, gt=0, description="spans are batched and sent at most this long after"
    )


def configure_logging(level: str) -> None:
    """The process's log level and format; the request log's INFO lines follow the level."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    # alembic announces each of its plugins at INFO on every start: noise, not news
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
