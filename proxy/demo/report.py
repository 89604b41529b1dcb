"""What `tokenmeter demo` prints once its month is in the ledger."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metering.export.month import MonthExport
from metering.export.tco_sheet import tco_verdict

TOP_USE_CASES = 8


@dataclass(frozen=True, slots=True)
class DemoRun:
    """How the month was played: what was sent, how fast, and where it went."""

    url: str
    ledger_url: str
    log_path: str
    seed: int
    seats: int
    sent: int
    failed: int
    seconds: float
    pilot: tuple[int, int]  # mistral-large requests on the on-prem pilot, and in all
    serving: bool


def render_report(export: MonthExport, run: DemoRun) -> str:
    month = export.month
    lines = [
        "",
        f"tokenmeter demo: {run.seats} seats, {month}, seed {run.seed}: {run.sent:,} requests "
        f"({run.sent / run.seats:,.0f} per seat) through {run.url} in {run.seconds:.0f} s "
        f"({run.sent / max(run.seconds, 1e-9):,.0f}/s, {run.failed:,} failed)",
        "",
        f"80/20   {export.headline}",
        f"        {export.cost_headline}",
        "",
        *_top_use_cases(export),
        "",
        f"on-prem pilot: {_pilot(run.pilot)}",
        f"TCO     {tco_verdict(export.tco) if export.tco else 'not projected'}",
        "",
        "where to look next:",
        f"  {run.url}/metrics                     Prometheus metrics (tokens, cost, latency)",
        f"  {run.url}/admin/tco                   the live hosted vs. on-prem projection",
        f"  {run.url}/admin/usage?group_by=use_case",
        f"  {run.url}/admin/exports/{month}.xlsx  this month's finance export",
        f"  TOKENMETER_STORAGE__URL={run.ledger_url} \\",
        f"    tokenmeter export --month {month} --format xlsx",
        "  Grafana: the dashboards in grafana/dashboards/ over /metrics (docs/deployment.md)",
        "",
    ]
    if run.serving:
        lines.append(
            f"the gateway keeps serving on {run.url} (log: {run.log_path}); Ctrl-C stops it"
        )
    return "\n".join(lines)


def _top_use_cases(export: MonthExport) -> list[str]:
    rows = export.view("use_cases").records()
    in_set = set(export.tokens.members)
    out = [f"{'use case':<22} {'requests':>9} {'tokens':>13} {'share':>6} {'cum.':>6} {'cost':>12}"]
    for r in rows[:TOP_USE_CASES]:
        mark = "*" if r["use_case"] in in_set else " "
        out.append(
            f"{r['use_case']:<21}{mark} {r['requests']:>9,} {r['total_tokens']:>13,} "
            f"{r['token_share']:>6.1%} {r['cumulative_token_share']:>6.1%} "
            f"{'$' + format(r['cost_usd'], ',.2f'):>12}"
        )
    rest = len(rows) - TOP_USE_CASES
    if rest > 0:
        out.append(f"... and {rest} more (the long tail); * = the 80% set")
    return out


def _pilot(pilot: tuple[int, int]) -> str:
    onprem, total = pilot
    if not total:
        return "no mistral-large traffic"
    return f"{onprem:,} of {total:,} mistral-large requests ({onprem / total:.1%}) ran on vLLM"


def pilot_counts(rows: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(on vLLM, all) mistral-large requests, from usage rows grouped by model and backend."""
    large = [r for r in rows if r["model"] == "mistral-large"]
    on_vllm = sum(r["requests"] for r in large if r["backend"] == "vllm")
    return on_vllm, sum(r["requests"] for r in large)
