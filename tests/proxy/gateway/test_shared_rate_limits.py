"""Rate limits shared through Redis (docs/governance.md): replicas with one rate_limits.redis_url
enforce one limit together; without an answer from Redis each falls back to its share of the
limit, never refusing a request for that, and comes back to Redis when it answers again."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import backend_models
from tests.proxy.gateway.test_rate_limits import OPENAI_HEADERS, new_key, post
from tests.services import redis_server
from tests.support import Gateway, free_port, wait_for


@pytest.fixture
def prefix() -> str:
    """Each test's buckets under a prefix of their own, in the Redis the session shares."""
    return "tm-test-" + uuid.uuid4().hex[:10]


@pytest.fixture
def redis_client(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


def start_replicas(fakes: Any, tmp_path: Path, limits: dict[str, Any], n: int = 1) -> list[Gateway]:
    """``n`` gateways on one SQLite ledger file (one key table) with ``limits``."""
    gws: list[Gateway] = []
    for i in range(n):
        (tmp_path / str(i)).mkdir()
        config = {"models": backend_models(fakes), "rate_limits": dict(limits)}
        gws.append(
            Gateway(tmp_path / str(i) / "tm.db", config, db_url=f"sqlite:///{tmp_path}/tm.db")
        )
    return [gw.start() for gw in gws]


def shared(redis_url: str, prefix: str, **limits: Any) -> dict[str, Any]:
    return {"redis_url": redis_url, "redis_key_prefix": prefix, "replicas": 2, **limits}


def test_two_replicas_sharing_redis_enforce_one_limit(fakes, tmp_path, redis_url, prefix):
    gws = start_replicas(
        fakes, tmp_path, shared(redis_url, prefix, per_key={"requests_per_minute": 10}), 2
    )
    try:
        a, b = gws
        _, key = new_key(a)
        answers = [post(gw, key) for gw in (a, b, b, a, a, a, b, a, b, b)]
        assert [r.status_code for r in answers] == [200] * 10
        # one bucket of the whole limit, not 10 / 2 replicas
        assert {r.headers["x-ratelimit-limit-requests"] for r in answers} == {"10"}
        assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == [
            str(n) for n in range(9, -1, -1)
        ]
        for gw in (a, b):
            refused = post(gw, key)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "rate_limited"
            assert int(refused.headers["retry-after"]) >= 1
            assert set(refused.headers) >= OPENAI_HEADERS - {
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            }
            assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    finally:
        for gw in gws:
            gw.stop()


def test_tokens_debited_on_one_replica_are_seen_by_the_other(
    fakes, tmp_path, redis_url, prefix, redis_client
):
    limits = shared(redis_url, prefix, per_key={"tokens_per_minute": 5})
    gws = start_replicas(fakes, tmp_path, limits, 2)
    try:
        a, b = gws
        key_id, key = new_key(a)
        assert post(a, key).status_code == 200
        [event] = a.wait_events(1, "key_id = :k", k=key_id)
        spent = event["input_tokens"] + event["output_tokens"]
        assert spent > 5
        bucket = f"{prefix}:key:{key_id}:tokens"
        level = wait_for(lambda: redis_client.hget(bucket, "l"))
        assert float(level) == 5 - spent  # a fresh bucket is full: the whole answer, once
        refused = post(b, key)
        assert refused.status_code == 429
        assert refused.headers["x-ratelimit-limit-tokens"] == "5"
        assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    finally:
        for gw in gws:
            gw.stop()


def test_a_team_limit_is_one_bucket_across_replicas(fakes, tmp_path, redis_url, prefix):
    limits = shared(redis_url, prefix, teams={"blue": {"requests_per_minute": 3}})
    gws = start_replicas(fakes, tmp_path, limits, 2)
    try:
        a, b = gws
        keys = [new_key(a, team="blue")[1] for _ in range(3)]
        assert [post(gw, k).status_code for gw, k in zip((a, b, a), keys, strict=True)] == [200] * 3
        refused = post(b, keys[0])
        assert refused.status_code == 429
        assert "team 'blue'" in refused.json()["error"]["message"]
    finally:
        for gw in gws:
            gw.stop()


def test_bucket_keys_expire_when_they_would_be_full_again(
    fakes, tmp_path, redis_url, prefix, redis_client
):
    # 60 a minute: one request is refilled after one second, and its bucket key goes
    [gw] = start_replicas(
        fakes, tmp_path, shared(redis_url, prefix, per_key={"requests_per_minute": 60})
    )
    try:
        key_id, key = new_key(gw)
        assert post(gw, key).status_code == 200
        bucket = f"{prefix}:key:{key_id}:requests"
        assert 0 < redis_client.pttl(bucket) <= 1000
        wait_for(lambda: not redis_client.exists(bucket), timeout_s=5)
    finally:
        gw.stop()


def test_redis_unreachable_falls_back_to_the_split_without_failing_requests(
    fakes, tmp_path, prefix, caplog
):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    limits = shared(closed, prefix, per_key={"requests_per_minute": 4})
    caplog.set_level(logging.WARNING, logger="proxy.gateway.governance.shared_limits")
    [gw] = start_replicas(fakes, tmp_path, limits)
    try:
        _, key = new_key(gw)
        answers = [post(gw, key) for _ in range(3)]
        # this replica's share: 4 / 2 replicas
        assert [r.status_code for r in answers] == [200, 200, 429]
        assert answers[0].headers["x-ratelimit-limit-requests"] == "2"
        lost = [r for r in caplog.records if "does not answer" in r.getMessage()]
        assert len(lost) == 1  # once, not per request
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'tokenmeter_rate_limit_fallbacks_total{operation="admit"} 3.0' in metrics
        assert "tokenmeter_rate_limit_store_up 0.0" in metrics
    finally:
        gw.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a Redis too slow to wait for."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def test_a_redis_that_does_not_answer_in_time_is_not_waited_for(
    fakes, tmp_path, prefix, silent_port
):
    limits = shared(
        f"redis://127.0.0.1:{silent_port}/0", prefix, per_key={"requests_per_minute": 100}
    )
    [gw] = start_replicas(fakes, tmp_path, limits)
    try:
        _, key = new_key(gw)
        c = httpx.Client(timeout=3)  # an unbounded wait on Redis would time this out
        answer = c.post(
            f"{gw.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "vllm-model", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert answer.status_code == 200
        assert answer.headers["x-ratelimit-limit-requests"] == "50"
    finally:
        gw.stop()


def test_a_replica_returns_to_redis_when_it_answers_again(fakes, tmp_path, prefix):
    port = free_port()
    limits = {
        **shared(f"redis://127.0.0.1:{port}/0", prefix),
        "per_key": {"requests_per_minute": 1000},
        "replicas": 4,
    }
    [gw] = start_replicas(fakes, tmp_path, limits)
    try:
        key_id, key = new_key(gw)
        assert post(gw, key).headers["x-ratelimit-limit-requests"] == "250"
        with redis_server("127.0.0.1", port) as url:
            wait_for(lambda: post(gw, key).headers["x-ratelimit-limit-requests"] == "1000")
            client = redis.Redis.from_url(url)
            assert client.exists(f"{prefix}:key:{key_id}:requests")
            client.close()
    finally:
        gw.stop()
