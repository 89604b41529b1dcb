"""OpenTelemetry traces over OTLP/HTTP: a SERVER span per request and a CLIENT span per upstream
attempt with the GenAI semantic-convention names, continuing the client's traceparent and
handing each attempt's context upstream; no OpenTelemetry SDK loaded when tracing is off."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from proxy.simulated import FakeServer
from tests.conftest import backend_models
from tests.proxy.gateway.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support import Gateway, free_port, wait_for


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def traced(
    fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver
) -> Iterator[Gateway]:
    models = backend_models(fakes)
    down = {"backend": "vllm", "model": "down", "api_base": f"http://127.0.0.1:{free_port()}/v1"}
    models.append(
        {
            "name": "fallback-model",
            "deployments": [down, {**models[0]["deployments"][0], "name": "vllm-up"}],
        }
    )
    gw = Gateway(
        tmp_path_factory.mktemp("traced") / "tm.db",
        {
            "models": models,
            "request_log": {"enabled": False},
            "tracing": {
                "enabled": True,
                "endpoint": receiver.url,
                "service_name": "tokenmeter-test",
                "export_interval_s": 0.05,
            },
        },
    ).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def key(traced: Gateway) -> str:
    return traced.create_key(user="alice", team="platform")


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def spans_of(receiver: OtlpReceiver, trace_id: str, n: int) -> list[ReceivedSpan]:
    got = wait_for(lambda: len(receiver.trace(trace_id)) >= n and receiver.trace(trace_id))
    assert len(got) == n, got
    return sorted(got, key=lambda s: (s.kind != "SERVER", s.start_ns))


def openai_client(gw: Gateway, key: str, headers: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.url + "/v1", api_key=key, max_retries=0, default_headers=headers
    )


def test_a_chat_request_is_a_server_span_with_a_client_span_per_attempt(
    traced, key, receiver, fakes, session_id
):
    header, trace_id, client_span = traceparent()
    marker = "trace-" + uuid.uuid4().hex
    with openai_client(traced, key, {"traceparent": header, "X-Meter-Session": session_id}) as c:
        c.chat.completions.create(
            model="vllm-model", messages=[{"role": "user", "content": marker}]
        )
    request, attempt = spans_of(receiver, trace_id, 2)
    [event] = traced.wait_events(1, "session = :s", s=session_id)

    assert (request.kind, request.name, request.parent_span_id) == (
        "SERVER",
        "chat vllm-model",
        client_span,
    )
    assert request.resource["service.name"] == "tokenmeter-test"
    assert request.attributes["gen_ai.operation.name"] == "chat"
    assert request.attributes["gen_ai.request.model"] == "vllm-model"
    assert request.attributes["gen_ai.response.model"] == event["upstream_model"]
    assert request.attributes["gen_ai.usage.input_tokens"] == event["input_tokens"]
    assert request.attributes["gen_ai.usage.output_tokens"] == event["output_tokens"]
    assert request.attributes["gen_ai.conversation.id"] == session_id
    assert request.attributes["tokenmeter.request_id"] == event["request_id"]

    assert (attempt.kind, attempt.parent_span_id) == ("CLIENT", request.span_id)
    assert attempt.name == f"chat {event['upstream_model']}"
    assert attempt.attributes["gen_ai.provider.name"] == "vllm"
    assert attempt.attributes["gen_ai.request.model"] == event["upstream_model"]
    assert attempt.attributes["gen_ai.usage.output_tokens"] == event["output_tokens"]
    assert attempt.attributes["server.address"] == "127.0.0.1"
    assert attempt.attributes["server.port"] == int(fakes["vllm"].url.rsplit(":", 1)[1])
    assert request.start_ns <= attempt.start_ns <= attempt.end_ns <= request.end_ns
    assert {request.status, attempt.status} == {"UNSET"}

    [sent] = [r for r in fakes["vllm"].requests if marker in str(r.body)]
    assert sent.headers["traceparent"] == f"00-{trace_id}-{attempt.span_id}-01"


def test_a_fallback_has_two_attempt_spans_the_first_an_error(traced, key, receiver):
    header, trace_id, _ = traceparent()
    with openai_client(traced, key, {"traceparent": header}) as c:
        c.chat.completions.create(
            model="fallback-model", messages=[{"role": "user", "content": "x"}]
        )
    request, first, second = spans_of(receiver, trace_id, 3)
    assert {first.parent_span_id, second.parent_span_id} == {request.span_id}
    assert (first.status, first.attributes["error.type"]) == ("ERROR", "upstream_unavailable")
    assert (first.attributes["tokenmeter.attempt"], second.attributes["tokenmeter.attempt"]) == (
        1,
        2,
    )
    assert second.status == "UNSET" and "error.type" not in second.attributes
    assert request.attributes["tokenmeter.attempts"] == 2 and request.status == "UNSET"


def test_a_failed_request_carries_error_type(traced, key, receiver):
    header, trace_id, _ = traceparent()
    with (
        openai_client(traced, key, {"traceparent": header}) as c,
        pytest.raises(openai.RateLimitError),
    ):
        c.chat.completions.create(
            model="vllm-model", messages=[{"role": "user", "content": "[[fake:status=429]]"}]
        )
    request, attempt = spans_of(receiver, trace_id, 2)
    for span in (request, attempt):
        assert (span.status, span.attributes["error.type"]) == ("ERROR", "upstream_rate_limited")
        assert span.attributes["http.response.status_code"] == 429


def test_an_unknown_model_is_a_request_span_without_attempts(traced, key, receiver):
    header, trace_id, _ = traceparent()
    with (
        openai_client(traced, key, {"traceparent": header}) as c,
        pytest.raises(openai.NotFoundError),
    ):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    [request] = spans_of(receiver, trace_id, 1)
    assert request.attributes["error.type"] == "model_not_found"
    assert "gen_ai.provider.name" not in request.attributes


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_messages_and_streams_are_traced(traced, key, receiver, stream):
    header, trace_id, _ = traceparent()
    with anthropic.Anthropic(
        base_url=traced.url, api_key=key, max_retries=0, default_headers={"traceparent": header}
    ) as client:
        args: dict[str, Any] = {"model": "claude", "max_tokens": 64}
        messages = [{"role": "user", "content": "hi"}]
        if stream:
            with client.messages.stream(messages=messages, **args) as s:
                usage = s.get_final_message().usage
        else:
            usage = client.messages.create(messages=messages, **args).usage
    request, attempt = spans_of(receiver, trace_id, 2)
    assert attempt.attributes["gen_ai.provider.name"] == "anthropic"
    assert request.attributes["gen_ai.usage.output_tokens"] == usage.output_tokens


def test_embeddings_are_their_own_operation(traced, key, receiver):
    header, trace_id, _ = traceparent()
    with openai_client(traced, key, {"traceparent": header}) as c:
        c.embeddings.create(model="vllm-model", input=["a b"])
    request, attempt = spans_of(receiver, trace_id, 2)
    assert request.name == "embeddings vllm-model"
    assert attempt.attributes["gen_ai.operation.name"] == "embeddings"


def test_without_a_traceparent_the_request_starts_a_trace(traced, key, receiver, session_id):
    with openai_client(traced, key, {"X-Meter-Session": session_id}) as c:
        c.chat.completions.create(
            model="azure-mistral", messages=[{"role": "user", "content": "x"}]
        )
    [event] = traced.wait_events(1, "session = :s", s=session_id)

    def root() -> list[ReceivedSpan]:
        rid = event["request_id"]
        return [s for s in receiver.spans if s.attributes.get("tokenmeter.request_id") == rid]

    [request] = wait_for(root)
    assert request.parent_span_id == ""
    [attempt] = [s for s in receiver.trace(request.trace_id) if s.kind == "CLIENT"]
    assert attempt.attributes["gen_ai.provider.name"] == "azure.ai.inference"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMETER_")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )


def test_tracing_off_loads_no_sdk_no_exporter_and_no_tracer():
    # (FastAPI itself imports the opentelemetry API package; the SDK is what costs)
    done = run_python(
        "import sys\n"
        "from proxy.app import create_app\n"
        "from proxy.config.settings import load_settings\n"
        "from proxy.gateway.observability.telemetry import build_telemetry\n"
        "settings = load_settings()\n"
        "create_app(settings)\n"
        "assert build_telemetry(settings.model_copy(update={'request_log': "
        "settings.request_log.model_copy(update={'enabled': False})})) is None\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', "
        "'opentelemetry.exporter', 'proxy.gateway.observability.tracing'))))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_tracing_without_the_extra_names_it():
    done = run_python(
        "import importlib.abc, sys\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith('opentelemetry.sdk'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from proxy.config.settings import ConfigError, load_settings\n"
        "from proxy.gateway.observability.telemetry import build_telemetry\n"
        "try:\n"
        "    build_telemetry(load_settings(tracing={'enabled': True}))\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    assert "pip install 'tokenmeter[otel]'" in done.stdout, done.stderr
    assert "opentelemetry.sdk" in done.stdout
