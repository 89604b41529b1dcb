from __future__ import annotations

from decimal import Decimal

import pytest

from cost.prices import ModelPrice, PriceTable
from tests.cost.litellm_entries import LITELLM_ENTRIES

TABLE = PriceTable.from_litellm(LITELLM_ENTRIES, "inline test entries")


def per_million(usd: str) -> Decimal:
    return Decimal(usd) / 1_000_000


def flat_price(key: str, usd_per_million: str) -> ModelPrice:
    usd = per_million(usd_per_million)
    return ModelPrice(
        key=key, input=usd, output=usd, cache_read=usd, cache_write_5m=usd, cache_write_1h=usd
    )


def test_json_floats_become_exact_decimals() -> None:
    price = TABLE.prices["claude-sonnet-4-5"]
    assert price.cache_write_5m.as_tuple() == Decimal("0.00000375").as_tuple()


def test_cache_read_defaults_to_input_price() -> None:
    assert TABLE.prices["azure_ai/mistral-large-3"].cache_read == per_million("0.50")


def test_cache_write_5m_defaults_to_input_price() -> None:
    assert TABLE.prices["azure_ai/mistral-large-3"].cache_write_5m == per_million("0.50")


def test_cache_write_1h_defaults_to_cache_write_5m_price() -> None:
    assert TABLE.prices["claude-3-haiku-20240307"].cache_write_1h == per_million("0.30")


def test_embedding_without_output_price_has_zero_output_price() -> None:
    assert TABLE.prices["mistral/mistral-embed"].output == 0


def test_long_context_tier_is_read() -> None:
    price = TABLE.prices["claude-sonnet-4-5"]
    assert (price.input_above_200k, price.output_above_200k) == (
        per_million("6.00"),
        per_million("22.50"),
    )


@pytest.mark.parametrize("key", ["gpt-image-1", "free-tier-model", "sample_spec"])
def test_entries_not_billed_per_token_are_left_out(key: str) -> None:
    assert key not in TABLE.prices


def test_entry_without_mode_is_kept() -> None:
    assert "no-mode-model" in TABLE.prices


@pytest.mark.parametrize("bad", ["3e-06", True, -1e-06, float("inf")])
def test_malformed_price_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="input_cost_per_token"):
        ModelPrice.from_litellm_entry("m", {"mode": "chat", "input_cost_per_token": bad})


def test_source_is_kept() -> None:
    assert TABLE.source == "inline test entries"


@pytest.mark.parametrize(
    ("model", "backend", "key"),
    [
        ("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4-5", "openai_compatible", "claude-sonnet-4-5"),
        ("claude-haiku-4-5", "openai_compatible", "claude-haiku-4-5"),
        ("mistral-large-3", "azure_mistral", "azure_ai/mistral-large-3"),
        ("azure_ai/mistral-large-2407", "azure_mistral", "azure_ai/mistral-large-2407"),
        ("codestral-2508", "azure_mistral", "mistral/codestral-2508"),
        ("mistral/codestral-2508", "openai_compatible", "mistral/codestral-2508"),
    ],
)
def test_lookup_finds_litellm_key(model: str, backend: str, key: str) -> None:
    price = TABLE.lookup(model, backend)
    assert price is not None
    assert price.key == key


@pytest.mark.parametrize(
    ("model", "backend"),
    [
        ("claude-sonnet-4-5", "vllm"),
        ("mistral-large-3", "tgi"),
        ("no-such-model", "openai_compatible"),
        ("codestral-2508", "openai_compatible"),
        ("gpt-image-1", "openai_compatible"),
    ],
)
def test_lookup_gives_none_for_unpriced_model(model: str, backend: str) -> None:
    assert TABLE.lookup(model, backend) is None


def test_override_wins_over_price_map() -> None:
    negotiated = flat_price("negotiated sonnet", "2.00")
    table = PriceTable.from_litellm(LITELLM_ENTRIES, overrides={"claude-sonnet-4-5": negotiated})
    assert table.lookup("anthropic/claude-sonnet-4-5", "anthropic") is negotiated


def test_override_prices_on_prem_backend() -> None:
    chargeback = flat_price("internal llama", "0.10")
    table = PriceTable.from_litellm(LITELLM_ENTRIES, overrides={"llama-3.3-70b": chargeback})
    assert table.lookup("llama-3.3-70b", "vllm") is chargeback


def test_repeated_lookup_gives_same_answer() -> None:
    first = TABLE.lookup("mistral-large-3", "azure_mistral")
    assert TABLE.lookup("mistral-large-3", "azure_mistral") is first
