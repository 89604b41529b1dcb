"""What a request cost: list prices, the operator's rules, and the date each took effect.

A rule adjusts list prices for a model, a backend or everything: a negotiated discount, an
explicit per-token price (for models the price map lacks), a share of traffic sent through a
batch API. Rules carry the moment they take effect, and each request is priced at ingestion with
the rule in force when it started, so a price change never reprices history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from cost.prices import ModelPrice, PriceTable
from cost.pricing import price_usage
from cost.usage import TokenUsage

BATCH_DISCOUNT = Decimal("0.5")  # Anthropic and Mistral batch APIs: 50 % off (tco.md §6)


@dataclass(frozen=True, slots=True)
class PriceRule:
    """An adjustment in force from ``effective_from`` (Unix seconds, UTC).

    ``model`` (provider prefix ignored) and ``backend`` select the requests it applies to; None
    matches any. ``price`` replaces the list price; ``discount`` is the fraction taken off;
    ``batch_share`` is the fraction of the traffic billed at the batch rate.
    """

    model: str | None = None
    backend: str | None = None
    effective_from: float = 0.0
    price: ModelPrice | None = None
    discount: Decimal = Decimal(0)
    batch_share: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        for name in ("discount", "batch_share"):
            value = getattr(self, name)
            if not Decimal(0) <= value <= Decimal(1):
                raise ValueError(f"price rule {name} must be between 0 and 1, got {value}")

    @property
    def specificity(self) -> int:
        return 2 * (self.model is not None) + (self.backend is not None)

    def matches(self, model: str, backend: str) -> bool:
        return (self.model is None or self.model in (model, _strip_provider(model))) and (
            self.backend is None or self.backend == backend
        )

    @property
    def fraction_off(self) -> Decimal:
        """The whole discount: negotiated, then the batch share at the batch rate."""
        return 1 - (1 - self.discount) * (1 - self.batch_share * BATCH_DISCOUNT)


@dataclass(frozen=True, slots=True)
class Pricebook:
    """List prices (``table``), explicit price keys per (model, backend), and rules."""

    table: PriceTable
    rules: tuple[PriceRule, ...] = ()
    price_keys: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def list_price(self, model: str, backend: str) -> ModelPrice | None:
        key = self.price_keys.get((model, backend))
        if key is not None:
            return self.table.prices.get(key)
        return self.table.lookup(model, backend)

    def rule_at(self, model: str, backend: str, at: float) -> PriceRule | None:
        """The most specific rule for the request in force at ``at``; the latest of equals."""
        best: PriceRule | None = None
        for rule in self.rules:
            if (
                rule.effective_from <= at
                and rule.matches(model, backend)
                and (
                    best is None
                    or (rule.specificity, rule.effective_from)
                    >= (best.specificity, best.effective_from)
                )
            ):
                best = rule
        return best

    def price(
        self, usage: TokenUsage, *, model: str, backend: str, on_prem: bool, at: float
    ) -> int | None:
        """Cost in micro-dollars; None when no price is known.

        On-prem requests cost 0 here (the TCO model costs on-prem capacity) unless a rule gives
        them an explicit price.
        """
        rule = self.rule_at(model, backend, at)
        if on_prem and (rule is None or rule.price is None):
            return 0
        base = rule.price if rule is not None and rule.price is not None else None
        base = base or self.list_price(model, backend)
        if base is None:
            return None
        off = rule.fraction_off if rule is not None else Decimal(0)
        return price_usage(usage, base, batch_discount=off)


def _strip_provider(model: str) -> str:
    return model.split("/", 1)[1] if "/" in model else model
