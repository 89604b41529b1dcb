"""The hosted cost of one request: token counts times per-token prices, in micro-dollars."""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

from cost.prices import LONG_CONTEXT_THRESHOLD_TOKENS, ModelPrice
from cost.usage import TokenUsage

MICRO_USD_PER_USD = 1_000_000
# Wide enough that token counts times prices times a discount are exact: only the final
# conversion to whole micro-dollars rounds, and the caller's decimal context does not matter.
_EXACT = Context(prec=60, rounding=ROUND_HALF_EVEN)


def price_usage(
    usage: TokenUsage, price: ModelPrice | None, *, batch_discount: Decimal = Decimal(0)
) -> int:
    """Cost of ``usage`` at ``price``, in whole micro-dollars (USD x 1e-6); 0 when unpriced.

    Each input token is billed once, in its bucket: uncached input, cache read, five-minute or
    one-hour cache write. Output is billed as a whole; reasoning tokens are part of it, not an
    extra. Above ``LONG_CONTEXT_THRESHOLD_TOKENS`` input tokens the long-context tier prices
    apply where the model has them. ``batch_discount`` is the fraction taken off the whole
    cost (0.5 for Anthropic's and Mistral's batch APIs). The sum is exact and rounded half-even
    once, at the end.
    """
    if price is None:
        return 0
    if not Decimal(0) <= batch_discount <= Decimal(1):
        raise ValueError(f"batch_discount must be between 0 and 1, got {batch_discount}")
    rates = _tier_for(price, usage.input_tokens)
    with localcontext(_EXACT):
        cost_usd = (
            usage.uncached_input_tokens * rates.input
            + usage.cache_read_tokens * rates.cache_read
            + usage.cache_write_5m_tokens * rates.cache_write_5m
            + usage.cache_write_1h_tokens * rates.cache_write_1h
            + usage.output_tokens * rates.output
        )
        cost_micro_usd = cost_usd * (1 - batch_discount) * MICRO_USD_PER_USD
        return int(cost_micro_usd.to_integral_value(rounding=ROUND_HALF_EVEN))


def _tier_for(price: ModelPrice, input_tokens: int) -> ModelPrice:
    """``price`` with its long-context tier applied when ``input_tokens`` crosses it.

    Prices the tier leaves out stay at their base value, as litellm does.
    """
    if input_tokens <= LONG_CONTEXT_THRESHOLD_TOKENS or not price.has_long_context_tier:
        return price
    return replace(
        price,
        input=_tier(price.input_above_200k, price.input),
        output=_tier(price.output_above_200k, price.output),
        cache_read=_tier(price.cache_read_above_200k, price.cache_read),
        cache_write_5m=_tier(price.cache_write_5m_above_200k, price.cache_write_5m),
        cache_write_1h=_tier(price.cache_write_1h_above_200k, price.cache_write_1h),
    )


def _tier(tier_price: Decimal | None, base_price: Decimal) -> Decimal:
    return base_price if tier_price is None else tier_price
