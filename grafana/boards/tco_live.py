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
    hosted, onprem = f'max({cost}{{option="hosted"}})', f'max({cost}{{option="onprem"}})'
    volume = f"sum(rate(tokenmeter_tokens_total[$__rate_interval])) * {SECONDS_PER_MONTH}"
    about = (
        "The metered traffic projected onto a month (`tco.window_days`, scaled to 30.44 days) and "
        "priced two ways: all of it on the hosted option (`tco.hosted_model`), or on the on-prem "
        "plan (`tco.scenario` + `tco.overrides`) sized for the observed peak. Every replica "
        "computes the same projection from the shared ledger, so each gauge is aggregated with "
        "`max`. -1 means never. Details: docs/cost-model.md, `tokenmeter tco`, `/admin/tco`."
    )
    items = [
        text("How to read this", about),
        row("The projection now"),
        stat("Hosted, per month", prom(hosted, instant=True), unit=USD),
        stat("On-prem, per month", prom(onprem, instant=True), unit=USD),
        stat(
            "On-prem saves per month",
            prom(f"{hosted} - {onprem}", instant=True),
            unit=USD,
            description="Negative: hosted is cheaper at this volume.",
        ),
        stat(
            "Break-even",
            prom("max(tokenmeter_tco_break_even_months)", instant=True),
            unit="suffix: months",
            defaults={"decimals": 1, **never_when_negative()},
            description="Months until the on-prem capex is recovered by the monthly savings.",
        ),
        stat(
            "Crossover volume",
            prom("max(tokenmeter_tco_crossover_tokens_per_month)", instant=True),
            unit="si:tok/month",
            defaults=never_when_negative(),
            description="Monthly volume at which hosted and on-prem cost the same.",
        ),
        stat(
            "Hosted price that matches on-prem",
            prom("max(tokenmeter_tco_negotiation_target_usd_per_mtok)", instant=True),
            unit="currencyUSD",
            description="Blended hosted USD per million tokens at which hosted costs what "
            "on-prem does: the negotiation target.",
        ),
        stat("GPUs needed", prom("max(tokenmeter_tco_gpus_needed)", instant=True), w=6),
        stat(
            "Binding constraint",
            prom(
                "max by (constraint) (tokenmeter_tco_binding_constraint) == 1",
                "{{constraint}}",
                instant=True,
            ),
            text_mode="name",
            w=6,
            description="What sizes the on-prem deployment: prefill or decode throughput at "
            "the observed peak, memory, or the minimum replica count.",
        ),
        panel(
            "gauge",
            "On-prem utilization",
            [
                prom(
                    "max by (kind) (tokenmeter_tco_onprem_utilization_ratio)",
                    "{{kind}}",
                    instant=True,
                )
            ],
            unit="percentunit",
            w=12,
            h=4,
            defaults={"min": 0, "max": 1},
            description="observed: the projected volume on the sized plan; measured: the "
            "on-prem pilot's own tokens on one replica; target: the plan's design utilization.",
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        ),
        row("Over time"),
        timeseries(
            "Monthly cost: hosted vs. on-prem",
            [prom(f"max by (option) ({cost})", "{{option}}")],
            unit=USD,
        ),
        timeseries(
            "Metered volume at the current rate vs. crossover",
            [
                prom(volume, "metered rate, tokens per month"),
                prom("max(tokenmeter_tco_crossover_tokens_per_month)", "crossover (-1: never)"),
            ],
            unit="si:tok/month",
        ),
        timeseries(
            "GPUs needed",
            [prom("max(tokenmeter_tco_gpus_needed)", "GPUs")],
            w=8,
        ),
        timeseries(
            "Break-even (months, -1: never)",
            [prom("max(tokenmeter_tco_break_even_months)", "months")],
            w=8,
        ),
        timeseries(
            "On-prem utilization",
            [prom("max by (kind) (tokenmeter_tco_onprem_utilization_ratio)", "{{kind}}")],
            unit="percentunit",
            w=8,
        ),
    ]
    return dashboard(
        "tokenmeter-tco",
        "tokenmeter: TCO live",
        "Hosted vs. on-prem monthly cost of the metered traffic, break-even, crossover, sizing.",
        [],
        items,
    )
