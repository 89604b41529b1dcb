"""The pilot report agrees with the events, the pricing and the TCO projection."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.support import Gateway, wait_for


def models(fakes) -> list[dict]:
    return [
        {
            "name": "pilot-model",
            "deployments": [
                {
                    "backend": "azure_mistral",
                    "model": "mistral-large-3",
                    "weight": 90,
                    "api_base": fakes["azure"].url + "/models",
                    "api_key_env": "TM_TEST_AZURE_KEY",
                },
                {
                    "backend": "vllm",
                    "model": "mistralai/Mistral-Large-Instruct-2411",
                    "weight": 10,
                    "api_base": fakes["vllm"].url + "/v1",
                    "api_key_env": "TM_TEST_VLLM_KEY",
                },
            ],
        }
    ]


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory) -> Iterator[Gateway]:
    gw = Gateway(
        tmp_path_factory.mktemp("compare") / "tm.db",
        {"models": models(fakes), "tco": {"interval_s": 0.2, "min_requests": 1, "min_window_s": 0}},
    ).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def report(gateway, api_key) -> dict:
    for i in range(100):
        text = "[[fake:status=400]]" if i % 25 == 7 else "word " * (5 + i % 7)
        httpx.post(
            gateway.url + "/v1/chat/completions",
            timeout=30,
            json={
                "model": "pilot-model",
                "stream": i % 2 == 0,
                "messages": [{"role": "user", "content": text}],
            },
            headers={"Authorization": f"Bearer {api_key}"},
        )
    gateway.wait_events(100)
    wait_for(
        lambda: (
            httpx.get(gateway.url + "/admin/tco", headers=gateway.admin_headers).json()["window"][
                "requests"
            ]
            == 100
        )
    )
    r = httpx.get(
        gateway.url + "/admin/compare",
        params={"model": "pilot-model"},
        headers=gateway.admin_headers,
    )
    r.raise_for_status()
    return r.json()


def rows_by_deployment(report: dict) -> dict[str, dict]:
    return {r["deployment"]: r for r in report["deployments"]}


def test_latency_and_error_rates_equal_the_events(gateway, report):
    for name, row in rows_by_deployment(report).items():
        events = gateway.events("deployment = :d", d=name)
        ok = sorted(e["latency_s"] for e in events if e["status"] == "ok")
        assert row["requests"] == len(events)
        assert row["error_rate"] == pytest.approx(1 - len(ok) / len(events))
        for q in (50, 95, 99):
            expected = statistics.quantiles(ok, n=100, method="inclusive")[q - 1]
            assert row["latency_s"][f"p{q}"] == pytest.approx(expected)


def test_hosted_cost_per_1k_tokens_matches_the_price(gateway, report):
    row = rows_by_deployment(report)["azure_mistral/mistral-large-3"]
    events = gateway.events("deployment = :d", d="azure_mistral/mistral-large-3")
    inp = sum(e["input_tokens"] for e in events)
    out = sum(e["output_tokens"] for e in events)
    list_usd = (inp * 0.5 + out * 1.5) / 1e6  # Azure Mistral Large 3: $0.50 / $1.50 per M
    assert row["hosted_usd_per_1k_tokens"] == pytest.approx(list_usd / (inp + out) * 1000, rel=1e-2)


def test_onprem_cost_per_1k_tokens_comes_from_the_tco_model(gateway, report):
    tco = httpx.get(gateway.url + "/admin/tco", headers=gateway.admin_headers).json()
    row = rows_by_deployment(report)["vllm/mistralai/Mistral-Large-Instruct-2411"]
    p = tco["pilot"]
    assert row["onprem_usd_per_1k_tokens_target"] == pytest.approx(p["usd_per_m_target"] / 1000)
    assert row["onprem_usd_per_1k_tokens_measured"] > row["onprem_usd_per_1k_tokens_target"]


def test_cli_report_matches_the_api(gateway, fakes, report, tmp_path):
    config = tmp_path / "tm.yaml"
    config.write_text(yaml.safe_dump({"models": models(fakes), "storage": {"url": gateway.db_url}}))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "compare",
            "--model",
            "pilot-model",
            "--json",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    cli = rows_by_deployment(json.loads(out))
    for name, row in rows_by_deployment(report).items():
        assert cli[name]["latency_s"] == row["latency_s"]
        assert cli[name]["error_rate"] == row["error_rate"]
