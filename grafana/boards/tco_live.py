"""TCO live: the tokenmeter_tco_* gauges of the live projection (docs/cost-model.md)."""

from __future__ import annotations

from grafana.panels import (
    SECONDS_PER_MONTH,
    USD,
    Json,
    dashboard,
    never_when_negative,
    panel,
    prom,
    row,
    stat,
    text,
    timeseries,
)


def build() -> Json:
    cost = "tokenmeter_tco_monthly_cost_usd"
    hosted, plan = f'max({cost}{{option="hosted"}})', f'max({cost}{{option="plan"}})'
    volume = f"sum(rate(tokenmeter_tokens_total[$__rate_interval])) * {SECONDS_PER_MONTH}"
    about = (
        "Hosted today is the metered bill of the trailing window (`tco.window_days`, default 7) "
        "extrapolated to a month, after every pricing rule. The plan moves the traffic each "
        "migration target takes (`tco.migration`) to its on-prem model, sized for the p95 of "
        "5-minute peaks; the rest stays hosted at its real price. No series before the first "
        "projection; -1 means never (or no lever). Every replica computes the same projection, "
        "so each gauge is aggregated with `max`. Details: docs/cost-model.md, `tokenmeter tco`."
    )
    per_target = "max by (target) "
    items = [
        text("How to read this", about),
        row("The projection now"),
        stat(
            "Verdict",
            prom(
                "max by (verdict) (tokenmeter_tco_verdict_info) == 1", "{{verdict}}", instant=True
            ),
            text_mode="name",
            w=18,
            description="The projection's verdict in one sentence, or why there is none yet.",
        ),
        stat(
            "Status",
            prom("max by (status) (tokenmeter_tco_status) == 1", "{{status}}", instant=True),
            text_mode="name",
            w=6,
        ),
        stat("Hosted today, per month", prom(hosted, instant=True), unit=USD),
        stat("With the plan, per month", prom(plan, instant=True), unit=USD),
        stat(
            "The plan saves per month",
            prom(f"{hosted} - {plan}", instant=True),
            unit=USD,
            description="Negative: hosted is cheaper than the plan.",
        ),
        stat(
            "Hosted at list, per month",
            prom(f'max({cost}{{option="hosted_list"}})', instant=True),
            unit=USD,
        ),
        stat(
            "Break-even",
            prom(f"{per_target}(tokenmeter_tco_break_even_months)", "{{target}}", instant=True),
            unit="suffix: months",
            defaults={"decimals": 1, **never_when_negative()},
            description="Month in which on-prem cash falls to hosted spend, per target.",
        ),
        stat(
            "Crossover volume",
            prom(
                f"{per_target}(tokenmeter_tco_crossover_tokens_per_month)",
                "{{target}}",
                instant=True,
            ),
            unit="si:tok/month",
            defaults=never_when_negative(),
            description="Monthly volume at which on-prem, sized for its peak, costs what "
            "hosted does.",
        ),
        stat(
            "Hosted price that matches on-prem",
            prom(
                f"{per_target}(tokenmeter_tco_negotiation_target_usd_per_mtok)",
                "{{target}}",
                instant=True,
            ),
            unit="currencyUSD",
            defaults=never_when_negative(),
            description="USD per million tokens at which the target's hosted bill equals its "
            "on-prem cost: the negotiation target. Never: hosted is already cheaper, no lever.",
        ),
        stat(
            "GPUs needed",
            prom(f"{per_target}(tokenmeter_tco_gpus_needed)", "{{target}}", instant=True),
            w=6,
        ),
        stat(
            "Binding constraint",
            prom(
                "max by (target, constraint) (tokenmeter_tco_binding_constraint) == 1",
                "{{target}}: {{constraint}}",
                instant=True,
            ),
            text_mode="name",
            w=6,
            description="What sizes each target: prefill or decode throughput at the peak, "
            "memory, or the minimum replica count.",
        ),
        panel(
            "gauge",
            "On-prem utilization",
            [
                prom(
                    "max by (kind, target) (tokenmeter_tco_onprem_utilization_ratio)",
                    "{{kind}} {{target}}",
                    instant=True,
                )
            ],
            unit="percentunit",
            w=12,
            h=4,
            defaults={"min": 0, "max": 1},
            description="planned: a target's traffic on its sized GPUs; measured: the on-prem "
            "pilot's own tokens on one replica; target: the plan's design utilization.",
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        ),
        row("Over time"),
        timeseries(
            "Monthly cost: hosted today vs. with the plan",
            [prom(f"max by (option) ({cost})", "{{option}}")],
            unit=USD,
        ),
        timeseries(
            "Per target: hosted vs. on-prem",
            [
                prom(
                    "max by (target, option) (tokenmeter_tco_target_monthly_cost_usd)",
                    "{{target}} {{option}}",
                )
            ],
            unit=USD,
        ),
        timeseries(
            "Metered volume at the current rate vs. crossover",
            [
                prom(volume, "metered rate, tokens per month"),
                prom(
                    f"{per_target}(tokenmeter_tco_crossover_tokens_per_month)",
                    "crossover {{target}} (-1: never)",
                ),
            ],
            unit="si:tok/month",
        ),
        timeseries(
            "GPUs needed",
            [prom(f"{per_target}(tokenmeter_tco_gpus_needed)", "{{target}}")],
            w=8,
        ),
        timeseries(
            "Break-even (months, -1: never)",
            [prom(f"{per_target}(tokenmeter_tco_break_even_months)", "{{target}}")],
            w=8,
        ),
        timeseries(
            "On-prem utilization",
            [
                prom(
                    "max by (kind, target) (tokenmeter_tco_onprem_utilization_ratio)",
                    "{{kind}} {{target}}",
                )
            ],
            unit="percentunit",
            w=8,
        ),
    ]
    return dashboard(
        "tokenmeter-tco",
        "tokenmeter: TCO live",
        "Today's metered hosted bill vs. the migration plan: verdict, break-even, crossover, "
        "sizing per target.",
        [],
        items,
    )
