"""The export's tables ("views"): typed columns, and the views computed from the month's rollups.

Every amount is summed as an integer (tokens, micro-dollars); only shares are floats, and money is
shown in USD rounded to the cent from the exact micro-dollar figure, which every view carries too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from cost.usage import TokenUsage
from metering.export.cents import cents
from metering.export.pareto import ParetoSet, ranked
from metering.tables import ROLLUP_SUMS

Kind = Literal["str", "int", "float", "share", "usd", "bool", "time", "date"]
Sums = list[int]  # one integer per ROLLUP_SUMS column
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Column:
    """A typed column: ``kind`` decides the Parquet type and the spreadsheet number format."""

    name: str
    kind: Kind
    doc: str


@dataclass(frozen=True, slots=True)
class View:
    """One table of the export: a sheet, a CSV file, a Parquet file."""

    name: str
    doc: str
    columns: tuple[Column, ...]
    rows: list[tuple[Any, ...]]
    summed: tuple[str, ...] = ()  # the columns its totals row adds up; () = no totals row

    def records(self) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        names = [c.name for c in self.columns]
        return [dict(zip(names, row, strict=True)) for row in self.rows]

    def total_row(self) -> tuple[Any, ...] | None:
        """The sums of the ``summed`` columns, "total" in the first text column, else empty.

        Money columns sum their (cent-allotted) rows, so the totals row shows exactly what the
        rows above it add up to.
        """
        if not self.summed:
            return None
        label = next((i for i, c in enumerate(self.columns) if c.kind in ("str", "date")), 0)
        out: list[Any] = [None] * len(self.columns)
        for i, c in enumerate(self.columns):
            if c.name in self.summed:
                values = [row[i] for row in self.rows if row[i] is not None]
                out[i] = sum(values, Decimal(0) if c.kind == "usd" else 0)
        out[label] = "total"
        return tuple(out)


METRICS = (
    Column("requests", "int", "requests started in the month (each fallback attempt counts)"),
    Column("errors", "int", "requests that did not end ok"),
    Column("unpriced_requests", "int", "requests with no known price (cost counted as 0)"),
    Column("input_tokens", "int", "all input tokens, cache reads and writes included"),
    Column("uncached_input_tokens", "int", "input tokens at the plain input price"),
    Column("cache_read_tokens", "int", "input tokens read from the prompt cache"),
    Column("cache_write_tokens", "int", "input tokens written to the prompt cache (all TTLs)"),
    Column("cache_write_1h_tokens", "int", "cache writes with a one-hour TTL"),
    Column("output_tokens", "int", "all output tokens, reasoning included"),
    Column("reasoning_tokens", "int", "output tokens spent on hidden reasoning"),
    Column("total_tokens", "int", "input_tokens + output_tokens"),
    Column("cost_micro_usd", "int", "cost in micro-dollars, exact"),
    Column("cost_usd", "usd", "cost in USD, in cents that add up to the total (largest remainder)"),
)
METRIC_NAMES = tuple(c.name for c in METRICS)
SHARES = ("token_share", "cost_share")
_I = {name: i for i, name in enumerate(ROLLUP_SUMS)}


def zero_sums() -> Sums:
    return [0] * len(ROLLUP_SUMS)


def add_into(acc: Sums, values: Sequence[int]) -> None:
    for i, v in enumerate(values):
        acc[i] += v


def total_tokens(s: Sums) -> int:
    return s[_I["input_tokens"]] + s[_I["output_tokens"]]


def cost_micro(s: Sums) -> int:
    return s[_I["cost_micro_usd"]]


def usd(micro_usd: int) -> Decimal:
    """Micro-dollars to USD with cents, rounded half up (exact: no float on the way)."""
    return Decimal(micro_usd).scaleb(-6).quantize(CENT, rounding=ROUND_HALF_UP)


def share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def token_usage(s: Sums) -> TokenUsage:
    """A row's token sums as one ``TokenUsage``: the bucket rule lives there, once."""
    return TokenUsage(
        input_tokens=s[_I["input_tokens"]],
        cache_read_tokens=s[_I["cache_read_tokens"]],
        cache_write_tokens=s[_I["cache_write_tokens"]],
        cache_write_1h_tokens=s[_I["cache_write_1h_tokens"]],
        output_tokens=s[_I["output_tokens"]],
        reasoning_tokens=s[_I["reasoning_tokens"]],
    )


def metric_values(s: Sums) -> tuple[Any, ...]:
    """The METRICS columns of one row."""
    usage = token_usage(s)
    return (
        s[_I["requests"]],
        s[_I["errors"]],
        s[_I["unpriced_requests"]],
        usage.input_tokens,
        usage.uncached_input_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.cache_write_1h_tokens,
        s[_I["output_tokens"]],
        s[_I["reasoning_tokens"]],
        total_tokens(s),
        cost_micro(s),
        usd(cost_micro(s)),
    )


