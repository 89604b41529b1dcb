"""The month's TCO projection: the live projection's model, fed with one calendar month.

Volumes by use case and token class, the on-prem leg's tokens and the hosted bill come from the
month's rollups (summed by the caller); the peak rates are the busiest minute of the month's
events, as in the live projection.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Engine

from cost.migration import TargetProjection
from metering.export.views import CENT, Column, Sums, View, token_usage
from metering.live_tco import LiveProjection, TcoInputs, project_window
from metering.tables import ROLLUP_SUMS
from metering.tco_window import CELL_KEYS, RollupRow, Window, traffic_peaks, window_from_rollups

__all__ = ["TcoInputs", "month_projection", "tco_verdict", "tco_views"]

_I = {name: i for i, name in enumerate(ROLLUP_SUMS)}


def month_projection(
    engine: Engine,
    inputs: TcoInputs,
    *,
    start: datetime,
    end: datetime,
    by_cell: Mapping[tuple[Any, ...], Sums],
) -> LiveProjection:
    """The projection of [start, end), the same object ``project_live`` answers.

    ``by_cell`` holds the month's rollup sums per ``CELL_KEYS`` (use case, model, deployment,
    on_prem).
    """
    window = _window(engine, start=start, end=end, by_cell=by_cell)
    return project_window(window, inputs, as_of=end, empty="no tokens in the month")


def _window(
    engine: Engine, *, start: datetime, end: datetime, by_cell: Mapping[tuple[Any, ...], Sums]
) -> Window:
    rows = []
    for cell, s in by_cell.items():
        labels = dict(zip(CELL_KEYS, cell, strict=True))
        rows.append(
            RollupRow(
                use_case=str(labels["use_case"]),
                on_prem=bool(labels["on_prem"]),
                usage=token_usage(s),
                requests=s[_I["requests"]],
                cost_micro_usd=s[_I["cost_micro_usd"]],
                model=str(labels["model"]),
                deployment=str(labels["deployment"]),
            )
        )
    with engine.connect() as conn:
        peaks = traffic_peaks(conn, start=start, end=end)
    return window_from_rollups(rows, start=start, end=end, peaks=peaks)


TCO_COLUMNS = (
    Column("item", "str", "what the row states"),
    Column("value", "float", "the number, when the item has one"),
    Column("unit", "str", "its unit"),
    Column("text", "str", "the item's words: a status, a constraint, the verdict"),
)
USE_CASE_COLUMNS = (
    Column("use_case", "str", "the use case, in the order to move on-prem"),
    Column("tokens_per_month", "int", "its hosted tokens, projected to a month"),
    Column("hosted_usd_per_month", "usd", "its metered hosted bill per month"),
    Column("onprem_usd_per_month", "usd", "on-prem cost of carrying it alone, sized for its peak"),
    Column("savings_usd_per_month", "usd", "hosted minus on-prem: what moving it saves (> 0)"),
    Column("target", "str", "the migration target it would move to"),
)


def tco_views(result: LiveProjection) -> list[View]:
    """tco (one item per row: verdict, window, every input with provenance, each target's
    numbers) and tco_use_cases (the use cases whose move saves money, largest first)."""
    rows: list[tuple[Any, ...]] = [
        ("verdict", None, "", tco_verdict(result)),
        ("status", None, "", result.status.value),
        ("scenario", None, "", result.scenario),
        ("price_map", None, "", result.inputs.price_source),
    ]
    rows += [("warning", None, "", w) for w in _warnings(result)]
    if result.window is not None:
        rows += _window_rows(result.window)
    p = result.projection
    if p is not None:
        rows.append(("hosted_usd_per_month", p.hosted_usd_per_month, "USD/month", "metered bill"))
        rows.append(("hosted_list_usd_per_month", p.hosted_list_usd_per_month, "USD/month", ""))
        rows.append(("staying_hosted_usd_per_month", p.staying_usd_per_month, "USD/month", ""))
        for m in p.hosted_models:
            rows.append((f"hosted.{m.model}.bill_usd_per_m", m.bill_usd_per_m, "USD/M tokens", ""))
            rows.append((f"hosted.{m.model}.list_usd_per_m", m.list_usd_per_m, "USD/M tokens", ""))
        rows += [r for t in p.targets for r in _target_rows(t)]
    rows.append(("growth_per_month", result.inputs.growth_per_month, "share", "input"))
    for target in result.inputs.targets:
        for name, provenance in target.provenance.items():
            value = getattr(target.plan, name, None)
            number = float(value) if isinstance(value, int | float) else None
            text = f"{provenance.kind}: {provenance.note} {' '.join(provenance.urls)}".strip()
            shown = text if number is not None else f"{value}; {text}"
            rows.append((f"input.{target.name}.{name}", number, "", shown))
    use_cases = [
        (
            u.use_case,
            round(u.tokens_per_month),
            usd_from_float(u.hosted_usd_per_month),
            usd_from_float(u.onprem_usd_per_month),
            usd_from_float(u.savings_usd_per_month),
            t.target.name,
        )
        for t in (p.targets if p is not None else ())
        for u in t.use_cases
    ]
    return [
        View("tco", "the month's hosted vs. on-prem projection", TCO_COLUMNS, rows),
        View(
            "tco_use_cases", "use cases whose move on-prem saves money", USE_CASE_COLUMNS, use_cases
        ),
    ]


def _warnings(result: LiveProjection) -> tuple[str, ...]:
    return result.projection.warnings if result.projection else result.inputs.warnings


def _window_rows(w: Window) -> list[tuple[Any, ...]]:
    return [
        ("window_start", None, "", w.start.isoformat()),
        ("window_end", None, "", w.end.isoformat()),
        ("requests", float(w.requests), "requests", ""),
        ("extrapolation_factor", w.extrapolation_factor, "x", ""),
        ("peak_input_tokens_per_s", w.peaks.input_tokens_per_s, "tokens/s", "p95 of 5 min"),
        ("peak_output_tokens_per_s", w.peaks.output_tokens_per_s, "tokens/s", "p95 of 5 min"),
        ("mean_input_tokens_per_s", w.peaks.mean_input_tokens_per_s, "tokens/s", ""),
        ("mean_output_tokens_per_s", w.peaks.mean_output_tokens_per_s, "tokens/s", ""),
    ]


def _target_rows(t: TargetProjection) -> list[tuple[Any, ...]]:
    n = f"target.{t.target.name}"
    sized, neg, cross = t.sized, t.negotiation, t.crossover
    never = "never within the horizon"
    return [
        (f"{n}.tokens_per_month", t.tokens_per_month, "tokens/month", ""),
        (f"{n}.hosted_usd_per_month", t.hosted_usd_per_month, "USD/month", "metered bill"),
        (f"{n}.hosted_list_usd_per_month", t.hosted_list_usd_per_month, "USD/month", "at list"),
        (f"{n}.onprem_usd_per_month", t.onprem_usd_per_month, "USD/month", ""),
        (f"{n}.onprem_capex_usd", sized.onprem.capex_usd, "USD", ""),
        (f"{n}.onprem_opex_usd_per_month", sized.onprem.opex_usd_per_month, "USD/month", ""),
        (f"{n}.gpus_needed", float(sized.sizing.gpus_needed), "GPUs", sized.sizing.binding.value),
        (f"{n}.gpus_deployed", float(sized.onprem.gpu_count), "GPUs", ""),
        (f"{n}.peak_input_tokens_per_s", sized.peak_input_tokens_per_s, "tokens/s", "sized for"),
        (f"{n}.peak_output_tokens_per_s", sized.peak_output_tokens_per_s, "tokens/s", "sized for"),
        (f"{n}.break_even_month", _num(t.break_even.month), "month", "" if t.pays_off else never),
        (
            f"{n}.crossover_tokens_per_month",
            cross.tokens_per_month,
            "tokens/month",
            cross.status.value,
        ),
        (
            f"{n}.negotiation_target_usd_per_m",
            neg.target_usd_per_m,
            "USD/M tokens",
            "lever" if neg.lever else "hosted is already cheaper: no lever",
        ),
        (f"{n}.utilization", sized.utilization, "share", ""),
    ]


def _num(value: int | None) -> float | None:
    return None if value is None else float(value)


def usd_from_float(value: float | None) -> Decimal | None:
    """A projected (float) amount in USD with cents."""
    if value is None:
        return None
    return Decimal(repr(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def tco_verdict(result: LiveProjection) -> str:
    """The verdict in one sentence (page one of the export shows it)."""
    return result.verdict
