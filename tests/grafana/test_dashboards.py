"""The dashboards' JSON, checked without Grafana: generated, consistent, and only real metrics."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from tests.grafana.queries import (
    GROUPING,
    LEGEND_LABEL,
    MATCHER,
    METRIC,
    PROMETHEUS,
    ROOT,
    SELECTOR,
    SQL,
    dashboards,
    exported_metrics,
    panels,
    queries,
    undefined_variables,
    variable_queries,
)

PROM_QUERIES = queries(PROMETHEUS)


def test_committed_json_is_what_the_generator_writes():
    proc = subprocess.run(
        [sys.executable, "-m", "grafana.build", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_the_four_dashboards_exist_with_unique_uids():
    uids = [d["uid"] for d in dashboards().values()]
    assert sorted(uids) == [
        "tokenmeter-backends",
        "tokenmeter-ledger",
        "tokenmeter-spend",
        "tokenmeter-tco",
    ]


def test_every_metric_a_dashboard_uses_exists_in_metering_metrics():
    exported = exported_metrics()
    texts = [q.text for q in PROM_QUERIES] + [t for _, _, t in variable_queries(PROMETHEUS)]
    used = {name for text in texts for name in METRIC.findall(text)}
    assert used, "no metric found in the dashboards"
    assert used - set(exported) == set()


def test_every_tco_gauge_is_documented_and_on_a_dashboard():
    used = {name for q in PROM_QUERIES for name in METRIC.findall(q.text)}
    gauges = {n for n in exported_metrics() if n.startswith("tokenmeter_tco_")}
    assert gauges - used == set()


@pytest.mark.parametrize("query", PROM_QUERIES, ids=str)
def test_label_matchers_and_groupings_name_labels_the_metrics_have(query):
    exported = exported_metrics()
    labels_in_query = set()
    for metric, matchers in SELECTOR.findall(query.text):
        unknown = set(MATCHER.findall(matchers)) - exported[metric].labels
        assert not unknown, f"{metric} has no label {unknown}"
    for metric in METRIC.findall(query.text):
        labels_in_query |= exported[metric].labels
    for grouping in GROUPING.findall(query.text):
        by = {label.strip() for label in grouping.split(",")}
        assert by <= labels_in_query, f"grouping by {by - labels_in_query}"
    legend = set(LEGEND_LABEL.findall(query.legend))
    grouped = {label.strip() for g in GROUPING.findall(query.text) for label in g.split(",")}
    assert legend <= grouped, f"legend uses {legend - grouped}, not in any by (...)"


@pytest.mark.parametrize("query", PROM_QUERIES, ids=str)
def test_counters_are_rated_and_tco_gauges_taken_at_their_max(query):
    """Aggregations that stay right with several replicas (docs/metrics.md)."""
    text = query.text
    for metric in re.findall(r"\b(tokenmeter_\w+_(?:total|bucket))\b", text):
        assert re.search(rf"\b(?:rate|increase)\(\s*{metric}\b", text), metric
        assert not re.search(rf"(?<!rate\()(?<!increase\(){metric}\b", text), metric
    tco = len(re.findall(r"\btokenmeter_tco_", text))
    under_max = len(re.findall(r"\bmax(?:\s+by\s*\([^)]*\))?\s*\(\s*tokenmeter_tco_", text))
    assert tco == under_max
    assert re.match(r"^\(*\s*(?:sum|max|min|topk|sort_desc|histogram_quantile)\b", text), text


@pytest.mark.parametrize("query", queries(), ids=str)
def test_every_variable_a_query_uses_is_defined(query):
    assert undefined_variables(query) == set()


def test_dashboards_filter_by_use_case_backend_and_model():
    for name, dash in dashboards().items():
        names = {v["name"] for v in dash["templating"]["list"]}
        expected = {
            "spend-by-use-case.json": {"use_case", "backend", "model"},
            "backends.json": {"backend", "model"},
            "users-agents-sessions.json": {"use_case"},
            "tco-live.json": set(),
        }[name]
        assert expected <= names, name


def expected_unit(exprs: list[str]) -> str | None:
    if all("histogram_quantile" in e for e in exprs):
        return "s"
    if all("_usd" in e for e in exprs):
        return "currencyUSD"
    if all("/" in e or "_ratio" in e for e in exprs):
        return "percentunit"
    if all("tokenmeter_tokens_total" in e for e in exprs):
        return "si:tok"
    return None


def test_units_follow_what_the_queries_measure():
    for dash in dashboards().values():
        for panel in panels(dash):
            exprs = [t["expr"] for t in panel.get("targets", []) if "expr" in t]
            if not exprs or panel["type"] == "table":  # tables set units per column
                continue
            unit = panel["fieldConfig"]["defaults"]["unit"]
            expected = expected_unit(exprs)
            assert expected is None or unit.startswith(expected), (panel["title"], unit)


def test_panels_fit_the_grid_without_overlapping():
    for name, dash in dashboards().items():
        taken: set[tuple[int, int]] = set()
        ids = [p["id"] for p in panels(dash)]
        assert len(ids) == len(set(ids)), name
        for panel in panels(dash):
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, panel["title"]
            cells = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not cells & taken, f"{name}: {panel['title']} overlaps"
            taken |= cells


def test_data_sources_are_the_provisioned_ones():
    provisioned = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/tokenmeter.yaml").read_text()
    )["datasources"]
    by_uid = {d["uid"]: d["type"] for d in provisioned}
    for dash in dashboards().values():
        for panel in panels(dash):
            refs = [panel.get("datasource")] + [t["datasource"] for t in panel.get("targets", [])]
            for ref in filter(None, refs):
                assert by_uid.get(ref["uid"]) == ref["type"], (panel["title"], ref)
    assert set(by_uid.values()) == {PROMETHEUS, SQL}
