"""The month's TCO projection: the live projection's model, fed with one calendar month.

Volumes by use case and token class, the on-prem leg's tokens and the hosted bill come from the
month's rollups (summed by the caller); the peak rates are the busiest minute of the month's
events, as in the live projection.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Engine

from cost.tco import TcoProjection
from metering import live_tco as projection
from metering.export.views import CENT, Column, Sums, View, token_usage
from metering.live_tco import (
    LiveProjection,
    ProjectionStatus,
    RollupRow,
    TcoInputs,
    Window,
    project_window,
    window_from_rollups,
)
from metering.tables import ROLLUP_SUMS

__all__ = ["TcoInputs", "month_projection", "tco_verdict", "tco_views"]

_I = {name: i for i, name in enumerate(ROLLUP_SUMS)}


def month_projection(
    engine: Engine,
    inputs: TcoInputs,
    *,
    start: datetime,
    end: datetime,
    by_use_case: Mapping[tuple[str, bool], Sums],
) -> LiveProjection:
    """The projection of [start, end), the same object ``project_live`` answers.

    ``by_use_case`` holds the month's rollup sums per (use case, on_prem).
    """
    window = _window(engine, start=start, end=end, by_use_case=by_use_case)
    why = "no tokens in the month"
    return project_window(window, inputs, as_of=end, empty=why, no_tokens=why)


def _window(
    engine: Engine,
    *,
    start: datetime,
    end: datetime,
    by_use_case: Mapping[tuple[str, bool], Sums],
) -> Window:
    rows = [
        RollupRow(use_case, on_prem, token_usage(s), s[_I["requests"]], s[_I["cost_micro_usd"]])
        for (use_case, on_prem), s in by_use_case.items()
    ]
    peak_in, peak_out = busiest_minute(engine, start=start, end=end)
    return window_from_rollups(
        rows,
        start=start,
        end=end,
        peak_input_tokens_per_s=peak_in,
        peak_output_tokens_per_s=peak_out,
    )


def busiest_minute(engine: Engine, *, start: datetime, end: datetime) -> tuple[float, float]:
    """Input and output tokens per second of the busiest minute in [start, end)."""
    with engine.connect() as conn:
        return projection.busiest_minute(conn, since=start, until=end)


TCO_COLUMNS = (
    Column("item", "str", "what the row states"),
    Column("value", "float", "the number, when the item has one"),
    Column("unit", "str", "its unit"),
    Column("text", "str", "the item's words: a status, a constraint, the verdict"),
)
USE_CASE_COLUMNS = (
    Column("use_case", "str", "the use case, in the order to move on-prem"),
    Column("tokens_per_month", "int", "its tokens, projected to a month"),
    Column("hosted_usd_per_month", "usd", "its hosted bill per month"),
    Column("onprem_usd_per_month", "usd", "its share of the on-prem cost (by GPU time)"),
    Column("savings_usd_per_month", "usd", "hosted minus on-prem: what moving it saves"),
)
_Number = Callable[[Window, TcoProjection], float | int | None]
_NUMBERS: tuple[tuple[str, _Number, str], ...] = (
    ("requests", lambda w, p: w.requests, "requests"),
    ("extrapolation_factor", lambda w, p: w.extrapolation_factor, "x"),
    ("tokens_per_month", lambda w, p: p.hosted.tokens_per_month, "tokens/month"),
    ("hosted_usd_per_month", lambda w, p: p.hosted.total_usd_per_month, "USD/month"),
    ("onprem_usd_per_month", lambda w, p: p.onprem.total_usd_per_month, "USD/month"),
    ("onprem_capex_usd", lambda w, p: p.onprem.capex_usd, "USD"),
    ("onprem_opex_usd_per_month", lambda w, p: p.onprem.opex_usd_per_month, "USD/month"),
    ("gpus_needed", lambda w, p: p.sizing.gpus_needed, "GPUs"),
    ("gpus_deployed", lambda w, p: p.onprem.gpu_count, "GPUs"),
    ("break_even_month", lambda w, p: p.break_even.month, "month"),
    ("break_even_month_without_staff", lambda w, p: p.break_even_without_staff.month, "month"),
    ("crossover_tokens_per_month", lambda w, p: p.crossover.tokens_per_month, "tokens/month"),
    ("negotiation_target_usd_per_m", lambda w, p: p.negotiation.target_usd_per_m, "USD/M tokens"),
    ("discount_needed", lambda w, p: p.negotiation.discount_needed, "share"),
    ("utilization_observed", lambda w, p: p.utilization_observed, "share"),
    ("utilization_measured", lambda w, p: p.utilization_measured, "share"),
    ("utilization_target", lambda w, p: p.utilization_target, "share"),
    ("peak_input_tokens_per_s", lambda w, p: w.peak_input_tokens_per_s, "tokens/s"),
    ("peak_output_tokens_per_s", lambda w, p: w.peak_output_tokens_per_s, "tokens/s"),
)


def tco_views(result: LiveProjection) -> list[View]:
    """tco (one item per row) and tco_use_cases (the ranking of use cases to move)."""
    rows: list[tuple[Any, ...]] = [
        ("status", None, "", result.status.value),
        ("scenario", None, "", result.scenario),
        ("hosted_model", None, "", result.hosted_model),
    ]
    w, p = result.window, result.projection
    if w is not None and p is not None:
        rows += [("window_start", None, "", w.start.isoformat())]
        rows += [("window_end", None, "", w.end.isoformat())]
        for item, number, unit in _NUMBERS:
            value = number(w, p)
            rows.append((item, None if value is None else _finite(float(value)), unit, ""))
        rows.append(("binding_constraint", None, "", p.sizing.binding.value))
        rows.append(("crossover_status", None, "", p.crossover.status.value))
    rows.append(("verdict", None, "", tco_verdict(result)))
    use_cases = [
        (
            u.use_case,
            round(u.tokens_per_month),
            usd_from_float(u.hosted_usd_per_month),
            usd_from_float(u.onprem_usd_per_month),
            usd_from_float(u.savings_usd_per_month),
        )
        for u in (p.use_cases if p is not None else ())
    ]
    return [
        View("tco", "the month's hosted vs. on-prem projection", TCO_COLUMNS, rows),
        View("tco_use_cases", "use cases to move on-prem first", USE_CASE_COLUMNS, use_cases),
    ]


def _finite(value: float) -> float | None:
    """inf / NaN (e.g. never) as an empty cell, as the JSON answer has null."""
    return value if math.isfinite(value) else None


def usd_from_float(value: float | None) -> Decimal | None:
    """A projected (float) amount in USD with cents."""
    if value is None:
        return None
    return Decimal(repr(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def tco_verdict(result: LiveProjection) -> str:
    """One sentence: stay hosted or move on-prem, with the numbers that say why."""
    p = result.projection
    if result.status is not ProjectionStatus.OK or p is None:
        return result.message
    hosted, onprem = p.hosted.total_usd_per_month, p.onprem.total_usd_per_month
    vs = (
        f"{_money(hosted)}/month hosted ({result.hosted_model}) against "
        f"{_money(onprem)}/month on-prem ({p.onprem.gpu_count} GPUs, {result.scenario})"
    )
    if onprem < hosted:
        month = p.break_even.month
        when = f"month {month}" if month else "not within the horizon"
        return f"move on-prem: {vs}; the hardware pays for itself in {when}"
    crossover = p.crossover.tokens_per_month
    if crossover is None:
        return f"stay hosted: {vs}; on-prem does not pay off at any volume it can carry"
    ratio = crossover / p.hosted.tokens_per_month
    return (
        f"stay hosted: {vs}; on-prem pays off from {_tokens(crossover)} tokens/month, "
        f"{ratio:,.0f}x this month's {_tokens(p.hosted.tokens_per_month)}"
    )


def _money(value: float) -> str:
    return f"${value:,.0f}"


def _tokens(value: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:,.1f}{unit}"
    return f"{value:,.0f}"
