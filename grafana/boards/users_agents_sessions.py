"""Users, agents and sessions from the ledger tables through Grafana's PostgreSQL data source."""

from __future__ import annotations

from grafana.panels import (
    TOKENS,
    USD,
    Json,
    dashboard,
    row,
    sql,
    sql_variable,
    stat,
    table,
    timeseries,
    unit_of,
)

TOKENS_SQL = "input_tokens + output_tokens"  # input includes cached input (docs/api.md)
SESSIONS = "session <> 'unknown'"  # requests that named no session
# A regex, not IN ($use_case): a variable with no values in the range makes `IN ()`, which
# PostgreSQL rejects; `~ '^()$'` is valid and matches nothing.
USE_CASE = "use_case ~ '^(${use_case:regex})$'"


def build() -> Json:
    rollups = f"FROM usage_rollups_hourly WHERE $__timeFilter(hour) AND {USE_CASE}"
    events = f"FROM usage_events WHERE $__timeFilter(started_at) AND {USE_CASE}"

    def top(column: str, label: str) -> str:
        return f"""
            SELECT "{column}" AS "{label}", SUM(requests) AS requests,
                   SUM(errors) AS errors, SUM(input_tokens) AS "input tokens",
                   SUM(cache_read_tokens) AS "cached input", SUM(output_tokens) AS "output tokens",
                   SUM({TOKENS_SQL}) AS tokens, SUM(cost_micro_usd) / 1e6 AS "cost"
            {rollups} GROUP BY "{column}" ORDER BY tokens DESC, "{column}" LIMIT 20"""

    per_session = f"""
        SELECT session, MIN(started_at) AS started, SUM({TOKENS_SQL}) AS tokens
        {events} AND {SESSIONS} GROUP BY session"""
    sessions_top = f"""
        SELECT session, MIN("user") AS "user", MIN(agent) AS agent, MIN(use_case) AS "use case",
               COUNT(*) AS requests, SUM({TOKENS_SQL}) AS tokens,
               SUM(cost_micro_usd) / 1e6 AS "cost", MIN(started_at) AS "first request",
               EXTRACT(EPOCH FROM MAX(finished_at) - MIN(started_at)) AS "duration"
        {events} AND {SESSIONS} GROUP BY session ORDER BY tokens DESC, session LIMIT 20"""
    money = [unit_of("cost", USD)]
    items = [
        row("In the selected time range"),
        stat("Users", sql(f'SELECT COUNT(DISTINCT "user") AS users {rollups}'), w=4),
        stat("Agents", sql(f"SELECT COUNT(DISTINCT agent) AS agents {rollups}"), w=4),
        stat(
            "Sessions",
            sql(f"SELECT COUNT(DISTINCT session) AS sessions {events} AND {SESSIONS}"),
            w=4,
            description="Requests that named no session (session 'unknown') are not counted.",
        ),
        stat(
            "Tokens per session (median)",
            sql(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY tokens) AS tokens "
                f"FROM ({per_session}) s"
            ),
            unit=TOKENS,
            w=4,
        ),
        stat(
            "Tokens per session (p95)",
            sql(
                "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY tokens) AS tokens "
                f"FROM ({per_session}) s"
            ),
            unit=TOKENS,
            w=4,
        ),
        stat("Cost", sql(f"SELECT SUM(cost_micro_usd) / 1e6 AS cost {rollups}"), unit=USD, w=4),
        row("Top users and agents"),
        table("Top users", [sql(top("user", "user"))], overrides=money, h=10),
        table("Top agents", [sql(top("agent", "agent"))], overrides=money, h=10),
        row("Sessions"),
        timeseries(
            "Sessions and active users per day",
            [
                sql(
                    "SELECT $__timeGroupAlias(started_at, '1d'), COUNT(DISTINCT session) AS "
                    f"sessions {events} AND {SESSIONS} GROUP BY 1 ORDER BY 1",
                    series=True,
                ),
                sql(
                    "SELECT $__timeGroupAlias(started_at, '1d'), COUNT(DISTINCT \"user\") AS "
                    f'"active users" {events} GROUP BY 1 ORDER BY 1',
                    series=True,
                ),
            ],
            custom={"drawStyle": "bars", "fillOpacity": 60},
        ),
        timeseries(
            "Tokens per session, by the day the session started",
            [
                sql(
                    "SELECT $__timeGroupAlias(started, '1d'), AVG(tokens) AS mean, "
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY tokens) AS median, "
                    "percentile_cont(0.95) WITHIN GROUP (ORDER BY tokens) AS p95 "
                    f"FROM ({per_session}) s GROUP BY 1 ORDER BY 1",
                    series=True,
                )
            ],
            unit=TOKENS,
        ),
        timeseries(
            "Tokens per day by agent",
            [
                sql(
                    "SELECT $__timeGroupAlias(hour, '1d'), agent AS metric, "
                    f"SUM({TOKENS_SQL}) AS tokens {rollups} GROUP BY 1, 2 ORDER BY 1",
                    series=True,
                )
            ],
            unit=TOKENS,
            stack=True,
            w=24,
        ),
        table(
            "Top sessions",
            [sql(sessions_top)],
            w=24,
            h=10,
            overrides=[*money, unit_of("duration", "s")],
        ),
    ]
    variables = [
        sql_variable(
            "use_case",
            "Use case",
            "SELECT DISTINCT use_case FROM usage_rollups_hourly WHERE $__timeFilter(hour) "
            "ORDER BY 1",
        )
    ]
    return dashboard(
        "tokenmeter-ledger",
        "tokenmeter: users, agents and sessions",
        "Per user, agent and session detail from the ledger (PostgreSQL): never metric labels.",
        variables,
        items,
    )
