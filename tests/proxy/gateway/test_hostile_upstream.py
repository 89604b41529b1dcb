"""Upstream garbage is named, not passed on; hostile values never reach the ledger unchecked.

Against a real upstream on a loopback socket that misbehaves on request (tests/proxy/gateway/
hostile.py), through the official SDKs, with the ledger on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from proxy.simulated import FakeServer
from tests.proxy.gateway.hostile import SECRET_KEY, Notes, create_hostile_app
from tests.support import Gateway, free_port, pg_database, wait_for

PROVIDER_KEY = "hostile-provider-key-42"


@pytest.fixture(scope="module")
def notes() -> Notes:
    return Notes()


@pytest.fixture(scope="module")
def hostile(notes: Notes) -> Iterator[FakeServer]:
    server = FakeServer(create_hostile_app(notes)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'tm.db'}"
        return
    with pg_database(request.getfixturevalue("pg_admin_url")) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(hostile: FakeServer, ledger_url: str, tmp_path_factory) -> Iterator[Gateway]:
    os.environ["TM_TEST_HOSTILE_KEY"] = PROVIDER_KEY
    dead = f"http://127.0.0.1:{free_port()}/v1"

    def dep(backend: str, base: str, **extra: Any) -> dict[str, Any]:
        return {
            "backend": backend,
            "model": "m",
            "api_base": base,
            "api_key_env": "TM_TEST_HOSTILE_KEY",
            **extra,
        }

    models = [
        {"name": "hostile", "deployments": [dep("vllm", hostile.url + "/v1")]},
        {"name": "hostile-claude", "deployments": [dep("anthropic", hostile.url)]},
        {
            "name": "hostile-drip",
            "deployments": [dep("vllm", hostile.url + "/v1", stream_idle_timeout_s=1.0)],
        },
        {"name": "dead", "deployments": [dep("vllm", dead, name="gpu-pool-a")]},
    ]
    db = tmp_path_factory.mktemp("gw") / "tm.db"
    gw = Gateway(db, {"models": models, "storage": {"url": ledger_url}}).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.create_key(user="mallory")


@pytest.fixture
def session() -> str:
    return "s-" + uuid.uuid4().hex[:12]


def oai(gateway: Gateway, key: str, session: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=key,
        max_retries=0,
        default_headers={"X-Meter-Session": session},
    )


def ant(gateway: Gateway, key: str, session: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gateway.url,
        api_key=key,
        max_retries=0,
        default_headers={"X-Meter-Session": session},
    )


def say(mode: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": mode}]


@pytest.mark.parametrize("mode", ["invalid-json", "empty", "error-body"])
@pytest.mark.parametrize("model", ["hostile", "hostile-claude"])
def test_a_200_that_is_not_the_answer_is_a_502(gateway, key, session, mode, model):
    with pytest.raises(openai.APIStatusError) as info:
        oai(gateway, key, session).chat.completions.create(model=model, messages=say(mode))
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_invalid_response"
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert (event["status"], event["http_status"]) == ("upstream_error", 502)


@pytest.mark.parametrize("mode", ["invalid-json", "empty", "error-body"])
def test_a_native_200_that_is_not_a_message_is_a_502(gateway, key, session, mode):
    with pytest.raises(anthropic.APIStatusError) as info:
        ant(gateway, key, session).messages.create(
            model="hostile-claude", max_tokens=10, messages=say(mode)
        )
    assert info.value.status_code == 502
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert event["status"] == "upstream_error"


# (usage the upstream reports, input and output tokens recorded): number-like values count
@pytest.mark.parametrize(
    ("usage", "counted"),
    [
        ({"prompt_tokens": True, "completion_tokens": 2}, (0, 2)),
        ({"prompt_tokens": 2**63, "completion_tokens": 2}, (0, 2)),
        ({"prompt_tokens": "12", "completion_tokens": 12.5}, (12, 12)),
        ({"prompt_tokens": -50, "completion_tokens": 3}, (0, 3)),
        ({"prompt_tokens": 1e20, "completion_tokens": 3}, (0, 3)),
        ({"prompt_tokens": [1], "completion_tokens": {"n": 1}}, (0, 0)),
    ],
    ids=["true", "2**63", "string-and-float", "negative", "1e20", "list-and-object"],
)
def test_invalid_usage_is_recorded_invalid_never_exact(gateway, key, session, usage, counted):
    oai(gateway, key, session).chat.completions.create(
        model="hostile", messages=say("usage:" + json.dumps(usage))
    )
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert event["usage_source"] == "invalid"
    assert (event["input_tokens"], event["output_tokens"]) == counted


def test_invalid_anthropic_usage_is_recorded_invalid(gateway, key, session):
    usage = {"input_tokens": True, "output_tokens": "7", "cache_read_input_tokens": 2**64 - 1}
    ant(gateway, key, session).messages.create(
        model="hostile-claude", max_tokens=10, messages=say("usage:" + json.dumps(usage))
    )
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert event["usage_source"] == "invalid"
    assert (event["input_tokens"], event["output_tokens"]) == (0, 7)


def test_valid_usage_stays_exact(gateway, key, session):
    usage = {"prompt_tokens": 9, "completion_tokens": 4}
    oai(gateway, key, session).chat.completions.create(
        model="hostile", messages=say("usage:" + json.dumps(usage))
    )
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert (event["usage_source"], event["input_tokens"], event["output_tokens"]) == (
        "upstream",
        9,
        4,
    )


def test_a_broken_usage_line_is_skipped_and_the_event_estimated(gateway, key, session):
    stream = oai(gateway, key, session).chat.completions.create(
        model="hostile", messages=say("stream-broken-usage"), stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "one two three"
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert (event["status"], event["usage_source"]) == ("ok", "estimated")
    assert event["output_tokens"] == 3  # one per content chunk


@pytest.mark.parametrize("model", ["hostile", "hostile-claude"])
def test_429_keeps_retry_after_and_rate_limit_headers(gateway, key, session, model):
    with pytest.raises(openai.RateLimitError) as info:
        oai(gateway, key, session).chat.completions.create(model=model, messages=say("429"))
    headers = info.value.response.headers
    assert headers["retry-after"] == "7"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_native_429_keeps_retry_after(gateway, key, session):
    with pytest.raises(anthropic.RateLimitError) as info:
        ant(gateway, key, session).messages.create(
            model="hostile-claude", max_tokens=10, messages=say("429")
        )
    assert info.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("status", [401, 403, 500])
@pytest.mark.parametrize("model", ["hostile", "hostile-claude"])
def test_provider_keys_never_reach_the_client(gateway, key, session, status, model):
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": say(f"echo-key:{status}")},
    )
    assert r.status_code in (status, 502)
    assert "Incorrect API key" in r.text  # the message itself still gets through
    assert PROVIDER_KEY not in r.text and SECRET_KEY not in r.text
    assert "[redacted]" in r.text


def test_native_errors_are_redacted_too(gateway, key, session):
    with pytest.raises(anthropic.AuthenticationError) as info:
        ant(gateway, key, session).messages.create(
            model="hostile-claude", max_tokens=10, messages=say("echo-key:401")
        )
    text = info.value.response.text
    assert PROVIDER_KEY not in text and SECRET_KEY not in text


def test_an_unreachable_upstream_is_named_by_its_deployment(gateway, key, session):
    with pytest.raises(openai.APIStatusError) as info:
        oai(gateway, key, session).chat.completions.create(model="dead", messages=say("hi"))
    message = info.value.body["message"]
    assert info.value.status_code == 502 and "gpu-pool-a" in message
    assert "127.0.0.1" not in message and "http" not in message


def test_a_dripping_stream_is_ended_and_metered(gateway, key, session):
    stream = oai(gateway, key, session).chat.completions.create(
        model="hostile-drip", messages=say("drip"), stream=True
    )
    with pytest.raises(openai.APIError, match="timed out"):
        for _ in stream:
            pass
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert event["status"] == "timeout" and event["usage_source"] == "estimated"


def test_a_client_that_leaves_cancels_the_upstream_and_is_recorded_cancelled(
    gateway, key, session, notes
):
    before = len(notes.hung_up)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            gateway.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}", "X-Meter-Session": session},
            json={"model": "hostile", "messages": say("slow")},
            timeout=httpx.Timeout(5, read=0.5),
        )
    wait_for(lambda: len(notes.hung_up) > before)  # the upstream saw the gateway hang up
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert (event["status"], event["http_status"]) == ("cancelled", 499)


@pytest.mark.parametrize(
    "model",
    ["a\u0000b", "x" * 257, "tab\there", "bell\x07", "", 5, ["hostile"]],
    ids=["nul", "257-chars", "tab", "control", "empty", "number", "list"],
)
def test_an_unprintable_or_overlong_model_is_a_400_and_still_one_event(
    gateway, key, session, model
):
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "X-Meter-Session": session},
        json={"model": model, "messages": say("hi")},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_model"
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert (event["status"], event["model"]) == ("client_error", "unknown")


def test_a_256_character_model_is_accepted_and_recorded(gateway, key, session):
    name = "m" * 256
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "X-Meter-Session": session},
        json={"model": name, "messages": say("hi")},
    )
    assert r.status_code == 404  # a valid name, of no configured model
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert event["model"] == name


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v1/chat/completions", "hostile"),
        ("/v1/chat/completions", "hostile-claude"),
        ("/v1/messages", "hostile-claude"),
    ],
)
def test_in_stream_errors_are_redacted(gateway, key, session, path, model):
    r = httpx.post(
        gateway.url + path,
        headers={"Authorization": f"Bearer {key}", "X-Meter-Session": session},
        json={
            "model": model,
            "max_tokens": 5,
            "stream": True,
            "messages": say("stream-echo-key"),
        },
    )
    assert "refused" in r.text  # the upstream's error event reached the client
    assert PROVIDER_KEY not in r.text and SECRET_KEY not in r.text
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert event["status"] == "upstream_error"
