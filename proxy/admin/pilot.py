"""The pilot report: the ledger's per-deployment numbers plus the TCO model's on-prem cost."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from metering.live_tco import LiveProjection


def pilot_report(
    rows: list[dict[str, Any]],
    projection: LiveProjection | None,
    *,
    model: str | None,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    """On-prem rows get their cost per 1k tokens from the TCO model, at the utilization
    measured and at the plan's target: a 5 % pilot always looks expensive at its real load.
    Each deployment is costed on the plan of the migration target it pilots, when one names it.
    """
    pilots = {} if projection is None else projection.pilots
    for row in rows:
        if row["on_prem"]:
            pilot = pilots.get(row["deployment"])
            row["onprem_usd_per_1k_tokens_measured"] = _per_1k(
                None if pilot is None else pilot.usd_per_m_measured
            )
            row["onprem_usd_per_1k_tokens_target"] = _per_1k(
                None if pilot is None else pilot.usd_per_m_target
            )
    return {"model": model, "since": since, "until": until, "deployments": rows}


def _per_1k(usd_per_m: float | None) -> float | None:
    """$/M → $/1k; an infinite cost (an idle deployment) is null, as in the JSON answer."""
    if usd_per_m is None or math.isinf(usd_per_m):
        return None
    return usd_per_m / 1000
