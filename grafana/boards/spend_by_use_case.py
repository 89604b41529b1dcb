"""Spend by use case: hosted cost and token rates by use case, model and backend; 80/20."""

from __future__ import annotations

from grafana.panels import (
    FILTERS,
    HOSTED,
    NOT_OK,
    ONPREM,
    SQL_FILTER,
    TOKENS,
    TOKENS_PER_S,
    UC,
    USD,
    Json,
    bars,
    dashboard,
    increase,
    panel,
    prom,
    rate,
    row,
    sql,
    sql_variable,
    stat,
    table,
    timeseries,
    unit_of,
)

TEAM = "team ~ '^(${team:regex})$'"  # a regex: an empty variable must not make `IN ()`
TEAM_VARIABLE = sql_variable(
    "team",
    "Team",
    "SELECT DISTINCT team FROM usage_rollups_hourly WHERE $__timeFilter(hour) ORDER BY 1",
)


def team_panels() -> list[Json]:
    """Chargeback by cost centre: the key's team, from the ledger (metrics carry no team)."""
    rollups = f"FROM usage_rollups_hourly WHERE $__timeFilter(hour) AND {SQL_FILTER} AND {TEAM}"
    by_team = f"""
        SELECT team, SUM(requests) AS requests, SUM(errors) AS errors,
               SUM(input_tokens + output_tokens) AS tokens, SUM(cost_micro_usd) / 1e6 AS "cost",
               SUM(cost_micro_usd)::float8 / NULLIF(SUM(SUM(cost_micro_usd)) OVER (), 0)
                 AS "cost share"
        {rollups} GROUP BY team ORDER BY "cost" DESC, team"""
    by_key = f"""
        SELECT team, key_id AS "key", SUM(requests) AS requests,
               SUM(input_tokens + output_tokens) AS tokens, SUM(cost_micro_usd) / 1e6 AS "cost"
        {rollups} GROUP BY team, key_id ORDER BY "cost" DESC, team, key_id LIMIT 50"""
    over_time = f"""
        SELECT $__timeGroupAlias(hour, '1h'), team AS metric, SUM(cost_micro_usd) / 1e6 AS "cost"
        {rollups} GROUP BY 1, 2 ORDER BY 1"""
    note = "Who pays: the key's team (keys without a team are under 'unknown'). From the ledger."
    return [
        row("Teams (cost centres)"),
        table(
            "Cost by team (ledger)",
            [sql(by_team)],
            w=12,
            h=8,
            description=note,
            overrides=[
                unit_of("cost", USD),
                unit_of("tokens", TOKENS),
                unit_of("cost share", "percentunit"),
            ],
        ),
        table(
            "Cost by team and key (ledger)",
            [sql(by_key)],
            w=12,
            h=8,
            description=note,
            overrides=[unit_of("cost", USD), unit_of("tokens", TOKENS)],
        ),
        timeseries(
            "Hosted cost by team per hour (ledger)",
            [sql(over_time, series=True)],
            stack=True,
            unit=USD,
            w=24,
            h=7,
            description=note,
        ),
    ]


