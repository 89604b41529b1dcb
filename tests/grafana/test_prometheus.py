"""Every PromQL query of every dashboard returns data from a real Prometheus scraping a real
tokenmeter under traffic, with the scrape job of deploy/prometheus.yml."""

from __future__ import annotations

import math
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from itertools import cycle
from typing import Any

import httpx
import pytest
import yaml

from proxy.simulated import FakeServer
from tests import services
from tests.conftest import backend_models
from tests.grafana.queries import (
    LABEL_VALUES,
    LEGEND_LABEL,
    PROMETHEUS,
    ROOT,
    dashboards,
    interpolate,
    queries,
    regex_value,
    variable_queries,
)
from tests.support import Gateway, wait_for

SHIPPED_CONFIG = ROOT / "deploy" / "prometheus.yml"
JOB = "tokenmeter"
PROM_QUERIES = queries(PROMETHEUS)


def prometheus_binary() -> str:
    return services.program("prometheus", package="prometheus", why="the dashboard queries")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def derived_config(target: str) -> dict[str, Any]:
    """deploy/prometheus.yml's tokenmeter job, scraping ``target`` every second."""
    shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())
    [job] = [j for j in shipped["scrape_configs"] if j["job_name"] == JOB]
    discovery = [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]
    assert discovery, "the shipped job discovers no targets"
    for key in discovery:
        del job[key]
    job["static_configs"] = [{"targets": [target]}]
    job.pop("scrape_interval", None)
    job.pop("scrape_timeout", None)
    interval = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    return {**shipped, "global": {**shipped.get("global", {}), **interval}, "scrape_configs": [job]}


@pytest.fixture(scope="module")
def metered(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory):
    gw = Gateway(
        tmp_path_factory.mktemp("prom-ledger") / "tm.db",
        {
            "models": backend_models(fakes),
            "use_cases": {"coding": {"agents": ["vibe"]}, "rag": {"agents": ["kb-search"]}},
            "tco": {"interval_s": 0.5, "min_requests": 1, "min_window_s": 0},
        },
    ).start()
    yield gw
    gw.stop()


def say(words: int, directive: str = "") -> list[dict[str, str]]:
    return [{"role": "user", "content": "word " * words + directive}]


CHAT = "/v1/chat/completions"
STREAM = {"stream": True, "stream_options": {"include_usage": True}}
# Several use cases, every backend, streaming and not, the on-prem legs, an upstream error.
TRAFFIC: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    (CHAT, {"model": "vllm-model", "messages": say(30), **STREAM}, {"X-Meter-Agent": "vibe"}),
    (CHAT, {"model": "azure-mistral", "messages": say(50)}, {"X-Meter-Agent": "kb-search"}),
    (CHAT, {"model": "claude", "messages": say(20), **STREAM}, {"X-Meter-Use-Case": "support"}),
    (
        "/v1/messages",
        {"model": "claude", "max_tokens": 64, "messages": say(40), "stream": True},
        {"X-Meter-Agent": "vibe"},
    ),
    (CHAT, {"model": "tgi-model", "messages": say(60)}, {"X-Meter-Use-Case": "summarize"}),
    (CHAT, {"model": "compat-model", "messages": say(10)}, {"X-Meter-Use-Case": "eval"}),
    (
        CHAT,
        {"model": "azure-mistral", "messages": say(5, "[[fake:status=500]]")},
        {"X-Meter-Use-Case": "support"},
    ),
    (CHAT, {"model": "azure-mistral", "messages": say(80), **STREAM}, {"X-Meter-Agent": "vibe"}),
]


@pytest.fixture(scope="module")
def load(metered: Gateway) -> Iterator[None]:
    """Requests through the gateway in the background for as long as the module runs."""
    key = metered.create_key(user="dana", team="platform")
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=metered.url, timeout=10) as client:
            for path, body, headers in cycle(TRAFFIC):
                if stop.is_set():
                    return
                session = {"X-Meter-Session": "s-" + uuid.uuid4().hex[:6]}
                auth = {"Authorization": f"Bearer {key}"}
                client.post(path, json=body, headers={**auth, **headers, **session})
                stop.wait(0.02)

    thread = threading.Thread(target=run, name="traffic", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def prometheus(metered: Gateway, load: None, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(derived_config(f"127.0.0.1:{metered.port}")))
    url = f"http://127.0.0.1:{free_port()}"
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _ready(url, proc), timeout_s=30, interval_s=0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, "prometheus exited; see prometheus.log in the test's tmp dir"
    try:
        return httpx.get(url + "/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def instant(url: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert body["status"] == "success", (expr, body)
    result = body["data"]["result"]
    if body["data"]["resultType"] == "scalar":
        return [{"metric": {}, "value": result}]
    return result


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


def test_every_dashboard_query_returns_data(prometheus):
    """Polls until each query has a finite value: rate() needs two scrapes in its window,
    the TCO gauges the projector's first pass over the ledger."""
    exprs = {q: interpolate(q.text, q.variables) for q in PROM_QUERIES}
    results: dict[Any, list[dict[str, Any]]] = {}

    def all_answered() -> bool:
        for query, expr in exprs.items():
            if not has_data(results.get(query, [])):
                results[query] = instant(prometheus, expr)
        return all(has_data(r) for r in results.values())

    try:
        wait_for(all_answered, timeout_s=45, interval_s=0.5)
    except AssertionError:
        empty = [f"{q}: {exprs[q]}" for q, r in results.items() if not has_data(r)]
        raise AssertionError("no data for:\n" + "\n".join(empty)) from None
    for query, result in results.items():
        for series in result:
            labels = series["metric"]
            assert not {"instance", "job"} & set(labels), f"{query} keeps replicas apart"
            for label in LEGEND_LABEL.findall(query.legend):
                assert label in labels, f"{query}: legend {{{{{label}}}}} not in {labels}"


def test_template_variables_list_the_scraped_values(prometheus):
    wait_for(lambda: instant(prometheus, "sum(tokenmeter_requests_total)"), timeout_s=30)
    for dashboard, var, text in variable_queries(PROMETHEUS):
        match = LABEL_VALUES.match(text)
        assert match, text
        selector, label = match.groups()
        selector = interpolate(selector, tuple(dashboards()[dashboard]["templating"]["list"]))
        r = httpx.get(
            f"{prometheus}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=10
        )
        assert r.json()["data"], (dashboard, var["name"])


def test_queries_are_valid_with_several_values_selected(prometheus):
    """Grafana writes a multi-value selection as an escaped regex alternation."""
    wait_for(lambda: instant(prometheus, "sum(tokenmeter_requests_total)"), timeout_s=30)
    values = {}
    for label in ("use_case", "backend", "model"):
        r = httpx.get(f"{prometheus}/api/v1/label/{label}/values", timeout=10)
        values[label] = regex_value(sorted(r.json()["data"])[:2])
    assert all(v.startswith("(") and "|" in v for v in values.values()), values
    for query in PROM_QUERIES:
        instant(prometheus, interpolate(query.text, query.variables, values))
