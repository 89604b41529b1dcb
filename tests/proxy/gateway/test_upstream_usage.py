"""Reading usage out of each provider's shape (reference/protocols.md §1, §3.3)."""

from __future__ import annotations

from cost.usage import TokenUsage
from proxy.gateway.relays.upstream_usage import AnthropicUsageTracker, anthropic_usage, openai_usage


def test_openai_usage_keeps_cached_and_reasoning_as_subsets():
    usage = openai_usage(
        {
            "prompt_tokens": 100,
            "completion_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 60},
            "completion_tokens_details": {"reasoning_tokens": 25},
        }
    )
    assert usage == TokenUsage(
        input_tokens=100, cache_read_tokens=60, output_tokens=40, reasoning_tokens=25
    )
    assert usage.uncached_input_tokens == 40


def test_openai_usage_tolerates_null_details():
    assert openai_usage(
        {"prompt_tokens": 3, "completion_tokens": 2, "prompt_tokens_details": None}
    ) == TokenUsage(3, 0, 0, 0, 2, 0)


def test_anthropic_input_includes_cache_reads_and_writes():
    usage = anthropic_usage(
        {
            "input_tokens": 25,
            "cache_read_input_tokens": 1800,
            "cache_creation_input_tokens": 300,
            "output_tokens": 15,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
        }
    )
    assert usage == TokenUsage(
        input_tokens=2125,
        cache_read_tokens=1800,
        cache_write_tokens=300,
        cache_write_1h_tokens=200,
        output_tokens=15,
    )
    assert usage.cache_write_5m_tokens == 100


def test_message_deltas_overwrite_never_add():
    tracker = AnthropicUsageTracker()
    tracker.on_event(
        {
            "type": "message_start",
            "message": {
                "usage": {"input_tokens": 25, "cache_read_input_tokens": 1800, "output_tokens": 1}
            },
        }
    )
    tracker.on_event({"type": "message_delta", "usage": {"output_tokens": 10}})
    tracker.on_event({"type": "message_delta", "usage": {"output_tokens": 15}})
    assert tracker.usage() == TokenUsage(
        input_tokens=1825, cache_read_tokens=1800, output_tokens=15
    )


def test_input_reported_only_in_delta_is_taken():
    tracker = AnthropicUsageTracker()
    tracker.on_event({"type": "message_start", "message": {"usage": {"input_tokens": 0}}})
    tracker.on_event(
        {
            "type": "message_delta",
            "usage": {"input_tokens": 30, "output_tokens": 4, "cache_read_input_tokens": None},
        }
    )
    assert tracker.usage().input_tokens == 30
