"""OpenTelemetry traces of the request path, exported over OTLP/HTTP (protobuf).

One SERVER span per client request and one CLIENT span per upstream attempt (a fallback makes
two), named and attributed as the OpenTelemetry GenAI semantic conventions say: span name
``{gen_ai.operation.name} {gen_ai.request.model}``, ``gen_ai.provider.name``,
``gen_ai.usage.input_tokens``... The request span continues the client's W3C ``traceparent``;
each attempt's context goes upstream in its own ``traceparent``. Only imported when tracing is
on (the ``otel`` extra).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from metering.events import UsageEvent
from proxy.config.observability import TracingSettings
from proxy.gateway.errors import retryable_code

if TYPE_CHECKING:
    from proxy.gateway.call import Call

# gen_ai.provider.name: the convention's well-known values where one fits, else our backend
PROVIDERS = {"anthropic": "anthropic", "azure_mistral": "azure.ai.inference"}


@dataclass(slots=True)
class Spans:
    """The open spans of one attempt: its request's span and its own (None before routing)."""

    request: Span
    attempt: Span | None = None


class Tracer:
    """Starts and ends the spans; ``shutdown`` flushes what is still queued."""

    def __init__(self, settings: TracingSettings) -> None:
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name})
        )
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint, headers=dict(settings.headers), timeout=settings.timeout_s
        )
        delay_ms = settings.export_interval_s * 1000
        self._provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=delay_ms)
        )
        self._tracer = self._provider.get_tracer("tokenmeter")
        self._propagator = TraceContextTextMapPropagator()

    def request_started(self, call: Call, headers: Mapping[str, str]) -> None:
        parent = self._propagator.extract(headers)
        span = self._tracer.start_span(
            call.operation, context=parent, kind=SpanKind.SERVER, start_time=_ns(call.started)
        )
        call.spans = Spans(request=span)

    def attempt_started(self, call: Call) -> None:
        spans: Spans | None = call.spans
        dep = call.deployment
        if spans is None or dep is None:
            return
        address = urlsplit(dep.api_base)
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": call.operation,
            "gen_ai.provider.name": PROVIDERS.get(dep.backend, dep.backend),
            "gen_ai.request.model": dep.model,
            "server.address": address.hostname or "",
            "tokenmeter.deployment": dep.name,
            "tokenmeter.backend": dep.backend,
            "tokenmeter.attempt": call.attempt,
        }
        if address.port:
            attributes["server.port"] = address.port
        span = self._tracer.start_span(
            f"{call.operation} {dep.model}",
            context=trace.set_span_in_context(spans.request),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        call.spans = Spans(request=spans.request, attempt=span)

    def inject(self, call: Call, headers: dict[str, str]) -> dict[str, str]:
        spans: Spans | None = call.spans
        if spans is None or spans.attempt is None:
            return headers
        out = dict(headers)
        self._propagator.inject(out, context=trace.set_span_in_context(spans.attempt))
        return out

    def finished(self, call: Call, event: UsageEvent, error_code: str | None) -> None:
        spans: Spans | None = call.spans
        if spans is None:
            return
        error = None if event.status == "ok" else (error_code or event.status)
        if spans.attempt is not None:
            _describe(spans.attempt, event, error)
            spans.attempt.set_attribute("gen_ai.response.model", event.upstream_model)
            spans.attempt.end()
        final = event.status == "ok" or call.last or not retryable_code(error, event.http_status)
        if final:
            self._end_request(spans.request, call, event, error)

    def discarded(self, call: Call) -> None:
        spans: Spans | None = call.spans
        if spans is not None:
            spans.request.end()

    def shutdown(self) -> None:
        self._provider.shutdown()

    def _end_request(self, span: Span, call: Call, event: UsageEvent, error: str | None) -> None:
        span.update_name(f"{call.operation} {event.model}")
        span.set_attribute("gen_ai.operation.name", call.operation)
        span.set_attribute("gen_ai.request.model", event.model)
        if event.backend != "none":
            span.set_attribute("gen_ai.provider.name", PROVIDERS.get(event.backend, event.backend))
            span.set_attribute("gen_ai.response.model", event.upstream_model)
        span.set_attribute("tokenmeter.request_id", event.request_id)
        span.set_attribute("tokenmeter.attempts", event.attempt)
        span.set_attribute("tokenmeter.use_case", event.use_case)
        if event.session != "unknown":
            span.set_attribute("gen_ai.conversation.id", event.session)
        _describe(span, event, error)
        span.end()


def _describe(span: Span, event: UsageEvent, error: str | None) -> None:
    u = event.usage
    span.set_attribute("gen_ai.usage.input_tokens", u.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", u.output_tokens)
    span.set_attribute("gen_ai.usage.cache_read.input_tokens", u.cache_read_tokens)
    span.set_attribute("gen_ai.usage.cache_creation.input_tokens", u.cache_write_tokens)
    span.set_attribute("http.response.status_code", event.http_status)
    span.set_attribute("tokenmeter.status", event.status)
    if event.cost_micro_usd is not None:
        span.set_attribute("tokenmeter.cost_micro_usd", event.cost_micro_usd)
    if error is not None:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR, error))


def _ns(unix_s: float) -> int:
    return int(unix_s * 1e9)
