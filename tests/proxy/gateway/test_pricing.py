"""Requests priced at ingestion: config rules, unknown models, the `tokenmeter prices` table."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version

import openai
import pytest
import yaml

from tests.conftest import backend_models
from tests.support import Gateway


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory) -> Iterator[Gateway]:
    gw = Gateway(
        tmp_path_factory.mktemp("pricing") / "tm.db",
        {
            "models": backend_models(fakes),
            "pricing": {
                "rules": [
                    {
                        "model": "claude-sonnet-4-5",
                        "discount": "0.25",
                        "effective_from": "2020-01-01",
                    },
                    {
                        "model": "claude-sonnet-4-5",
                        "discount": "0.9",
                        "effective_from": "2999-01-01",
                    },
                ]
            },
        },
    ).start()
    yield gw
    gw.stop()


def ask(gateway, api_key, session_id, model):
    return openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Meter-Session": session_id},
    ).chat.completions.create(model=model, messages=[{"role": "user", "content": "price me"}])


def test_discount_in_force_is_applied_and_future_one_is_not(gateway, api_key, session_id):
    usage = ask(gateway, api_key, session_id, "claude").usage
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    list_cost = 3 * usage.prompt_tokens + 15 * usage.completion_tokens  # micro-dollars
    assert event["cost_micro_usd"] == round(list_cost * 0.75)


def test_unknown_model_is_recorded_as_unknown_cost_and_warned_once(
    gateway, api_key, session_id, caplog
):
    with caplog.at_level(logging.WARNING, logger="metering.ledger"):
        ask(gateway, api_key, session_id, "compat-model")
        ask(gateway, api_key, session_id, "compat-model")
        events = gateway.wait_events(2, "session = :s", s=session_id)
    assert [e["cost_micro_usd"] for e in events] == [None, None]
    assert caplog.text.count("no price for model 'some-model'") == 1


def test_prices_command_shows_keys_and_unknowns(fakes, tmp_path):
    config = tmp_path / "tm.yaml"
    config.write_text(
        yaml.safe_dump(
            {"models": backend_models(fakes), "storage": {"url": f"sqlite:///{tmp_path / 'x.db'}"}}
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "prices", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert out.splitlines()[0] == f"prices: litellm {version('litellm')}"
    assert "claude-sonnet-4-5" in lines["claude"] and "15.000" in lines["claude"]
    assert "azure_ai/mistral-large-3" in lines["azure-mistral"]
    assert "on-prem" in lines["vllm-model"]
    assert "UNKNOWN" in lines["compat-model"]
