"""What page one of the export says: the month's spend against the previous month, the 80/20
sentence and the TCO verdict, computed from a ``MonthExport`` (no I/O).

Hosted spend is the metered bill. On-prem requests cost 0 in the ledger; their cost is the TCO
model's: the on-prem tokens at the projection's on-prem cost per million tokens (as measured on
the on-prem leg, else at the plan's target utilization). The previous month's on-prem tokens are
priced at this month's rate, the only one the export projects.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from metering.export.month import MonthExport
from metering.export.tco_sheet import tco_verdict
from metering.export.views import CENT, cost_micro, total_tokens, usd

TOP_USE_CASES = 12  # rows of the top table on page one; the rest is one "other" row


@dataclass(frozen=True, slots=True)
class SpendLine:
    """One line of the spend table: USD this month and the month before (None: not known)."""

    label: str
    now: Decimal | None
    before: Decimal | None

    @property
    def change(self) -> Decimal | None:
        return None if self.now is None or self.before is None else self.now - self.before

    @property
    def change_share(self) -> float | None:
        if self.change is None or not self.before:
            return None
        return float(self.change / self.before)


def onprem_usd_per_m(export: MonthExport) -> float | None:
    """The TCO model's cost per million tokens of the month's on-prem leg (at the utilization
    measured, else at the plan's target); None without an on-prem leg in the projection."""
    pilot = export.tco.pilot if export.tco is not None else None
    if pilot is None:
        return None
    return pilot.usd_per_m_measured or pilot.usd_per_m_target


def spend_lines(export: MonthExport) -> list[SpendLine]:
    """Hosted (billed), on-prem (TCO model) and total, this month and the previous one."""
    now, before = export.by_scope, export.previous
    # this month's hosted cents as the summary allots them (its parts add up to its total)
    billed = next(
        (r["cost_usd"] for r in export.view("summary").records() if r["scope"] == "hosted"),
        usd(cost_micro(now["hosted"])),
    )
    hosted = SpendLine("Hosted (metered bill)", billed, usd(cost_micro(before["hosted"])))
    rate = onprem_usd_per_m(export)
    onprem = SpendLine(
        "On-prem (TCO model)",
        *(_onprem_usd(s["on_prem"], rate) for s in (now, before)),
    )
    total = SpendLine(
        "Total",
        _add(hosted.now, onprem.now, known=rate is not None),
        _add(hosted.before, onprem.before, known=rate is not None),
    )
    return [hosted, onprem, total]


def _onprem_usd(sums: list[int], rate: float | None) -> Decimal | None:
    if rate is None:
        return None
    amount = Decimal(repr(total_tokens(sums) / 1e6 * rate))
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def _add(hosted: Decimal | None, onprem: Decimal | None, *, known: bool) -> Decimal | None:
    if hosted is None:
        return None
    return hosted + onprem if known and onprem is not None else hosted


def pareto_sentence(export: MonthExport) -> str:
    """ "6 of 28 use cases, 21 %, carry 80 % of tokens and 83 % of cost".

    The set is the token 80/20 set; its cost share is what the same use cases cost. Shares of
    volume are rounded down (never claiming more than the set carries), the share of use cases
    to the nearest percent.
    """
    p = export.tokens
    if p.total == 0:
        return "no tokens recorded in the month"
    k, n = len(p.members), p.population
    members = set(p.members)
    uses = export.view("use_cases").records()
    cost = sum(r["cost_micro_usd"] for r in uses if r["use_case"] in members)
    all_cost = cost_micro(export.totals)
    cost_part = f" and {100 * cost // all_cost} % of cost" if all_cost else ""
    noun = "use case" if n == 1 else "use cases"
    return (
        f"{k} of {n} {noun}, {(200 * k + n) // (2 * n)} %, carry "
        f"{100 * p.carried // p.total} % of tokens{cost_part}"
    )


def verdict(export: MonthExport) -> str:
    """The TCO verdict in one sentence, as the tco sheet states it."""
    if export.tco is None:
        return "No TCO projection: the export was made without a TCO plan."
    text = tco_verdict(export.tco)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def top_use_cases(export: MonthExport) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The largest use cases by tokens (at most TOP_USE_CASES), and the rest summed (or None)."""
    rows = export.view("use_cases").records()
    head, rest = rows[:TOP_USE_CASES], rows[TOP_USE_CASES:]
    if not rest:
        return head, None
    other = {
        "use_case": f"other ({len(rest)} use cases)",
        "total_tokens": sum(r["total_tokens"] for r in rest),
        "token_share": sum(r["token_share"] for r in rest),
        "cumulative_token_share": rest[-1]["cumulative_token_share"],
        "cost_usd": sum((r["cost_usd"] for r in rest), Decimal(0)),
        "cost_share": sum(r["cost_share"] for r in rest),
    }
    return head, other
