"""Re-projects the observed traffic onto hosted vs. on-prem cost every few seconds."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from cost.capacity import OnPremPlan
from cost.pricebook import Pricebook
from cost.scenarios import get_scenario
from cost.tco import HostedPricing
from metering.live_tco import project_live
from proxy.config.settings import ConfigError, TcoSettings

log = logging.getLogger(__name__)


def tco_inputs(tco: TcoSettings, book: Pricebook) -> tuple[OnPremPlan, HostedPricing]:
    """The configured plan and hosted option; ConfigError naming the key when unusable."""
    scenario = get_scenario(tco.scenario).with_overrides(**tco.overrides)
    key = tco.hosted_model or scenario.hosted_models[0]
    price = book.table.prices.get(key)
    if price is None:
        raise ConfigError(f"tco.hosted_model: no price-map entry {key!r} (see tokenmeter prices)")
    return scenario.plan, HostedPricing.from_model_price(price)


def project_now(engine: Engine, tco: TcoSettings, book: Pricebook) -> dict[str, Any]:
    plan, hosted = tco_inputs(tco, book)
    return project_live(
        engine,
        plan=plan,
        hosted=hosted,
        scenario=tco.scenario,
        window_days=tco.window_days,
        now=datetime.now(UTC),
    )


class Projector:
    """Holds the latest projection; ``latest`` is None until the first one is done."""

    def __init__(self, engine: Engine, tco: TcoSettings, book: Pricebook) -> None:
        self._engine = engine
        self._tco = tco
        self._book = book
        self.latest: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tokenmeter-tco-projector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def refresh(self) -> dict[str, Any]:
        self.latest = await asyncio.to_thread(project_now, self._engine, self._tco, self._book)
        return self.latest

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the database may be down: keep the last projection
                log.warning("TCO projection failed; keeping the previous one", exc_info=True)
            await asyncio.sleep(self._tco.interval_s)
