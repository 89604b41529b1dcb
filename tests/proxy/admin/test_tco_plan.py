"""End to end through the live gateway: a negotiated discount and a two-model migration plan.

Claude coding moves to Devstral 2 on bought H200 nodes, RAG on Azure Mistral to Mistral Small on
rented H100s, the rest stays hosted at its real (metered) price; /admin/tco, `tokenmeter tco`,
the month's export and /metrics all say the same verdict.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import openai
import pytest
import yaml

from metering.export.month import Month, build_month_export
from metering.export.tco_sheet import tco_verdict
from tests.conftest import backend_models
from tests.support import Gateway, wait_for

CLAUDE_LIST = {"input": 3.0, "output": 15.0}  # $/M, claude-sonnet-4-5 in the price map
DISCOUNT = 0.2
TCO = {
    "interval_s": 0.2,
    "min_requests": 1,
    "min_window_s": 0,
    "growth_per_month": 0.05,
    "migration": [
        {"name": "coding", "models": ["claude"], "gpu": "h200-node", "model": "devstral-2"},
        {
            "name": "rag",
            "use_cases": ["rag"],
            "gpu": "h100-node",
            "model": "mistral-small",
            "acquire": "rent",
            "pilots": ["tgi-model"],  # the on-prem TGI already serves Mistral Small
        },
    ],
}


def config(fakes, **extra) -> dict:
    return {
        "models": backend_models(fakes),
        "use_cases": {"coding": {"agents": ["vibe"]}, "rag": {"agents": ["kb-search"]}},
        "pricing": {"rules": [{"model": "claude-sonnet-4-5", "discount": str(DISCOUNT)}]},
        "tco": TCO,
        **extra,
    }


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("tco-plan") / "tm.db", config(fakes)).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def projected(gateway, api_key) -> dict:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)
    traffic = [("claude", "vibe")] * 4 + [("azure-mistral", "kb-search")] * 3
    traffic += [("azure-mistral", "triage"), ("vllm-model", "vibe"), ("tgi-model", "kb-search")]
    for i, (model, agent) in enumerate(traffic):
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "word " * (20 + i) + "[[fake:words=60]]"}],
            extra_headers={"X-Meter-Agent": agent},
        )
    return wait_for(
        lambda: (b := tco(gateway))["status"] == "ok" and b["window"]["requests"] == 10 and b
    )


def tco(gateway: Gateway) -> dict:
    r = httpx.get(gateway.url + "/admin/tco", headers=gateway.admin_headers)
    r.raise_for_status()
    return r.json()


def test_hosted_today_is_the_metered_bill_after_the_discount(gateway, projected):
    hosted = gateway.events("on_prem = :p", p=False)
    scale = projected["window"]["extrapolation_factor"]
    billed = sum(e["cost_micro_usd"] or 0 for e in hosted) / 1e6
    assert projected["projection"]["hosted_usd_per_month"] == pytest.approx(scale * billed)
    claude = [e for e in hosted if e["model"] == "claude"]
    at_list = sum(
        e["input_tokens"] * CLAUDE_LIST["input"] + e["output_tokens"] * CLAUDE_LIST["output"]
        for e in claude
    )
    [price] = [m for m in projected["projection"]["hosted_models"] if m["model"] == "claude"]
    assert price["list_usd_per_month"] == pytest.approx(scale * at_list / 1e6, rel=1e-4)
    # each small request's bill is rounded to whole micro-dollars, the list price is not
    discounted = (1 - DISCOUNT) * price["list_usd_per_m"]
    assert price["bill_usd_per_m"] == pytest.approx(discounted, rel=1e-3)


def test_two_targets_sized_separately_and_the_rest_stays_hosted(projected):
    p = projected["projection"]
    coding, rag = p["targets"]
    assert [s["model"] for s in coding["slices"]] == ["claude"]
    assert {s["use_case"] for s in rag["slices"]} == {"rag"}
    assert [s["use_case"] for s in p["staying"]] == ["unknown"]  # triage has no use case
    assert p["staying_usd_per_month"] == pytest.approx(p["staying"][0]["bill_usd_per_month"])
    assert coding["sized"]["sizing"]["gpus_per_replica"] == 2  # 123B FP8 × 2 on 141 GB
    assert rag["sized"]["sizing"]["gpus_per_replica"] == 1
    assert coding["sized"]["onprem"]["capex_usd"] > 0
    assert (
        rag["sized"]["onprem"]["capex_usd"] == 0
        and rag["sized"]["onprem"]["rent_usd_per_month"] > 0
    )
    assert coding["break_even"]["growth_per_month"] == 0.05


def test_every_input_is_in_the_answer_with_its_provenance(projected):
    assert projected["price_map"].startswith("litellm ")
    coding, rag = projected["inputs"]["targets"]
    assert coding["plan"]["vram_gb_per_gpu"] == 141.0 and rag["plan"]["rent_usd_per_gpu_hour"] > 0
    vram = coding["provenance"]["vram_gb_per_gpu"]
    assert vram["kind"] == "list" and vram["sources"] == ["https://huggingface.co/hardware/h200"]
    assert projected["window"]["peak_input_tokens_per_s"] > 0


def test_missing_and_deprecated_price_keys_are_warnings_naming_them(projected):
    warnings = "\n".join(projected["warnings"])
    assert "'openai_compatible/some-model': no entry in the price map" in warnings
    assert "'claude-sonnet-4-5', which the price map marks deprecated since 2026-11-30" in warnings


def test_the_verdict_is_one_sentence_everywhere(gateway, fakes, projected, tmp_path):
    verdict = projected["verdict"]
    assert verdict.startswith(("On-prem pays off in month", "Hosted stays cheaper"))
    assert verdict.count(". ") == 0 and verdict.endswith(".")
    path = tmp_path / "tm.yaml"
    path.write_text(yaml.safe_dump(config(fakes, storage={"url": gateway.db_url})))
    command = [sys.executable, "-m", "proxy", "tco", "--config", str(path)]
    text = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    assert text.splitlines()[1] == verdict
    cli = json.loads(
        subprocess.run(
            [*command, "--json"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )
    assert cli["verdict"] == verdict
    now = datetime.now(UTC)
    from proxy.cli.common import tco_inputs
    from proxy.config.settings import load_settings

    export = build_month_export(
        gateway.engine, Month(now.year, now.month), tco=tco_inputs(load_settings(path))
    )
    assert export.tco is not None and export.tco.projection is not None
    assert tco_verdict(export.tco).startswith(("On-prem pays off in month", "Hosted stays"))
    metrics = httpx.get(gateway.url + "/metrics").text
    assert f'tokenmeter_tco_verdict_info{{verdict="{verdict}"}} 1.0' in metrics
    for target in ("coding", "rag"):
        assert f'tokenmeter_tco_gpus_needed{{target="{target}"}}' in metrics


@pytest.mark.parametrize(
    ("target", "says"),
    [
        (
            {"name": "x", "gpu": "h300-node", "model": "devstral-2"},
            "unknown gpu preset 'h300-node'",
        ),
        ({"name": "x", "gpu": "h100-node", "model": "mistral-large-3"}, "877.5 GB does not fit"),
        ({"name": "x", "gpu": "h200-node"}, "give a scenario, or a gpu and a model"),
        ({"name": "x", "scenario": "small-team-rtx4090", "overrides": {"gpus": 2}}, "gpus"),
        ({"name": "x", "gpu": "b200-node", "model": "devstral-2", "acquire": "lease"}, "acquire"),
    ],
)
def test_a_bad_migration_target_is_a_config_error_naming_it(tmp_path, target, says):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"tco": {"migration": [target]}}))
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "tco", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr


def test_each_pilot_is_costed_on_the_plan_of_the_target_it_pilots(gateway, projected):
    """TGI (Mistral Small) on the rag target's rented H100; vLLM, piloting nothing, on the first
    target's plan: not one plan's figures for every on-prem leg."""
    from cost.capacity import capacity_tokens_per_month, gpus_per_replica, onprem_monthly_cost
    from cost.presets import target_scenario

    pilots = projected["pilots"]
    [tgi] = [name for name in pilots if name.startswith("tgi/")]
    [vllm] = [name for name in pilots if name.startswith("vllm/")]
    plan = target_scenario(gpu="h100-node", model="mistral-small", acquire="rent").plan
    events = gateway.events("deployment = :d", d=tgi)
    tokens_in = sum(e["input_tokens"] for e in events)
    share = tokens_in / sum(e["input_tokens"] + e["output_tokens"] for e in events)
    gpus = gpus_per_replica(plan)
    cap = capacity_tokens_per_month(plan, gpu_count=gpus, input_share=share)
    monthly = onprem_monthly_cost(plan, gpu_count=gpus).total_usd_per_month
    expected = monthly / (cap * plan.target_utilization) * 1e6
    assert pilots[tgi]["usd_per_m_target"] == pytest.approx(expected)
    assert pilots[vllm]["usd_per_m_target"] != pytest.approx(expected)
