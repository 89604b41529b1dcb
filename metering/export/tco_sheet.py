"""The month's TCO projection: the live projection's model, fed with one calendar month.

Volumes by use case and token class, the on-prem leg's tokens and the hosted bill come from the
month's rollups (summed by the caller); the peak rates are the busiest minute of the month's
events, as in the live projection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Engine

from cost.capacity import OnPremPlan
from cost.tco import HostedPricing, MonthlyTokens, NoTrafficError, project_tco
from metering import live_tco as projection
from metering.export.views import CENT, Column, Sums, View
from metering.live_tco import SECONDS_PER_MONTH, Window, observed_volume, to_json
from metering.tables import ROLLUP_SUMS

_I = {name: i for i, name in enumerate(ROLLUP_SUMS)}


@dataclass(frozen=True, slots=True)
class TcoInputs:
    """The on-prem plan and the hosted option the month is projected onto."""

    plan: OnPremPlan
    hosted: HostedPricing
    scenario: str


def month_projection(
    engine: Engine,
    inputs: TcoInputs,
    *,
    start: datetime,
    end: datetime,
    by_use_case: Mapping[tuple[str, bool], Sums],
) -> dict[str, Any]:
    """The projection of [start, end) as JSON, shaped like ``project_live``'s answer.

    ``by_use_case`` holds the month's rollup sums per (use case, on_prem).
    """
    base: dict[str, Any] = {
        "as_of": end.isoformat(),
        "scenario": inputs.scenario,
        "hosted_model": inputs.hosted.name,
    }
    window = _window(engine, start=start, end=end, by_use_case=by_use_case)
    try:
        projection = project_tco(
            volume=observed_volume(window, inputs.plan), hosted=inputs.hosted, plan=inputs.plan
        )
    except NoTrafficError:
        return {**base, "status": "no_traffic", "message": "no tokens in the month"}
    return {
        **base,
        "status": "ok",
        "window": {
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
            "seconds": window.seconds,
            "requests": window.requests,
            "hosted_cost_usd": window.hosted_cost_micro_usd / 1_000_000,
            "extrapolation_factor": SECONDS_PER_MONTH / window.seconds,
            "peak_input_tokens_per_s": window.peak_input_tokens_per_s,
            "peak_output_tokens_per_s": window.peak_output_tokens_per_s,
        },
        "projection": to_json(projection),
    }


def _window(
    engine: Engine,
    *,
    start: datetime,
    end: datetime,
    by_use_case: Mapping[tuple[str, bool], Sums],
) -> Window:
    tokens: dict[str, list[int]] = {}
    requests = onprem_in = onprem_out = hosted_cost = 0
    for (use_case, on_prem), s in by_use_case.items():
        inp, read = s[_I["input_tokens"]], s[_I["cache_read_tokens"]]
        write, w1h = s[_I["cache_write_tokens"]], s[_I["cache_write_1h_tokens"]]
        out = s[_I["output_tokens"]]
        acc = tokens.setdefault(use_case, [0] * 5)
        for i, value in enumerate((inp - read - write, read, write - w1h, w1h, out)):
            acc[i] += value
        requests += s[_I["requests"]]
        if on_prem:
            onprem_in, onprem_out = onprem_in + inp, onprem_out + out
        else:
            hosted_cost += s[_I["cost_micro_usd"]]
    peak_in, peak_out = busiest_minute(engine, start=start, end=end)
    return Window(
        start=start,
        end=end,
        requests=requests,
        tokens_by_use_case={uc: MonthlyTokens(*map(float, v)) for uc, v in tokens.items()},
        onprem_input_tokens=onprem_in,
        onprem_output_tokens=onprem_out,
        hosted_cost_micro_usd=hosted_cost,
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
_NUMBERS = (  # item, where in the projection (dotted path), unit
    ("requests", "window.requests", "requests"),
    ("extrapolation_factor", "window.extrapolation_factor", "x"),
    ("tokens_per_month", "projection.hosted.tokens_per_month", "tokens/month"),
    ("hosted_usd_per_month", "projection.hosted.total_usd_per_month", "USD/month"),
    ("onprem_usd_per_month", "projection.onprem.total_usd_per_month", "USD/month"),
    ("onprem_capex_usd", "projection.onprem.capex_usd", "USD"),
    ("onprem_opex_usd_per_month", "projection.onprem.opex_usd_per_month", "USD/month"),
    ("gpus_needed", "projection.sizing.gpus_needed", "GPUs"),
    ("gpus_deployed", "projection.onprem.gpu_count", "GPUs"),
    ("break_even_month", "projection.break_even.month", "month"),
    ("break_even_month_without_staff", "projection.break_even_without_staff.month", "month"),
    ("crossover_tokens_per_month", "projection.crossover.tokens_per_month", "tokens/month"),
    ("negotiation_target_usd_per_m", "projection.negotiation.target_usd_per_m", "USD/M tokens"),
    ("discount_needed", "projection.negotiation.discount_needed", "share"),
    ("utilization_observed", "projection.utilization_observed", "share"),
    ("utilization_measured", "projection.utilization_measured", "share"),
    ("utilization_target", "projection.utilization_target", "share"),
    ("peak_input_tokens_per_s", "window.peak_input_tokens_per_s", "tokens/s"),
    ("peak_output_tokens_per_s", "window.peak_output_tokens_per_s", "tokens/s"),
)


def tco_views(result: Mapping[str, Any]) -> list[View]:
    """tco (one item per row) and tco_use_cases (the ranking of use cases to move)."""
    rows: list[tuple[Any, ...]] = [
        (item, None, "", str(result.get(item, "")))
        for item in ("status", "scenario", "hosted_model")
    ]
    if result["status"] == "ok":
        window = result["window"]
        rows += [(f"window_{k}", None, "", window[k]) for k in ("start", "end")]
        for item, path, unit in _NUMBERS:
            value = _at(result, path)
            rows.append((item, None if value is None else float(value), unit, ""))
        rows.append(("binding_constraint", None, "", result["projection"]["sizing"]["binding"]))
        rows.append(("crossover_status", None, "", result["projection"]["crossover"]["status"]))
    rows.append(("verdict", None, "", tco_verdict(result)))
    ranking = result["projection"]["use_cases"] if result["status"] == "ok" else []
    money = ("hosted_usd_per_month", "onprem_usd_per_month", "savings_usd_per_month")
    use_cases = [
        (u["use_case"], round(u["tokens_per_month"]), *(usd_from_float(u[k]) for k in money))
        for u in ranking
    ]
    return [
        View("tco", "the month's hosted vs. on-prem projection", TCO_COLUMNS, rows),
        View("tco_use_cases", "use cases to move on-prem first", USE_CASE_COLUMNS, use_cases),
    ]


def _at(result: Mapping[str, Any], path: str) -> Any:
    value: Any = result
    for key in path.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def usd_from_float(value: float | None) -> Decimal | None:
    """A projected (float) amount in USD with cents."""
    if value is None:
        return None
    return Decimal(repr(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def tco_verdict(result: Mapping[str, Any]) -> str:
    """One sentence: stay hosted or move on-prem, with the numbers that say why."""
    if result["status"] != "ok":
        return str(result["message"])
    p = result["projection"]
    hosted, onprem = p["hosted"]["total_usd_per_month"], p["onprem"]["total_usd_per_month"]
    vs = (
        f"{_money(hosted)}/month hosted ({result['hosted_model']}) against "
        f"{_money(onprem)}/month on-prem ({p['onprem']['gpu_count']} GPUs, {result['scenario']})"
    )
    if onprem < hosted:
        month = p["break_even"]["month"]
        when = f"month {month}" if month else "not within the horizon"
        return f"move on-prem: {vs}; the hardware pays for itself in {when}"
    crossover = p["crossover"]["tokens_per_month"]
    if crossover is None:
        return f"stay hosted: {vs}; on-prem does not pay off at any volume it can carry"
    ratio = crossover / p["hosted"]["tokens_per_month"]
    return (
        f"stay hosted: {vs}; on-prem pays off from {_tokens(crossover)} tokens/month, "
        f"{ratio:,.0f}x this month's {_tokens(p['hosted']['tokens_per_month'])}"
    )


def _money(value: float) -> str:
    return f"${value:,.0f}"


def _tokens(value: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:,.1f}{unit}"
    return f"{value:,.0f}"
