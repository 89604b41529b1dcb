"""Per-token prices of hosted models, and the rules that find the price of a request.

Prices come from litellm's price map (``model_prices_and_context_window_backup.json``, loaded by
``metering.price_map``) plus the operator's overrides for negotiated or custom prices. All prices
are USD per token, held as exact ``Decimal`` values built from the JSON numbers' shortest repr,
so ``3e-06`` is exactly three micro-dollars and sums never drift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

LONG_CONTEXT_THRESHOLD_TOKENS = 200_000  # litellm's `*_above_200k_tokens` fields; Anthropic docs
PRICED_MODES = frozenset({"chat", "embedding", "completion"})  # modes billed per token
ON_PREM_BACKENDS = frozenset({"vllm", "tgi"})  # costed by the TCO model, not per token
_LOOKUP_CACHE_MAX_ENTRIES = 4096  # model names come from clients: bound the memory they can take


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Prices of one model, in USD per token.

    ``cache_write_5m`` and ``cache_write_1h`` are the prices of prompt-cache writes with a
    five-minute and a one-hour TTL. The ``*_above_200k`` prices are the long-context tier: when
    a request has more than ``LONG_CONTEXT_THRESHOLD_TOKENS`` input tokens (cache included),
    every token of it is billed at the tier price where one is given. ``key`` names the
    price-map entry (or override) the price came from.
    """

    key: str
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    input_above_200k: Decimal | None = None
    output_above_200k: Decimal | None = None
    cache_read_above_200k: Decimal | None = None
    cache_write_5m_above_200k: Decimal | None = None
    cache_write_1h_above_200k: Decimal | None = None
    deprecation_date: str | None = None  # ISO date the price map marks the model deprecated

    @property
    def has_long_context_tier(self) -> bool:
        """Whether any price differs above ``LONG_CONTEXT_THRESHOLD_TOKENS`` input tokens."""
        return any(
            tier is not None
            for tier in (
                self.input_above_200k,
                self.output_above_200k,
                self.cache_read_above_200k,
                self.cache_write_5m_above_200k,
                self.cache_write_1h_above_200k,
            )
        )

    @classmethod
    def from_litellm_entry(cls, key: str, entry: Mapping[str, Any]) -> ModelPrice | None:
        """Read one litellm price-map entry; None when it is not billed per token.

        Entries whose ``mode`` is not chat, embedding or completion (images, audio, rerank,
        ``responses``-only models) and entries without ``input_cost_per_token`` give None.
        Raises ``ValueError`` when a price field is present but not a finite, non-negative number.
        """
        if entry.get("mode", "chat") not in PRICED_MODES:
            return None
        input_price = _price_field(key, entry, "input_cost_per_token")
        if input_price is None:
            return None
        # Missing cache fields mean the provider does not price caching separately (Mistral:
        # "no published cached-input discount", tco.md §6.2), so cached tokens cost plain
        # input; never guess a discount. A missing 1-h write price falls back to the 5-min
        # write price: the file leaves it out for models without a 1-h TTL (Claude Haiku 3,
        # tco.md §6.1 "—"), and Anthropic keys that have one list it explicitly.
        cache_write_5m = _price_field(key, entry, "cache_creation_input_token_cost")
        cache_write_5m = input_price if cache_write_5m is None else cache_write_5m
        cache_write_1h = _price_field(key, entry, "cache_creation_input_token_cost_above_1hr")
        cache_read = _price_field(key, entry, "cache_read_input_token_cost")
        output = _price_field(key, entry, "output_cost_per_token")
        return cls(
            key=key,
            input=input_price,
            output=Decimal(0) if output is None else output,  # embeddings have no output
            cache_read=input_price if cache_read is None else cache_read,
            cache_write_5m=cache_write_5m,
            cache_write_1h=cache_write_5m if cache_write_1h is None else cache_write_1h,
            input_above_200k=_price_field(key, entry, "input_cost_per_token_above_200k_tokens"),
            output_above_200k=_price_field(key, entry, "output_cost_per_token_above_200k_tokens"),
            cache_read_above_200k=_price_field(
                key, entry, "cache_read_input_token_cost_above_200k_tokens"
            ),
            cache_write_5m_above_200k=_price_field(
                key, entry, "cache_creation_input_token_cost_above_200k_tokens"
            ),
            cache_write_1h_above_200k=_price_field(
                key, entry, "cache_creation_input_token_cost_above_1hr_above_200k_tokens"
            ),
            deprecation_date=_date_field(entry.get("deprecation_date")),
        )


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices by price-map key, the operator's overrides by model name, and the lookup rules.

    ``source`` says where the prices came from (e.g. ``litellm 1.106.2``), for display.
    """

    prices: Mapping[str, ModelPrice]
    overrides: Mapping[str, ModelPrice] = field(default_factory=dict)
    source: str = ""
    _cache: dict[tuple[str, str], ModelPrice | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def from_litellm(
        cls,
        raw: Mapping[str, Any],
        source: str = "",
        *,
        overrides: Mapping[str, ModelPrice] | None = None,
    ) -> PriceTable:
        """Build a table from litellm's parsed price map, keeping the per-token entries."""
        prices: dict[str, ModelPrice] = {}
        for key, entry in raw.items():
            if isinstance(entry, Mapping):
                price = ModelPrice.from_litellm_entry(key, entry)
                if price is not None:
                    prices[key] = price
        return cls(
            prices=MappingProxyType(prices),
            overrides=MappingProxyType(dict(overrides or {})),
            source=source,
        )

    def lookup(self, model: str, backend: str) -> ModelPrice | None:
        """The price of ``model`` served by ``backend``, or None when it is not priced per token.

        Overrides match the model name as given or without its provider prefix, whatever the
        backend. Otherwise: ``vllm`` and ``tgi`` give None (on-prem cost is the TCO model's);
        ``anthropic`` looks up the name without provider prefix (Anthropic keys are unprefixed);
        ``azure_mistral`` tries ``azure_ai/<name>``, the model as given, then ``mistral/<name>``;
        any other backend (``openai_compatible``) looks up the model as given, then without an
        ``anthropic/`` prefix. Results are cached per (model, backend).
        """
        cache_key = (model, backend)
        try:
            return self._cache[cache_key]
        except KeyError:
            pass
        price = self._resolve(model, backend)
        if len(self._cache) >= _LOOKUP_CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[cache_key] = price
        return price

    def _resolve(self, model: str, backend: str) -> ModelPrice | None:
        for name in (model, _strip_provider(model)):
            if name in self.overrides:
                return self.overrides[name]
        if backend in ON_PREM_BACKENDS:
            return None
        for key in _candidate_keys(model, backend):
            if key in self.prices:
                return self.prices[key]
        return None


def _candidate_keys(model: str, backend: str) -> tuple[str, ...]:
    name = _strip_provider(model)
    if backend == "anthropic":
        return (name,)
    if backend == "azure_mistral":
        return (f"azure_ai/{name}", model, f"mistral/{name}")
    return (model, model.removeprefix("anthropic/"))


def _strip_provider(model: str) -> str:
    """``anthropic/claude-sonnet-4-5`` → ``claude-sonnet-4-5``; unprefixed names unchanged."""
    return model.split("/", 1)[1] if "/" in model else model


def _date_field(value: Any) -> str | None:
    """An ISO date (YYYY-MM-DD) from the price map, else None: never fail on a note."""
    if isinstance(value, str) and len(value) >= 10 and value[4] == "-" and value[7] == "-":
        return value[:10]
    return None


def _price_field(key: str, entry: Mapping[str, Any], name: str) -> Decimal | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"price map entry {key!r}: {name} is {value!r}, not a price")
    # repr is the shortest string that round-trips the float: 3e-06 becomes exactly 0.000003.
    return Decimal(repr(value))
