from __future__ import annotations

from decimal import Decimal

import pytest

from cost.prices import ModelPrice, PriceTable
from cost.pricing import price_usage
from cost.usage import TokenUsage
from tests.cost.litellm_entries import LITELLM_ENTRIES

TABLE = PriceTable.from_litellm(LITELLM_ENTRIES)
MILLION = 1_000_000

# 100,000 tokens of each class: one request, below the long-context tier, costing
# the $/M price times 1e5 micro-USD.
TOKENS = 100_000
ONE_REQUEST_OF = {
    "input": TokenUsage(input_tokens=TOKENS),
    "output": TokenUsage(output_tokens=TOKENS),
    "cache_write_5m": TokenUsage(input_tokens=TOKENS, cache_write_tokens=TOKENS),
    "cache_write_1h": TokenUsage(
        input_tokens=TOKENS, cache_write_tokens=TOKENS, cache_write_1h_tokens=TOKENS
    ),
    "cache_read": TokenUsage(input_tokens=TOKENS, cache_read_tokens=TOKENS),
}

# tco.md §6.1 / §6.2, $/M: in, out, cache write 5 m, cache write 1 h, cache read. Mistral has
# no cache prices, so cached tokens cost plain input.
TCO_PRICES = [
    ("claude-haiku-4-5", "anthropic", ("1.00", "5.00", "1.25", "2.00", "0.10")),
    ("claude-sonnet-4-5", "anthropic", ("3.00", "15.00", "3.75", "6.00", "0.30")),
    ("claude-opus-4-5", "anthropic", ("5.00", "25.00", "6.25", "10.00", "0.50")),
    ("mistral-large-3", "azure_mistral", ("0.50", "1.50", "0.50", "0.50", "0.50")),
    ("mistral-large-2407", "azure_mistral", ("2.00", "6.00", "2.00", "2.00", "2.00")),
]
CASES = [
    pytest.param(
        model, backend, token_class, int(Decimal(usd) * TOKENS), id=f"{model}-{token_class}"
    )
    for model, backend, prices in TCO_PRICES
    for token_class, usd in zip(ONE_REQUEST_OF, prices, strict=True)
]


def price_of(model: str, backend: str) -> ModelPrice:
    price = TABLE.lookup(model, backend)
    assert price is not None
    return price


@pytest.mark.parametrize(("model", "backend", "token_class", "micro_usd"), CASES)
def test_tokens_of_each_class_at_tco_prices(
    model: str, backend: str, token_class: str, micro_usd: int
) -> None:
    assert price_usage(ONE_REQUEST_OF[token_class], price_of(model, backend)) == micro_usd


def test_mixed_usage_is_priced_exactly() -> None:
    usage = TokenUsage(input_tokens=1_825, cache_read_tokens=1_800, output_tokens=15)
    # 1,800 x 0.30 + 25 x 3 + 15 x 15 micro-USD
    assert price_usage(usage, price_of("claude-sonnet-4-5", "anthropic")) == 840


@pytest.mark.parametrize(
    ("cache_read_tokens", "micro_usd"),
    [(5, 2), (15, 4), (25, 8)],  # 1.5 -> 2, 4.5 -> 4, 7.5 -> 8
)
def test_rounds_half_to_even(cache_read_tokens: int, micro_usd: int) -> None:
    usage = TokenUsage(input_tokens=cache_read_tokens, cache_read_tokens=cache_read_tokens)
    assert price_usage(usage, price_of("claude-sonnet-4-5", "anthropic")) == micro_usd


def test_rounds_once_at_the_end() -> None:
    # 20 cache reads at $0.03/M: 0.03 micro-USD each, 0.6 in all.
    usage = TokenUsage(input_tokens=20, cache_read_tokens=20)
    assert price_usage(usage, price_of("claude-3-haiku-20240307", "anthropic")) == 1


def test_reasoning_tokens_are_not_counted_twice() -> None:
    usage = TokenUsage(output_tokens=100, reasoning_tokens=80)
    assert price_usage(usage, price_of("claude-sonnet-4-5", "anthropic")) == 1_500


def test_unpriced_usage_costs_nothing() -> None:
    assert price_usage(TokenUsage(input_tokens=MILLION), None) == 0


def test_on_prem_backend_costs_nothing() -> None:
    price = TABLE.lookup("claude-sonnet-4-5", "vllm")
    assert price_usage(TokenUsage(input_tokens=MILLION, output_tokens=MILLION), price) == 0


def test_prefixed_model_is_priced_as_unprefixed() -> None:
    price = TABLE.lookup("anthropic/claude-sonnet-4-5", "anthropic")
    assert price_usage(TokenUsage(input_tokens=TOKENS), price) == 300_000


def test_override_price_is_used() -> None:
    usd = Decimal("2") / MILLION
    negotiated = ModelPrice(
        key="negotiated",
        input=usd,
        output=usd,
        cache_read=usd,
        cache_write_5m=usd,
        cache_write_1h=usd,
    )
    table = PriceTable.from_litellm(LITELLM_ENTRIES, overrides={"claude-sonnet-4-5": negotiated})
    price = table.lookup("claude-sonnet-4-5", "anthropic")
    assert price_usage(TokenUsage(input_tokens=TOKENS), price) == 200_000


def test_long_context_tier_above_200k_input_tokens() -> None:
    usage = TokenUsage(input_tokens=250_000, output_tokens=1_000)
    # 250,000 x 6 + 1,000 x 22.5 micro-USD
    assert price_usage(usage, price_of("claude-sonnet-4-5", "anthropic")) == 1_522_500


def test_long_context_tier_not_at_exactly_200k_input_tokens() -> None:
    usage = TokenUsage(input_tokens=200_000, output_tokens=1_000)
    assert price_usage(usage, price_of("claude-sonnet-4-5", "anthropic")) == 615_000


def test_long_context_threshold_counts_cached_input() -> None:
    usage = TokenUsage(input_tokens=200_001, cache_read_tokens=200_000)
    # the tier has no cache-read price, so cache reads stay at 0.30; 1 uncached token at 6
    assert price_usage(usage, price_of("claude-sonnet-4-5", "anthropic")) == 60_006


def test_long_context_tier_uses_tier_cache_price() -> None:
    entry = {**LITELLM_ENTRIES["claude-sonnet-4-5"]}
    entry["cache_read_input_token_cost_above_200k_tokens"] = 6e-07
    price = ModelPrice.from_litellm_entry("claude-sonnet-4-5", entry)
    usage = TokenUsage(input_tokens=300_000, cache_read_tokens=300_000)
    assert price_usage(usage, price) == 180_000


def test_long_context_without_tier_uses_base_prices() -> None:
    usage = TokenUsage(input_tokens=300_000)
    assert price_usage(usage, price_of("claude-haiku-4-5", "anthropic")) == 300_000


def test_batch_discount_halves_the_cost() -> None:
    usage = TokenUsage(input_tokens=TOKENS, output_tokens=TOKENS)
    price = price_of("claude-sonnet-4-5", "anthropic")
    # (100,000 x 3 + 100,000 x 15) / 2 micro-USD
    assert price_usage(usage, price, batch_discount=Decimal("0.5")) == 900_000


@pytest.mark.parametrize("discount", ["-0.1", "1.5"])
def test_batch_discount_outside_zero_to_one_is_rejected(discount: str) -> None:
    price = price_of("claude-sonnet-4-5", "anthropic")
    with pytest.raises(ValueError, match="batch_discount"):
        price_usage(TokenUsage(input_tokens=1), price, batch_discount=Decimal(discount))
