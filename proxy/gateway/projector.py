"""Re-projects the observed traffic onto the migration plan every few seconds.

``tco_inputs`` is the one place configuration becomes what the projection runs on: the live
projector, the export route and every CLI command call it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import Engine

from cost.capacity import OnPremPlan
from cost.migration import MigrationTarget
from cost.pricebook import Pricebook
from cost.prices import ModelPrice
from cost.scenarios import Scenario, get_scenario
from metering.live_tco import NO_TRAFFIC, LiveProjection, TcoInputs, project_live, project_window
from metering.price_map import price_map_version
from metering.status import read_window_file
from proxy.config.settings import MigrationTargetConfig, ModelConfig, TcoSettings

log = logging.getLogger(__name__)


def tco_inputs(
    tco: TcoSettings, book: Pricebook, models: list[ModelConfig], *, today: date | None = None
) -> TcoInputs:
    """The configured migration plan, list prices per deployment, and price-key warnings.

    A missing or deprecated price key is a warning naming it, never an error: the projection
    prices hosted traffic at its metered bill, which needs no key.
    """
    scenario = get_scenario(tco.scenario).with_overrides(**tco.overrides)
    targets = tuple(_target(t.name, t.build()[0], t.models, t.use_cases) for t in tco.migration)
    if not targets:
        targets = (MigrationTarget(tco.scenario, scenario.plan, scenario.provenance),)
    list_prices: dict[str, ModelPrice | None] = {}
    pilots = {alias: t for t in tco.migration for alias in t.pilots}
    pilot_plans = {}
    for m in models:
        for d in m.deployments:
            if d.is_on_prem and m.name in pilots:
                pilot_plans[d.name or f"{d.backend}/{d.model}"] = _plan_of(pilots[m.name], targets)
            if not d.is_on_prem:
                list_prices[d.name or f"{d.backend}/{d.model}"] = book.list_price(
                    d.model, d.backend
                )
    return TcoInputs(
        plan=targets[0].plan,
        targets=targets,
        scenario=tco.scenario if not tco.migration else "migration plan",
        list_prices=list_prices,
        pilot_plans=pilot_plans,
        price_source=book.table.source or f"litellm {price_map_version()}",
        growth_per_month=tco.growth_per_month,
        min_window_s=tco.min_window_s,
        min_requests=tco.min_requests,
        warnings=price_warnings(tco, book, list_prices, today=today or datetime.now(UTC).date()),
    )


def _target(
    name: str, scenario: Scenario, models: list[str], use_cases: list[str]
) -> MigrationTarget:
    return MigrationTarget(
        name, scenario.plan, scenario.provenance, tuple(models), tuple(use_cases)
    )


def _plan_of(config: MigrationTargetConfig, targets: tuple[MigrationTarget, ...]) -> OnPremPlan:
    return next(t.plan for t in targets if t.name == config.name)


def price_warnings(
    tco: TcoSettings,
    book: Pricebook,
    list_prices: dict[str, ModelPrice | None],
    *,
    today: date,
) -> tuple[str, ...]:
    """One sentence per price key that is gone from the price map or marked deprecated."""
    warnings = []
    for deployment, price in sorted(list_prices.items()):
        if price is None:
            warnings.append(
                f"deployment {deployment!r}: no entry in the price map ({book.table.source}); "
                "its traffic is costed as unknown: set price_key or a pricing rule"
            )
        elif price.deprecation_date and price.deprecation_date <= today.isoformat():
            warnings.append(
                f"deployment {deployment!r} prices at {price.key!r}, which the price map marks "
                f"deprecated since {price.deprecation_date}"
            )
    if tco.hosted_model and tco.hosted_model not in book.table.prices:
        warnings.append(f"tco.hosted_model {tco.hosted_model!r}: no entry in the price map")
    for key in get_scenario(tco.scenario).hosted_models:
        if key not in book.table.prices:
            warnings.append(f"scenario {tco.scenario!r} names {key!r}, gone from the price map")
    return tuple(warnings)


def project_now(
    engine: Engine, tco: TcoSettings, book: Pricebook, models: list[ModelConfig]
) -> LiveProjection:
    return project_live(
        engine, tco_inputs(tco, book, models), window_days=tco.window_days, now=datetime.now(UTC)
    )


class Projector:
    """Holds the latest projection; ``latest`` is None until the first one is done.

    With ``window_dir`` (the ledger runs in its own process), the window the projection needs
    from the database is the one the ledger process writes there every few seconds: this
    process only projects it onto the plan. It reads the database itself only when that file is
    missing or stale (the ledger process not running)."""

    def __init__(
        self,
        engine: Engine,
        tco: TcoSettings,
        book: Pricebook,
        models: list[ModelConfig],
        *,
        window_dir: Path | None = None,
    ) -> None:
        self._window_dir = window_dir
        self._engine = engine
        self._tco = tco
        self._book = book
        self._models = models
        self.latest: LiveProjection | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tokenmeter-tco-projector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def refresh(self) -> LiveProjection:
        shared = read_window_file(self._window_dir) if self._window_dir is not None else None
        now = datetime.now(UTC)
        if shared is not None and now.timestamp() - shared[0] <= 3 * self._tco.interval_s + 5:
            self.latest = project_window(
                shared[1],
                tco_inputs(self._tco, self._book, self._models),
                as_of=now,
                empty=NO_TRAFFIC,
            )
        else:
            self.latest = await asyncio.to_thread(
                project_now, self._engine, self._tco, self._book, self._models
            )
        return self.latest

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the database may be down: keep the last projection
                log.warning("TCO projection failed; keeping the previous one", exc_info=True)
            await asyncio.sleep(self._tco.interval_s)
