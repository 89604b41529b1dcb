"""Backends and the on-prem pilot: per deployment latency, TTFT, errors, tokens/s, cost per 1k."""

from __future__ import annotations

from grafana.panels import (
    HOSTED,
    NOT_OK,
    ONPREM,
    ONPREM_VARIABLE,
    ROUTE,
    ROUTE_OUT,
    TOKENS_PER_S,
    USD,
    Json,
    dashboard,
    prom,
    prom_variable,
    rate,
    row,
    stat,
    table,
    timeseries,
    unit_of,
)


def quantile(q: float, metric: str, selector: str, by: str = "deployment") -> str:
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) ({rate(metric + '_bucket', selector)}))"


def build() -> Json:
    requests, tokens, cost = (
        "tokenmeter_requests_total",
        "tokenmeter_tokens_total",
        "tokenmeter_cost_usd_total",
    )
    duration = "tokenmeter_request_duration_seconds"
    ttft = "tokenmeter_time_to_first_token_seconds"
    overhead = "tokenmeter_overhead_seconds"
    errors = (
        f"(sum by (deployment) ({rate(requests, ROUTE + ', ' + NOT_OK)}) "
        f"or sum by (deployment) ({rate(requests, ROUTE)}) * 0) "
        f"/ sum by (deployment) ({rate(requests, ROUTE)})"
    )
    per_1k = (
        f"(sum by (deployment) ({rate(cost, ROUTE)}) "
        f"or sum by (deployment) ({rate(tokens, ROUTE)}) * 0) "
        f"/ sum by (deployment) ({rate(tokens, ROUTE)}) * 1000"
    )
    compare = [
        prom(quantile(0.5, duration, ROUTE), instant=True, table=True),
        prom(quantile(0.95, duration, ROUTE), instant=True, table=True),
        prom(quantile(0.95, ttft, ROUTE), instant=True, table=True),
        prom(errors, instant=True, table=True),
        prom(f"sum by (deployment) ({rate(tokens, ROUTE)})", instant=True, table=True),
        prom(per_1k, instant=True, table=True),
    ]
    names = ["p50 (s)", "p95 (s)", "TTFT p95 (s)", "error rate", "tokens/s", "USD per 1k tokens"]
    rename = {f"Value #{ref}": name for ref, name in zip("ABCDEF", names, strict=True)}
    pilot_share = (
        f"(sum({rate(requests, ROUTE + ', ' + ONPREM)}) or vector(0)) "
        f"/ sum({rate(requests, ROUTE)})"
    )
    items = [
        row("Per deployment"),
        table(
            "Deployments compared (now)",
            compare,
            w=24,
            h=7,
            description="The same comparison as GET /admin/compare, from the metrics: latency, "
            "time to first token, errors, throughput and hosted cost per 1k tokens.",
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {"excludeByName": {"Time": True}, "renameByName": rename},
                },
            ],
            overrides=[unit_of("error rate", "percentunit")],
        ),
        timeseries(
            "Request duration p50 / p95",
            [
                prom(quantile(0.5, duration, ROUTE), "{{deployment}} p50"),
                prom(quantile(0.95, duration, ROUTE), "{{deployment}} p95"),
            ],
            unit="s",
            description="First byte in to last byte out, streaming and not.",
        ),
        timeseries(
            "Time to first token p50 / p95",
            [
                prom(quantile(0.5, ttft, ROUTE), "{{deployment}} p50"),
                prom(quantile(0.95, ttft, ROUTE), "{{deployment}} p95"),
            ],
            unit="s",
            description="Streaming requests only.",
        ),
        timeseries(
            "Error rate",
            [prom(errors, "{{deployment}}")],
            unit="percentunit",
            description="Requests not ok (client_error, upstream_error, timeout, cancelled).",
        ),
        timeseries(
            "Requests/s by status",
            [
                prom(
                    f"sum by (deployment, status) ({rate(requests, ROUTE)})",
                    "{{deployment}} {{status}}",
                )
            ],
            unit="reqps",
            stack=True,
        ),
        timeseries(
            "Output tokens/s",
            [
                prom(
                    f"sum by (deployment) ({rate(tokens, ROUTE_OUT)})",
                    "{{deployment}}",
                )
            ],
            unit=TOKENS_PER_S,
        ),
        timeseries(
            "Hosted cost per 1k tokens",
            [prom(per_1k, "{{deployment}}")],
            unit=USD,
            description="On-prem deployments show 0: their cost is the hardware (TCO dashboard).",
        ),
        timeseries(
            "Proxy overhead p50 / p99",
            [
                prom(quantile(0.5, overhead, ROUTE), "{{deployment}} p50"),
                prom(quantile(0.99, overhead, ROUTE), "{{deployment}} p99"),
            ],
            unit="s",
            description="Time per request not spent waiting on the upstream.",
        ),
        timeseries(
            "Tokens/s by deployment",
            [prom(f"sum by (deployment) ({rate(tokens, ROUTE)})", "{{deployment}}")],
            unit=TOKENS_PER_S,
            stack=True,
        ),
        row("On-prem pilot vs. hosted"),
        stat("On-prem share of requests", prom(pilot_share, instant=True), unit="percentunit", w=6),
        stat(
            "Measured on-prem utilization",
            prom('max(tokenmeter_tco_onprem_utilization_ratio{kind="measured"})', instant=True),
            unit="percentunit",
            w=6,
            description="The pilot's tokens against one replica of the TCO plan.",
        ),
        stat(
            "On-prem p95 duration",
            prom(quantile(0.95, duration, ROUTE + ", " + ONPREM, by=""), instant=True),
            unit="s",
            w=6,
        ),
        stat(
            "Hosted p95 duration",
            prom(quantile(0.95, duration, ROUTE + ", " + HOSTED, by=""), instant=True),
            unit="s",
            w=6,
        ),
        timeseries(
            "Time to first token p95: on-prem vs. hosted",
            [
                prom(quantile(0.95, ttft, ROUTE + ", " + ONPREM, by=""), "on-prem"),
                prom(quantile(0.95, ttft, ROUTE + ", " + HOSTED, by=""), "hosted"),
            ],
            unit="s",
        ),
        timeseries(
            "Output tokens/s: on-prem vs. hosted",
            [
                prom(
                    f"sum({rate(tokens, ROUTE_OUT + ', ' + ONPREM)}) or vector(0)",
                    "on-prem",
                ),
                prom(
                    f"sum({rate(tokens, ROUTE_OUT + ', ' + HOSTED)}) or vector(0)",
                    "hosted",
                ),
            ],
            unit=TOKENS_PER_S,
        ),
        row("Ledger"),
        stat(
            "Journal backlog",
            prom("sum(tokenmeter_journal_backlog_events)", instant=True),
            w=6,
            description="Events journaled but not yet in the database, all replicas. Grows "
            "during a database outage and drains by itself (docs/ledger.md).",
        ),
        stat(
            "Journal backlog bytes",
            prom("sum(tokenmeter_journal_backlog_bytes)", instant=True),
            unit="bytes",
            w=6,
        ),
        stat(
            "Database up (all replicas)",
            prom("min(tokenmeter_database_up)", instant=True),
            w=6,
            defaults={
                "mappings": [
                    {"type": "value", "options": {"0": {"text": "DOWN"}, "1": {"text": "up"}}}
                ]
            },
        ),
        stat(
            "Journal writable (all replicas)",
            prom("min(tokenmeter_journal_writable)", instant=True),
            w=6,
            defaults={
                "mappings": [
                    {"type": "value", "options": {"0": {"text": "NO"}, "1": {"text": "yes"}}}
                ]
            },
        ),
    ]
    variables = [
        prom_variable("backend", "Backend", "tokenmeter_requests_total"),
        prom_variable("model", "Model", 'tokenmeter_requests_total{backend=~"$backend"}'),
        ONPREM_VARIABLE,
    ]
    return dashboard(
        "tokenmeter-backends",
        "tokenmeter: backends and the on-prem pilot",
        "Per deployment latency, time to first token, errors, throughput and cost per 1k tokens.",
        variables,
        items,
    )