SUMMARY_COLUMNS = (
    Column("month", "str", "the month, YYYY-MM (UTC)"),
    Column("scope", "str", "all, hosted or on_prem"),
    *METRICS,
    Column("token_share", "share", "share of the month's total_tokens"),
    Column("cost_share", "share", "share of the month's cost"),
)


def summary_view(month: str, by_scope: Mapping[str, Sums]) -> View:
    """The month's totals, then the hosted and on-prem parts."""
    total = by_scope["all"]
    rows = [
        (
            month,
            scope,
            *metric_values(s),
            share(total_tokens(s), total_tokens(total)),
            share(cost_micro(s), cost_micro(total)),
        )
        for scope, s in by_scope.items()
    ]
    # The hosted and on-prem cents add up to the month's: allot them from its exact parts.
    at = [c.name for c in SUMMARY_COLUMNS].index("cost_usd")
    parts = [cost_micro(by_scope[k]) for k in ("hosted", "on_prem")]
    allotted = dict(zip(("hosted", "on_prem"), cents(parts), strict=True))
    rows = [(*r[:at], allotted.get(r[1], r[at]), *r[at + 1 :]) for r in rows]
    return View("summary", "the month's totals; hosted and on-prem", SUMMARY_COLUMNS, rows)


def group_columns(key: str) -> tuple[Column, ...]:
    return (
        Column("rank", "int", "rank by total_tokens (1 = largest)"),
        Column(key, "str", f"the {key.replace('_', ' ')}"),
        *METRICS,
        Column("token_share", "share", "share of the month's total_tokens"),
        Column("cumulative_token_share", "share", "token_share of this row and all above it"),
        Column("cost_share", "share", "share of the month's cost"),
        Column("cost_rank", "int", "rank by cost (1 = most expensive)"),
        Column(
            "cumulative_cost_share", "share", "cost_share of this row and all of lower cost_rank"
        ),
    )


def group_view(name: str, key: str, groups: Mapping[str, Sums], total: Sums) -> View:
    """One row per value of ``key``, largest total_tokens first."""
    by_cost = ranked((k, cost_micro(s)) for k, s in groups.items())
    cost_rank, cum_cost = {}, {}
    running = 0
    for i, (k, c) in enumerate(by_cost, start=1):
        running += c
        cost_rank[k], cum_cost[k] = i, share(running, cost_micro(total))
    rows, running = [], 0
    for i, (k, tokens) in enumerate(ranked((k, total_tokens(s)) for k, s in groups.items()), 1):
        running += tokens
        rows.append(
            (
                i,
                k,
                *metric_values(groups[k]),
                share(tokens, total_tokens(total)),
                share(running, total_tokens(total)),
                share(cost_micro(groups[k]), cost_micro(total)),
                cost_rank[k],
                cum_cost[k],
            )
        )
    doc = f"per {key.replace('_', ' ')}, largest first"
    return View(name, doc, group_columns(key), rows, summed=(*METRIC_NAMES, *SHARES))


PARETO_COLUMNS = (
    Column("metric", "str", "tokens (total_tokens) or cost (cost_micro_usd)"),
    Column("use_cases", "int", "use cases with requests in the month"),
    Column("use_cases_in_set", "int", "size of the smallest set carrying >= 80% of the metric"),
    Column("use_case_share", "share", "use_cases_in_set / use_cases"),
    Column("volume_in_set", "int", "the metric carried by the set (tokens or micro-dollars)"),
    Column("volume_total", "int", "the metric over all use cases"),
    Column("volume_share", "share", "volume_in_set / volume_total"),
    Column("members", "str", "the use cases of the set, largest first, comma-separated"),
    Column("headline", "str", "the 80/20 sentence"),
)


def pareto_view(sets: Mapping[str, tuple[ParetoSet, str]]) -> View:
    """The smallest set of use cases carrying 80% of tokens, and of cost, with the headlines."""
    rows = [
        (
            metric,
            p.population,
            len(p.members),
            p.member_share,
            p.carried,
            p.total,
            p.carried_share,
            ", ".join(p.members),
            line,
        )
        for metric, (p, line) in sets.items()
    ]
    return View("pareto", "the 80/20 split of use cases", PARETO_COLUMNS, rows)


def settle_cents(view: View) -> View:
    """``view`` with every ``X_usd`` column that its totals row adds up and that has an exact
    ``X_micro_usd`` twin allotted by ``cents`` over its rows; other columns unchanged (a column
    that is not summed, e.g. a budget per row, is no part of one whole: each row rounds its
    own)."""
    names = [c.name for c in view.columns]
    pairs = [
        (i, names.index(c.name[: -len("_usd")] + "_micro_usd"))
        for i, c in enumerate(view.columns)
        if c.kind == "usd"
        and c.name in view.summed
        and c.name[: -len("_usd")] + "_micro_usd" in names
    ]
    if not pairs or not view.rows:
        return view
    rows = [list(r) for r in view.rows]
    for usd_at, micro_at in pairs:
        for row, amount in zip(rows, cents([r[micro_at] for r in rows]), strict=True):
            row[usd_at] = amount
    return replace(view, rows=[tuple(r) for r in rows])
