"""Rate limits (docs/governance.md): requests and tokens per minute per key and per team, as
token buckets; a refusal is 429 rate_limited with retry-after and OpenAI's x-ratelimit-* headers;
each replica enforces its share of a limit."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from metering.store import create_db_engine, upgrade_schema
from proxy.gateway.governance.ratelimit import duration
from tests.conftest import backend_models
from tests.support import Gateway

MESSAGES: list[Any] = [{"role": "user", "content": "limit me"}]
# What OpenAI's API sends on every answer (platform.openai.com/docs/guides/rate-limits).
OPENAI_HEADERS = {
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
}
RESET = re.compile(r"^(\d+ms|\d+(\.\d+)?s|\d+m\d+s)$")


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory) -> Iterator[Gateway]:
    gw = Gateway(
        tmp_path_factory.mktemp("ratelimits") / "tm.db",
        {
            "models": backend_models(fakes),
            "rate_limits": {
                "per_key": {"requests_per_minute": 3, "tokens_per_minute": 100_000},
                "teams": {"small-team": {"requests_per_minute": 2}},
                "keys": {},
            },
        },
    ).start()
    yield gw
    gw.stop()


def new_key(gateway: Gateway, **fields: Any) -> tuple[str, str]:
    r = httpx.post(
        f"{gateway.url}/admin/keys",
        json={"user": "u", "team": "t-" + uuid.uuid4().hex[:6], **fields},
        headers=gateway.admin_headers,
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def post(gateway: Gateway, key: str, model: str = "vllm-model") -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": MESSAGES, "max_tokens": 5},
    )


def test_requests_per_minute_refuse_the_next_request_with_openai_headers(gateway, fakes):
    key_id, key = new_key(gateway)
    answers = [post(gateway, key) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert set(answers[0].headers) >= OPENAI_HEADERS
    assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["2", "1", "0"]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[0].headers["x-ratelimit-limit-tokens"] == "100000"
    assert all(RESET.match(r.headers["x-ratelimit-reset-requests"]) for r in answers)
    before = fakes["vllm"].stats.requests
    refused = post(gateway, key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert set(refused.headers) >= OPENAI_HEADERS
    assert fakes["vllm"].stats.requests == before
    [event] = gateway.wait_events(1, "key_id = :k AND http_status = 429", k=key_id)
    assert event["error_code"] == "rate_limited"


def test_the_openai_sdk_sees_a_rate_limit_error(gateway):
    _, key = new_key(gateway)
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    for _ in range(3):
        c.chat.completions.create(model="vllm-model", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as exc:
        c.chat.completions.create(model="vllm-model", messages=MESSAGES)
    assert exc.value.code == "rate_limited"
    assert exc.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_anthropic_clients_get_their_error_shape(gateway):
    _, key = new_key(gateway)
    c = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    for _ in range(3):
        c.messages.create(model="claude", max_tokens=5, messages=MESSAGES)
    with pytest.raises(anthropic.RateLimitError) as exc:
        c.messages.create(model="claude", max_tokens=5, messages=MESSAGES)
    assert exc.value.response.json()["error"]["type"] == "rate_limit_error"
    assert "retry-after" in exc.value.response.headers


def test_a_team_limit_is_shared_by_the_team_keys(gateway):
    keys = [new_key(gateway, team="small-team")[1] for _ in range(2)]
    assert [post(gateway, k).status_code for k in keys] == [200, 200]
    refused = post(gateway, keys[0])
    assert refused.status_code == 429
    assert "team 'small-team'" in refused.json()["error"]["message"]


def test_keys_are_limited_apart(gateway):
    _, first = new_key(gateway)
    _, second = new_key(gateway)
    assert [post(gateway, first).status_code for _ in range(4)][-1] == 429
    assert post(gateway, second).status_code == 200


@pytest.fixture(scope="module")
def token_gateway(fakes, tmp_path_factory) -> Iterator[Gateway]:
    """Tokens per minute so small that one answer uses them up; two replicas share the limit."""
    gw = Gateway(
        tmp_path_factory.mktemp("tpm") / "tm.db",
        {
            "models": backend_models(fakes),
            "rate_limits": {
                "per_key": {"tokens_per_minute": 10, "requests_per_minute": 100},
                "replicas": 2,
            },
        },
    ).start()
    yield gw
    gw.stop()


def test_tokens_are_taken_when_the_request_ends_and_the_next_one_waits(token_gateway):
    key_id, key = new_key(token_gateway)
    first = post(token_gateway, key)
    assert first.status_code == 200
    # each replica enforces its share: 10 / 2 replicas
    assert first.headers["x-ratelimit-limit-tokens"] == "5"
    assert first.headers["x-ratelimit-limit-requests"] == "50"
    [event] = token_gateway.wait_events(1, "key_id = :k", k=key_id)
    assert event["input_tokens"] + event["output_tokens"] > 5
    refused = post(token_gateway, key)
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    # the bucket refills 5 tokens a minute: waiting for the deficit takes seconds, not zero
    assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.02, "20ms"), (0.0001, "1ms"), (1.0, "1s"), (1.5, "1.5s"), (59.25, "59.25s"),
     (360.0, "6m0s"), (61.0, "1m1s")],
)  # fmt: skip
def test_reset_durations_are_written_as_openai_writes_them(seconds, text):
    assert duration(seconds) == text


@pytest.fixture
def two_replicas(fakes, tmp_path, pg_url) -> Iterator[list[Gateway]]:
    """Two replicas on one PostgreSQL (one key table), each told there are two."""
    engine = create_db_engine(pg_url)
    upgrade_schema(engine)
    engine.dispose()
    gws = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        config = {
            "models": backend_models(fakes),
            "rate_limits": {"per_key": {"requests_per_minute": 4}, "replicas": 2},
        }
        gws.append(Gateway(tmp_path / name / "tm.db", config, db_url=pg_url).start())
    yield gws
    for gw in gws:
        gw.stop()


def test_replicas_each_enforce_their_share_so_round_robin_sees_the_whole_limit(two_replicas):
    a, b = two_replicas
    _, key = new_key(a)
    statuses = [post(gw, key).status_code for gw in (a, b) * 3]  # round robin, as a balancer
    assert statuses == [200, 200, 200, 200, 429, 429]
