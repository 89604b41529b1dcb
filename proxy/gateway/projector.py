"""Re-projects the observed traffic onto hosted vs. on-prem cost every few seconds."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy import Engine

from cost.pricebook import Pricebook
from cost.scenarios import get_scenario
from cost.tco import HostedPricing
from metering.live_tco import LiveProjection, TcoInputs, project_live
from proxy.config.settings import ConfigError, TcoSettings

log = logging.getLogger(__name__)


def tco_inputs(tco: TcoSettings, book: Pricebook) -> TcoInputs:
    """The configured plan and hosted option; ConfigError naming the key when unusable.

    The one place that turns configuration into what the projection runs on: the live
    projector, the export and every CLI command call it.
    """
    scenario = get_scenario(tco.scenario).with_overrides(**tco.overrides)
    key = tco.hosted_model or scenario.hosted_models[0]
    price = book.table.prices.get(key)
    if price is None:
        raise ConfigError(f"tco.hosted_model: no price-map entry {key!r} (see tokenmeter prices)")
    hosted = HostedPricing.from_model_price(price)
    return TcoInputs(plan=scenario.plan, hosted=hosted, scenario=tco.scenario)


def project_now(engine: Engine, tco: TcoSettings, book: Pricebook) -> LiveProjection:
    return project_live(
        engine, tco_inputs(tco, book), window_days=tco.window_days, now=datetime.now(UTC)
    )


class Projector:
    """Holds the latest projection; ``latest`` is None until the first one is done."""

    def __init__(self, engine: Engine, tco: TcoSettings, book: Pricebook) -> None:
        self._engine = engine
        self._tco = tco
        self._book = book
        self.latest: LiveProjection | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tokenmeter-tco-projector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def refresh(self) -> LiveProjection:
        self.latest = await asyncio.to_thread(project_now, self._engine, self._tco, self._book)
        return self.latest

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the database may be down: keep the last projection
                log.warning("TCO projection failed; keeping the previous one", exc_info=True)
            await asyncio.sleep(self._tco.interval_s)
