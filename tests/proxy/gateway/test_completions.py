"""POST /v1/completions (legacy text completions, editors' autocomplete) through the openai SDK:
passed through to vLLM, TGI and OpenAI-compatible servers and metered; a clear 400 elsewhere."""

from __future__ import annotations

import openai
import pytest

from tests.proxy.gateway.fake_usage import ledger_usage, reported_usage, requests_for

SERVED = {"vllm-model": "vllm", "tgi-model": "tgi", "compat-model": "vllm"}


def client(gateway, key: str, session: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=key,
        max_retries=0,
        default_headers={"X-Meter-Session": session},
    )


@pytest.mark.parametrize("model", SERVED)
def test_completion_is_passed_through_and_metered(gateway, api_key, session_id, fakes, model):
    resp = client(gateway, api_key, session_id).completions.create(
        model=model, prompt=f"def fib({session_id}):", max_tokens=8
    )
    assert resp.object == "text_completion" and resp.choices[0].text
    assert resp.choices[0].finish_reason == "length"
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    [sent] = requests_for(fakes[SERVED[model]], session_id)
    assert sent.path.endswith("/completions") and not sent.path.endswith("chat/completions")
    assert ledger_usage(event) == reported_usage(fakes[SERVED[model]], sent)
    assert resp.usage is not None and event["output_tokens"] == resp.usage.completion_tokens == 8


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("model", SERVED)
def test_stream_is_metered_and_shows_usage_only_when_asked(
    gateway, api_key, session_id, fakes, model, include_usage
):
    options = {"include_usage": True} if include_usage else None
    chunks = list(
        client(gateway, api_key, session_id).completions.create(
            model=model, prompt=f"import {session_id}", stream=True, stream_options=options
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.startswith("Simulated reply")
    assert [c.usage is not None for c in chunks].count(True) == int(include_usage)
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    [sent] = requests_for(fakes[SERVED[model]], session_id)
    assert ledger_usage(event) == reported_usage(fakes[SERVED[model]], sent)
    assert (event["stream"], event["usage_source"], event["status"]) == (True, "upstream", "ok")


@pytest.mark.parametrize("model", ["claude", "azure-mistral"])
def test_backends_without_text_completions_answer_a_clear_400(gateway, api_key, session_id, model):
    with pytest.raises(openai.BadRequestError, match="serves /v1/completions"):
        client(gateway, api_key, session_id).completions.create(model=model, prompt="x")
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["http_status"]) == ("client_error", 400)


@pytest.mark.parametrize("prompt", ["", []])
def test_empty_prompt_is_a_400(gateway, api_key, session_id, prompt):
    with pytest.raises(openai.BadRequestError, match="prompt"):
        client(gateway, api_key, session_id).completions.create(model="vllm-model", prompt=prompt)


def test_cut_stream_is_metered_as_upstream_error(gateway, api_key, session_id):
    with pytest.raises(openai.APIError):
        list(
            client(gateway, api_key, session_id).completions.create(
                model="vllm-model", prompt="x [[fake:words=30]] [[fake:cut_after=4]]", stream=True
            )
        )
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert (event["status"], event["usage_source"]) == ("upstream_error", "estimated")
    assert event["output_tokens"] == 4
