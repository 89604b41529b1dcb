"""Turns the pricing part of the config into the cost module's Pricebook."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from pathlib import Path

from cost.pricebook import Pricebook, PriceRule
from cost.prices import ModelPrice
from metering.price_map import load_price_map
from proxy.config.settings import ModelConfig, PriceRuleConfig, Settings

_PER_TOKEN = Decimal(1_000_000)


def build_pricebook(settings: Settings, models: list[ModelConfig]) -> Pricebook:
    price_file = settings.pricing.price_file
    table = load_price_map(Path(price_file) if price_file else None)
    keys: dict[tuple[str, str], str] = {
        (d.model, d.backend): d.price_key for m in models for d in m.deployments if d.price_key
    }
    return Pricebook(
        table=table, rules=tuple(_rule(r) for r in settings.pricing.rules), price_keys=keys
    )


def _rule(cfg: PriceRuleConfig) -> PriceRule:
    when = cfg.effective_from
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return PriceRule(
        model=cfg.model,
        backend=cfg.backend,
        effective_from=when.timestamp() if when else 0.0,
        price=_explicit_price(cfg),
        discount=cfg.discount,
        batch_share=cfg.batch_share,
    )


def _explicit_price(cfg: PriceRuleConfig) -> ModelPrice | None:
    if cfg.input_per_mtok is None or cfg.output_per_mtok is None:
        return None
    inp = cfg.input_per_mtok / _PER_TOKEN
    write = (cfg.cache_write_per_mtok / _PER_TOKEN) if cfg.cache_write_per_mtok is not None else inp
    return ModelPrice(
        key=f"config:{cfg.model or cfg.backend or '*'}",
        input=inp,
        output=cfg.output_per_mtok / _PER_TOKEN,
        cache_read=(cfg.cache_read_per_mtok / _PER_TOKEN)
        if cfg.cache_read_per_mtok is not None
        else inp,
        cache_write_5m=write,
        cache_write_1h=(cfg.cache_write_1h_per_mtok / _PER_TOKEN)
        if cfg.cache_write_1h_per_mtok is not None
        else write,
    )
