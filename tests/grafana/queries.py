"""The queries of the shipped dashboards, and Grafana's interpolation of them, for the tests.

Grafana replaces template variables and macros before a query reaches its data source; these
functions do the same with concrete values so the queries can run on a real Prometheus and a real
PostgreSQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from metering.metrics import StateMetrics, UsageMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROMETHEUS = "prometheus"
SQL = "grafana-postgresql-datasource"
# What Grafana would put in for its interval variables on a short test run.
INTERVALS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "5m"}
METRIC = re.compile(r"\b(tokenmeter_[a-z0-9_]+)")
SELECTOR = re.compile(r"\b(tokenmeter_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(?:=~|!~|!=|=)\s*"')
GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$")

Json = dict[str, Any]


@dataclass(frozen=True, eq=False)
class Query:
    """One target of one panel."""

    dashboard: str
    panel: str
    ref: str
    source: str  # PROMETHEUS or SQL
    text: str
    legend: str
    variables: tuple[Json, ...]

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def dashboards() -> dict[str, Json]:
    """Every shipped dashboard by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: Json) -> Iterator[Json]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def queries(source: str | None = None) -> list[Query]:
    """Every query of every dashboard, optionally only those of one data source type."""
    found = []
    for name, dash in dashboards().items():
        variables = tuple(dash["templating"]["list"])
        for panel in panels(dash):
            for target in panel.get("targets", []):
                kind = (target.get("datasource") or panel["datasource"])["type"]
                if source is not None and kind != source:
                    continue
                text = target["expr"] if kind == PROMETHEUS else target["rawSql"]
                legend = target.get("legendFormat", "")
                found.append(
                    Query(name, panel["title"], target["refId"], kind, text, legend, variables)
                )
    return found


def variable_queries(source: str) -> list[tuple[str, Json, str]]:
    """(dashboard, variable, query text) of every query variable on ``source``."""
    found = []
    for name, dash in dashboards().items():
        for var in dash["templating"]["list"]:
            if var["type"] == "query" and var["datasource"]["type"] == source:
                query = var["query"]
                found.append((name, var, query["query"] if isinstance(query, dict) else query))
    return found


def interpolate(
    text: str, variables: tuple[Json, ...], values: Mapping[str, str] | None = None
) -> str:
    """``text`` with Grafana's interval variables and the dashboard's template variables filled.

    A query variable becomes ``values[name]`` or else ``.*`` (the dashboards' "All" value);
    a constant or custom variable its own value.
    """
    for name, value in INTERVALS.items():
        text = text.replace(name, value)
    values = values or {}
    for var in sorted(variables, key=lambda v: -len(v["name"])):
        name = var["name"]
        value = values.get(name, ".*" if var["type"] == "query" else var["query"])
        text = re.sub(rf"\$\{{{name}(?::\w+)?\}}|\${name}\b", lambda _, v=value: v, text)
    return text


def regex_value(choices: list[str]) -> str:
    """Several values of a multi-value variable as Grafana writes them into a PromQL regex."""
    escaped = [re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", c) for c in choices]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def undefined_variables(query: Query) -> set[str]:
    defined = {v["name"] for v in query.variables}
    used = {a or b for a, b in VARIABLE.findall(query.text)}
    return {u for u in used if not u.startswith("__") and u not in defined}


def sql_macros(text: str, *, start: datetime, end: datetime) -> str:
    """Grafana's PostgreSQL macros, expanded as its data source does."""
    t0, t1 = start.isoformat(), end.isoformat()
    text = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{t0}' AND '{t1}'", text)
    text = text.replace("$__timeFrom()", f"'{t0}'").replace("$__timeTo()", f"'{t1}'")

    def group(match: re.Match[str]) -> str:
        column, interval = match.group(2), match.group(3)
        seconds = {"m": 60, "h": 3600, "d": 86400}[interval[-1]] * int(interval[:-1])
        expr = f"floor(extract(epoch from {column})/{seconds})*{seconds}"
        return expr + (' AS "time"' if match.group(1) else "")

    return re.sub(r"\$__timeGroup(Alias)?\(\s*(\w+)\s*,\s*'(\w+)'\s*\)", group, text)


@dataclass(frozen=True)
class MetricInfo:
    kind: str
    labels: frozenset[str]


def exported_metrics() -> dict[str, MetricInfo]:
    """Every sample name metering/metrics.py exports, with the labels it can carry."""
    registry = CollectorRegistry()
    usage = UsageMetrics(registry, user_label=True, agent_label=True)
    state = StateMetrics(registry)
    labels = {
        metric._name: frozenset(metric._labelnames)
        for owner in (usage, state)
        for metric in vars(owner).values()
        if hasattr(metric, "_labelnames")
    }
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    found = {}
    for family in registry.collect():
        for suffix in suffixes[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            found[family.name + suffix] = MetricInfo(family.type, labels[family.name] | extra)
    return found
