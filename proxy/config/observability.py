"""Settings of what the gateway tells operators beyond metrics: the request log and traces."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