def build() -> Json:
    cost, tokens, requests = (
        "tokenmeter_cost_usd_total",
        "tokenmeter_tokens_total",
        "tokenmeter_requests_total",
    )
    per_hour = "Hosted cost at ingestion prices; on-prem deployments cost 0 per token here "
    per_hour += "(their hardware is in the TCO dashboard)."
    share = (
        f"(sum({increase(tokens, UC + ', ' + ONPREM)}) or vector(0)) / sum({increase(tokens, UC)})"
    )
    ranked = (
        f"sort_desc(sum by (use_case) ({increase(tokens, UC)}) "
        f"/ scalar(sum({increase(tokens, UC)})))"
    )
    pareto = f"""
        WITH per_use_case AS (
          SELECT use_case, SUM(input_tokens + output_tokens) AS tokens,
                 SUM(cost_micro_usd) / 1e6 AS cost_usd, SUM(requests) AS requests
          FROM usage_rollups_hourly WHERE $__timeFilter(hour) AND {SQL_FILTER}
          GROUP BY use_case
        ), ranked AS (
          SELECT *, tokens::float8 / NULLIF(SUM(tokens) OVER (), 0) AS share,
                 SUM(tokens) OVER (ORDER BY tokens DESC, use_case ROWS UNBOUNDED PRECEDING)::float8
                   / NULLIF(SUM(tokens) OVER (), 0) AS cumulative_share
          FROM per_use_case
        )
        SELECT use_case AS "use case", requests, tokens, cost_usd AS "cost", share,
               cumulative_share AS "cumulative share",
               CASE WHEN cumulative_share - share < 0.8 THEN 'yes' ELSE '' END AS "in the 80 %"
        FROM ranked ORDER BY tokens DESC, use_case"""
    headline = f"""
        WITH per_use_case AS (
          SELECT use_case, SUM(input_tokens + output_tokens) AS tokens
          FROM usage_rollups_hourly WHERE $__timeFilter(hour) AND {SQL_FILTER}
          GROUP BY use_case
        ), ranked AS (
          SELECT tokens::float8 / NULLIF(SUM(tokens) OVER (), 0) AS share,
                 SUM(tokens) OVER (ORDER BY tokens DESC, use_case ROWS UNBOUNDED PRECEDING)::float8
                   / NULLIF(SUM(tokens) OVER (), 0) AS cumulative_share
          FROM per_use_case
        )
        SELECT COUNT(*) FILTER (WHERE cumulative_share - share < 0.8) AS "use cases",
               COUNT(*) FILTER (WHERE cumulative_share - share < 0.8)::float8
                 / NULLIF(COUNT(*), 0) AS "share of all use cases"
        FROM ranked"""
    items = [
        row("In the selected time range"),
        stat(
            "Hosted cost", prom(f"sum({increase(cost, UC)}) or vector(0)", instant=True), unit=USD
        ),
        stat("Tokens", prom(f"sum({increase(tokens, UC)})", instant=True), unit=TOKENS),
        stat("Requests", prom(f"sum({increase(requests, UC)})", instant=True)),
        stat(
            "Errors",
            prom(f"sum({increase(requests, UC + ', ' + NOT_OK)}) or vector(0)", instant=True),
        ),
        stat("On-prem share of tokens", prom(share, instant=True), unit="percentunit"),
        stat(
            "Unpriced requests",
            prom(
                f"sum({increase('tokenmeter_unpriced_requests_total', UC)}) or vector(0)",
                instant=True,
            ),
            description="Requests whose model has no known price: their cost is unknown, not 0.",
        ),
        row("Rates"),
        timeseries(
            "Hosted cost by use case (USD/h)",
            [prom(f"sum by (use_case) ({rate(cost, UC)}) * 3600", "{{use_case}}")],
            stack=True,
            unit=USD,
            description=per_hour,
        ),
        timeseries(
            "Tokens/s by use case",
            [prom(f"sum by (use_case) ({rate(tokens, UC)})", "{{use_case}}")],
            stack=True,
            unit=TOKENS_PER_S,
        ),
        timeseries(
            "Hosted cost by model (USD/h)",
            [prom(f"sum by (model) ({rate(cost, UC)}) * 3600", "{{model}}")],
            stack=True,
            unit=USD,
        ),
        timeseries(
            "Tokens/s by model",
            [prom(f"sum by (model) ({rate(tokens, UC)})", "{{model}}")],
            stack=True,
            unit=TOKENS_PER_S,
        ),
        timeseries(
            "Hosted cost by backend (USD/h)",
            [prom(f"sum by (backend) ({rate(cost, UC)}) * 3600", "{{backend}}")],
            stack=True,
            unit=USD,
        ),
        timeseries(
            "Tokens/s by backend and token type",
            [
                prom(
                    f"sum by (backend, token_type) ({rate(tokens, UC)})",
                    "{{backend}} {{token_type}}",
                )
            ],
            stack=True,
            unit=TOKENS_PER_S,
            description="Token types are disjoint: input (uncached), cache_read, cache_write_5m, "
            "cache_write_1h, output; they add up to all tokens.",
        ),
        row("Top use cases, hosted vs. on-prem, 80/20"),
        bars(
            "Top use cases by hosted cost",
            prom(
                f"topk(10, sum by (use_case) ({increase(cost, UC)}))", "{{use_case}}", instant=True
            ),
            unit=USD,
            w=8,
        ),
        bars(
            "Top use cases by tokens",
            prom(
                f"topk(10, sum by (use_case) ({increase(tokens, UC)}))",
                "{{use_case}}",
                instant=True,
            ),
            unit=TOKENS,
            w=8,
        ),
        panel(
            "piechart",
            "Tokens: hosted vs. on-prem",
            [
                prom(
                    f"sum({increase(tokens, UC + ', ' + HOSTED)}) or vector(0)",
                    "hosted",
                    instant=True,
                ),
                prom(
                    f"sum({increase(tokens, UC + ', ' + ONPREM)}) or vector(0)",
                    "on-prem",
                    instant=True,
                ),
            ],
            unit=TOKENS,
            w=8,
            options={
                "pieType": "donut",
                "displayLabels": ["percent"],
                "legend": {"displayMode": "table", "placement": "right", "values": ["percent"]},
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            },
        ),
        bars(
            "Share of tokens by use case, ranked",
            prom(ranked, "{{use_case}}", instant=True),
            unit="percentunit",
            w=8,
            h=10,
            defaults={"min": 0, "max": 1},
        ),
        table(
            "80/20: use cases ranked by tokens (ledger)",
            [sql(pareto)],
            w=16,
            h=10,
            description="From the ledger's hourly rollups (PostgreSQL). 'In the 80 %' marks the "
            "smallest set of use cases that carries 80 % of the tokens.",
            overrides=[
                unit_of("cost", USD),
                unit_of("tokens", TOKENS),
                unit_of("share", "percentunit"),
                unit_of("cumulative share", "percentunit"),
            ],
        ),
        stat(
            "Use cases carrying 80 % of tokens (ledger)",
            sql(headline),
            text_mode="value_and_name",
            w=8,
            h=4,
            defaults={"decimals": 0},
            overrides=[unit_of("share of all use cases", "percentunit")],
        ),
        timeseries(
            "Tokens/s: hosted vs. on-prem",
            [
                prom(f"sum({rate(tokens, UC + ', ' + HOSTED)}) or vector(0)", "hosted"),
                prom(f"sum({rate(tokens, UC + ', ' + ONPREM)}) or vector(0)", "on-prem"),
            ],
            stack=True,
            unit=TOKENS_PER_S,
            w=16,
            h=6,
        ),
        *team_panels(),
    ]
    return dashboard(
        "tokenmeter-spend",
        "tokenmeter: spend by use case",
        "Hosted cost and token rates by use case, model and backend; the 80/20 view; by team.",
        [*FILTERS, TEAM_VARIABLE],
        items,
    )
