"""Traffic through the fakes shows up in the live projection within one projector interval."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest
import yaml

from tests.conftest import backend_models
from tests.support import Gateway, wait_for

AZURE_LARGE_3 = {"input": 0.5, "output": 1.5}  # $/M list of the azure-mistral deployment
ENOUGH = {"min_requests": 1, "min_window_s": 0}  # this module's few requests are enough


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory) -> Iterator[Gateway]:
    gw = Gateway(
        tmp_path_factory.mktemp("tco") / "tm.db",
        {
            "models": backend_models(fakes),
            "use_cases": {"coding": {"agents": ["vibe"]}},
            "tco": {"scenario": "enterprise-h100", "interval_s": 0.2, **ENOUGH},
        },
    ).start()
    yield gw
    gw.stop()


def tco(gateway: Gateway) -> dict:
    r = httpx.get(gateway.url + "/admin/tco", headers=gateway.admin_headers)
    r.raise_for_status()
    return r.json()


def test_projection_says_no_traffic_before_any_request(gateway):
    body = tco(gateway)
    assert body["status"] == "no_traffic" and "no traffic" in body["message"]


def test_traffic_is_projected_within_one_interval(gateway, api_key):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)
    for i in range(6):
        client.chat.completions.create(
            model="vllm-model" if i % 3 == 0 else "azure-mistral",
            messages=[{"role": "user", "content": "word " * (10 + i) + "[[fake:words=40]]"}],
            extra_headers={"X-Meter-Agent": "vibe" if i % 2 else "kb-search"},
        )
    body = wait_for(
        lambda: (b := tco(gateway))["status"] == "ok" and b["window"]["requests"] == 6 and b
    )
    # Hosted today is the metered bill of the hosted traffic (no rules here: the list price).
    hosted_events = gateway.events("on_prem = :p", p=False)
    scale = body["window"]["extrapolation_factor"]
    projection = body["projection"]
    billed = sum(e["cost_micro_usd"] or 0 for e in hosted_events) / 1e6
    assert projection["hosted_usd_per_month"] == pytest.approx(scale * billed, rel=1e-9)
    at_list = sum(
        e["input_tokens"] * AZURE_LARGE_3["input"] + e["output_tokens"] * AZURE_LARGE_3["output"]
        for e in hosted_events
    )
    assert projection["hosted_list_usd_per_month"] == pytest.approx(scale * at_list / 1e6)
    [target] = projection["targets"]
    assert {s["use_case"] for s in target["slices"]} == {e["use_case"] for e in hosted_events}
    assert body["pilot"]["utilization_measured"] > 0  # the vLLM leg is on-prem


def test_cli_json_matches_the_api(gateway, fakes, tmp_path):
    wait_for(lambda: tco(gateway)["status"] == "ok")
    config = tmp_path / "tm.yaml"
    config.write_text(
        yaml.safe_dump(
            {"models": backend_models(fakes), "storage": {"url": gateway.db_url}, "tco": ENOUGH}
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "tco", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    cli = json.loads(out)
    api = tco(gateway)
    assert cli["status"] == "ok"
    assert cli["window"]["requests"] == api["window"]["requests"]
    assert cli["projection"]["targets"][0]["sized"] == api["projection"]["targets"][0]["sized"]
    assert cli["verdict"] == api["verdict"] and cli["price_map"] == api["price_map"]


def test_unknown_scenario_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tco: {scenario: moon-base}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "tco", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "tco" in proc.stderr and "moon-base" in proc.stderr
