"""Building blocks of the dashboards: data sources, units, queries, panels and their layout.

Plain dicts in Grafana's dashboard JSON model (schemaVersion 39, Grafana 10.4 and later).
"""

from __future__ import annotations

import textwrap
from typing import Any

from cost.prices import ON_PREM_BACKENDS

PROM = {"type": "prometheus", "uid": "tokenmeter-prometheus"}
LEDGER = {"type": "grafana-postgresql-datasource", "uid": "tokenmeter-ledger"}
TOKENS = "si:tok"  # 1.2 Mtok
TOKENS_PER_S = "si:tok/s"
USD = "currencyUSD"
SECONDS_PER_MONTH = 2_630_016  # 30.44 days, the month of the TCO projection (docs/cost-model.md)

Json = dict[str, Any]

# Filters every Prometheus query takes from the template variables.
UC = 'use_case=~"$use_case", backend=~"$backend", model=~"$model"'
ROUTE = 'backend=~"$backend", model=~"$model"'
ONPREM = 'backend=~"$onprem_backends"'
HOSTED = 'backend!~"$onprem_backends"'
NOT_OK = 'status!="ok"'
ROUTE_OUT = ROUTE + ', token_type="output"'
# The same filters for SQL panels on the ledger (Grafana's regex format: ".*" for All).
SQL_FILTER = (
    "use_case ~ '^(${use_case:regex})$' AND backend ~ '^(${backend:regex})$' "
    "AND model ~ '^(${model:regex})$'"
)


def prom(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> Json:
    return {
        "datasource": PROM,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "format": "table" if table else "time_series",
    }


def sql(raw: str, *, series: bool = False) -> Json:
    return {
        "datasource": LEDGER,
        "editorMode": "code",
        "rawQuery": True,
        "rawSql": textwrap.dedent(raw).strip(),
        "format": "time_series" if series else "table",
    }


def panel(
    kind: str,
    title: str,
    targets: list[Json],
    *,
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    description: str = "",
    options: Json | None = None,
    defaults: Json | None = None,
    custom: Json | None = None,
    transformations: list[Json] | None = None,
    overrides: list[Json] | None = None,
) -> Json:
    for ref, target in zip("ABCDEFGHIJ", targets, strict=False):
        target["refId"] = ref
    field: Json = {"unit": unit, **(defaults or {})}
    if custom:
        field["custom"] = custom
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        "targets": targets,
        "fieldConfig": {"defaults": field, "overrides": overrides or []},
        "options": options or {},
        "transformations": transformations or [],
        "gridPos": {"w": w, "h": h},
    }


def timeseries(
    title: str, targets: list[Json], *, stack: bool = False, custom: Json | None = None, **kw: Any
) -> Json:
    custom = {
        "fillOpacity": 15,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": True,
        **(custom or {}),
    }
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    options = {
        "legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "lastNotNull"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, targets, custom=custom, options=options, **kw)


def stat(title: str, target: Json, *, text_mode: str = "value", **kw: Any) -> Json:
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": text_mode,
        "colorMode": "none",
        "graphMode": "none",
    }
    return panel("stat", title, [target], options=options, **{"w": 4, "h": 4, **kw})


def bars(title: str, target: Json, **kw: Any) -> Json:
    options = {
        "displayMode": "basic",
        "orientation": "horizontal",
        "showUnfilled": True,
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    }
    return panel("bargauge", title, [target], options=options, **kw)


def table(title: str, targets: list[Json], **kw: Any) -> Json:
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return panel("table", title, targets, options=options, **kw)


def text(title: str, markdown: str, *, w: int = 24, h: int = 3) -> Json:
    return {
        "type": "text",
        "title": title,
        "options": {"mode": "markdown", "content": markdown},
        "gridPos": {"w": w, "h": h},
    }


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": 24}}


def prom_variable(name: str, label: str, selector: str) -> Json:
    query = f"label_values({selector}, {name})"
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": PROM,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"text": ["All"], "value": ["$__all"]},
    }


def sql_variable(name: str, label: str, raw: str) -> Json:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": LEDGER,
        "definition": raw,
        "query": raw,
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "current": {"text": ["All"], "value": ["$__all"]},
    }


ONPREM_VARIABLE = {
    "type": "constant",
    "name": "onprem_backends",
    "label": "On-prem backends (regex)",
    "description": "Backends counted as on-prem: "
    + " and ".join(sorted(ON_PREM_BACKENDS))
    + " unless a deployment sets on_prem",
    "query": "|".join(sorted(ON_PREM_BACKENDS)),
    "hide": 2,
}
FILTERS = [
    prom_variable("use_case", "Use case", "tokenmeter_requests_total"),
    prom_variable("backend", "Backend", 'tokenmeter_requests_total{use_case=~"$use_case"}'),
    prom_variable(
        "model", "Model", 'tokenmeter_requests_total{use_case=~"$use_case", backend=~"$backend"}'
    ),
    ONPREM_VARIABLE,
]


def dashboard(
    uid: str, title: str, description: str, variables: list[Json], items: list[Json]
) -> Json:
    """Lays ``items`` out left to right, top to bottom, on Grafana's 24-column grid."""
    x = y = line_h = 0
    panels = []
    for pid, item in enumerate(items, start=1):
        pos = item["gridPos"]
        w, h = pos["w"], pos.get("h", 1)
        if item["type"] == "row" or x + w > 24:
            x, y, line_h = 0, y + line_h, 0
        item = {"id": pid, **item, "gridPos": {"x": x, "y": y, "w": w, "h": h}}
        panels.append(item)
        x, line_h = x + w, max(line_h, h)
        if item["type"] == "row":
            x, y, line_h = 0, y + h, 0
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["tokenmeter"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "1m",
        "timezone": "",
        "links": [
            {
                "type": "dashboards",
                "tags": ["tokenmeter"],
                "asDropdown": True,
                "title": "tokenmeter",
            }
        ],
        "annotations": {"list": []},
        "templating": {"list": variables},
        "panels": panels,
    }


def unit_of(field: str, unit: str) -> Json:
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": "unit", "value": unit}, {"id": "decimals", "value": 1}],
    }


def never_when_negative() -> Json:
    """TCO gauges report -1 for "never" (no break-even, no crossover)."""
    return {
        "mappings": [
            {"type": "range", "options": {"from": -1e12, "to": -0.5, "result": {"text": "never"}}}
        ]
    }


def rate(metric: str, selector: str, window: str = "$__rate_interval") -> str:
    return f"rate({metric}{{{selector}}}[{window}])"


def increase(metric: str, selector: str) -> str:
    return f"increase({metric}{{{selector}}}[$__range])"
