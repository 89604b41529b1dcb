"""The shared buckets' store on a real Redis: one script takes all of a request's buckets or
none, and token debits that Redis could not take are sent when it answers again."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from prometheus_client import CollectorRegistry

from metering.metrics import RateLimitMetrics
from proxy.gateway.governance.redis_buckets import RedisBuckets, where
from proxy.gateway.governance.shared_limits import SharedBuckets, StoreUnavailable, Take
from tests.services import redis_server
from tests.support import free_port


@pytest.fixture
def prefix(redis_url: str):
    name = "tm-test-" + uuid.uuid4().hex[:10]
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)
    client.close()


async def test_a_request_takes_every_bucket_or_none(redis_url, prefix):
    store = RedisBuckets(redis_url, timeout_s=1.0)
    key, team = f"{prefix}:key:k:requests", f"{prefix}:team:t:requests"
    try:
        wait, levels = await store.take([Take(key, 5, 1, 1), Take(team, 1, 1, 1)])
        assert (wait, levels) == (0.0, [4.0, 0.0])
        # the team bucket is empty: refused, and the key's bucket keeps its level
        wait, levels = await store.take([Take(key, 5, 1, 1), Take(team, 1, 1, 1)])
        assert 0 < wait <= 60
        assert levels[0] == pytest.approx(4.0, abs=0.01)
        wait, levels = await store.take([Take(key, 5, 1, 1)])
        assert wait == 0 and levels[0] == pytest.approx(3.0, abs=0.01)
    finally:
        await store.close()


async def test_a_debit_is_taken_whatever_the_level(redis_url, prefix):
    store = RedisBuckets(redis_url, timeout_s=1.0)
    try:
        wait, [level] = await store.take([Take(f"{prefix}:key:k:tokens", 100, 0, 250)])
        assert (wait, level) == (0.0, -150.0)
    finally:
        await store.close()


async def test_an_unreachable_store_raises_store_unavailable():
    store = RedisBuckets(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.05)
    try:
        with pytest.raises(StoreUnavailable):
            await store.take([Take("k", 1, 1, 1)])
    finally:
        await store.close()


async def test_debits_held_back_while_redis_is_down_are_sent_when_it_answers():
    port = free_port()
    registry = CollectorRegistry()
    store = RedisBuckets(f"redis://127.0.0.1:{port}/0", timeout_s=0.05)
    buckets = SharedBuckets(store, RateLimitMetrics(registry), retry_interval_s=0.05)
    await buckets.start()
    assert not buckets.up
    buckets.debit("tm:key:k:tokens", capacity=60, tokens=1000)
    with redis_server("127.0.0.1", port) as url:
        client = redis.Redis.from_url(url)
        level = await _poll(lambda: client.hget("tm:key:k:tokens", "l"))
        assert float(level) == 60 - 1000  # the whole held-back debit, on a full bucket
        assert buckets.up
        client.close()
        await buckets.stop()
    debit = {"operation": "debit"}
    assert registry.get_sample_value("tokenmeter_rate_limit_fallbacks_total", debit) == 1
    assert registry.get_sample_value("tokenmeter_rate_limit_dropped_tokens_total") == 0


async def _poll(check):
    for _ in range(200):
        value = check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("not within 4 s")


def test_logs_show_where_without_credentials():
    assert where("redis://user:secret@cache.internal:6380/2") == "redis://cache.internal:6380/2"


async def test_a_debit_goes_along_with_the_check_of_its_own_bucket(redis_url, prefix):
    store = RedisBuckets(redis_url, timeout_s=1.0)
    tokens = f"{prefix}:key:k:tokens"
    try:
        # the debit empties the bucket first, so the same call's check of it refuses
        wait, levels = await store.take([Take(tokens, 100, 1, 0), Take(tokens, 100, 0, 150)])
        assert wait > 0
        assert levels == [-50.0, -50.0]
    finally:
        await store.close()


async def test_the_next_admission_carries_the_pending_debits(redis_url, prefix):
    store = RedisBuckets(redis_url, timeout_s=1.0)
    # a delay no test waits for: only the admission can have sent the debit
    buckets = SharedBuckets(store, RateLimitMetrics(CollectorRegistry()), debit_delay_s=600)
    await buckets.start()
    tokens, requests = f"{prefix}:key:a:tokens", f"{prefix}:key:b:requests"
    try:
        buckets.debit(tokens, capacity=60, tokens=100)
        answer = await buckets.take([Take(requests, 10, 1, 1)])
        assert answer == (0.0, [9.0])  # the admission's own levels only
        client = redis.Redis.from_url(redis_url)
        assert float(client.hget(tokens, "l")) == 60 - 100
        client.close()
    finally:
        await buckets.stop()


async def test_debits_held_back_past_their_minute_are_dropped_and_counted():
    port = free_port()
    registry = CollectorRegistry()
    store = RedisBuckets(f"redis://127.0.0.1:{port}/0", timeout_s=0.05)
    # a "minute" of 50 ms, so that the held-back debit is stale when Redis comes back
    buckets = SharedBuckets(
        store, RateLimitMetrics(registry), retry_interval_s=0.2, debit_max_age_s=0.05
    )
    await buckets.start()
    buckets.debit("tm:key:k:tokens", capacity=60, tokens=1000)
    with redis_server("127.0.0.1", port) as url:
        dropped = "tokenmeter_rate_limit_dropped_tokens_total"
        await _poll(lambda: registry.get_sample_value(dropped) == 1000)
        assert buckets.up
        client = redis.Redis.from_url(url)
        assert not client.exists("tm:key:k:tokens")
        client.close()
        await buckets.stop()
