"""Pricing rules: discounts, batch share, explicit prices, effective dates, unknown models."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cost.pricebook import Pricebook, PriceRule
from cost.prices import ModelPrice, PriceTable
from cost.usage import TokenUsage

SONNET = {
    "input_cost_per_token": 3e-06,
    "output_cost_per_token": 1.5e-05,
    "litellm_provider": "anthropic",
    "mode": "chat",
}
TABLE = PriceTable.from_litellm({"claude-sonnet-4-5": SONNET})
USAGE = TokenUsage(input_tokens=1_000_000, output_tokens=100_000)  # $3 + $1.5 at list price
LIST_COST = 4_500_000
JAN, JUN = 1_767_225_600.0, 1_780_272_000.0  # 2026-01-01, 2026-06-01 UTC


def price(
    book: Pricebook, *, model="claude-sonnet-4-5", backend="anthropic", at=JUN + 1, on_prem=False
):
    return book.price(USAGE, model=model, backend=backend, on_prem=on_prem, at=at)


def test_list_price_without_rules():
    assert price(Pricebook(TABLE)) == LIST_COST


def test_discount_applies_from_its_effective_date_only():
    book = Pricebook(
        TABLE,
        rules=(PriceRule(model="claude-sonnet-4-5", effective_from=JUN, discount=Decimal("0.2")),),
    )
    assert price(book, at=JUN - 1) == LIST_COST
    assert price(book, at=JUN) == 3_600_000


def test_later_rule_replaces_earlier_one():
    book = Pricebook(
        TABLE,
        rules=(
            PriceRule(backend="anthropic", effective_from=JAN, discount=Decimal("0.1")),
            PriceRule(backend="anthropic", effective_from=JUN, discount=Decimal("0.3")),
        ),
    )
    assert (price(book, at=JAN + 1), price(book, at=JUN + 1)) == (4_050_000, 3_150_000)


def test_model_rule_beats_backend_rule():
    book = Pricebook(
        TABLE,
        rules=(
            PriceRule(model="claude-sonnet-4-5", discount=Decimal("0.5")),
            PriceRule(backend="anthropic", effective_from=JUN, discount=Decimal("0.1")),
        ),
    )
    assert price(book) == 2_250_000


def test_batch_share_bills_that_share_at_half_price():
    book = Pricebook(TABLE, rules=(PriceRule(batch_share=Decimal("0.4")),))
    assert price(book) == LIST_COST * 8 // 10  # 40 % at 50 % off = 20 % off


def test_discount_and_batch_share_compound():
    rule = PriceRule(discount=Decimal("0.1"), batch_share=Decimal("1"))
    assert price(Pricebook(TABLE, rules=(rule,))) == 2_025_000


def test_explicit_price_for_a_model_the_map_lacks():
    own = ModelPrice(
        key="config:my-model",
        input=Decimal("1e-6"),
        output=Decimal("2e-6"),
        cache_read=Decimal("1e-7"),
        cache_write_5m=Decimal("1e-6"),
        cache_write_1h=Decimal("1e-6"),
    )
    book = Pricebook(TABLE, rules=(PriceRule(model="my-model", price=own),))
    assert price(book, model="my-model", backend="openai_compatible") == 1_200_000


def test_unknown_model_costs_none_never_zero():
    assert price(Pricebook(TABLE), model="mystery", backend="openai_compatible") is None


def test_on_prem_is_zero_unless_given_an_explicit_price():
    own = ModelPrice(
        key="k",
        input=Decimal("1e-6"),
        output=Decimal("1e-6"),
        cache_read=Decimal(0),
        cache_write_5m=Decimal(0),
        cache_write_1h=Decimal(0),
    )
    assert price(Pricebook(TABLE), model="m", backend="vllm", on_prem=True) == 0
    book = Pricebook(TABLE, rules=(PriceRule(backend="vllm", price=own),))
    assert price(book, model="m", backend="vllm", on_prem=True) == 1_100_000


def test_explicit_price_key_wins_over_derived_lookup():
    book = Pricebook(TABLE, price_keys={("sonnet-eu", "openai_compatible"): "claude-sonnet-4-5"})
    assert price(book, model="sonnet-eu", backend="openai_compatible") == LIST_COST


@pytest.mark.parametrize("field", ["discount", "batch_share"])
def test_out_of_range_fractions_are_rejected(field):
    with pytest.raises(ValueError, match=field):
        PriceRule(**{field: Decimal("1.5")})
