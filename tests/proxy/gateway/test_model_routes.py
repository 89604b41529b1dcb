"""Model names clients pick by themselves: pattern routes and the alias table, through both
SDKs; what goes upstream and how it is priced; GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from proxy.config.catalogue import effective_models, effective_routes
from proxy.config.settings import ConfigError, load_settings
from proxy.gateway.deployments import build_router
from proxy.simulated import FakeServer
from tests.conftest import backend_models
from tests.support import Gateway

ROUTES = [
    {"pattern": "claude-haiku-*", "model": "claude", "send_model": "alias"},
    {"pattern": "claude-*", "model": "claude"},
    {"pattern": "mistral-*", "model": "vllm-model"},
]
ALIASES = {"claude-sonnet-4-5-20250929": "claude", "sonnet": "claude"}


@pytest.fixture(scope="module")
def gw(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {"models": backend_models(fakes), "model_routes": ROUTES, "model_aliases": ALIASES}
    gateway = Gateway(tmp_path_factory.mktemp("routes") / "tokenmeter.db", config).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.create_key(user="dev")


def ask(gw: Gateway, key: str, model: str) -> tuple[anthropic.types.Message, dict[str, Any]]:
    session = "s-" + uuid.uuid4().hex[:12]
    c = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    msg = c.messages.create(
        model=model,
        max_tokens=20,
        messages=[{"role": "user", "content": "one two three four five"}],
        extra_headers={"X-Meter-Session": session},
    )
    [event] = gw.wait_events(1, "session = :s", s=session)
    return msg, event


@pytest.mark.parametrize(
    ("model", "upstream"),
    [
        ("claude-opus-4-5-20251101", "claude-opus-4-5-20251101"),  # pattern, client's name
        ("claude-haiku-4-5-20251001", "claude-sonnet-4-5"),  # pattern, the alias's name
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),  # alias table
        ("sonnet", "claude-sonnet-4-5"),
        ("claude", "claude-sonnet-4-5"),  # the alias itself
    ],
)
def test_client_model_names_resolve(gw, fakes, key, model, upstream):
    msg, event = ask(gw, key, model)
    assert msg.model == fakes["anthropic"].requests[-1].body["model"] == upstream
    assert (event["model"], event["upstream_model"], event["backend"]) == (
        model,
        upstream,
        "anthropic",
    )
    assert event["cost_micro_usd"] > 0


def test_client_name_prices_the_request(gw, key):
    _, opus = ask(gw, key, "claude-opus-4-5-20251101")
    _, sonnet = ask(gw, key, "claude")
    assert (opus["input_tokens"], opus["output_tokens"]) == (
        sonnet["input_tokens"],
        sonnet["output_tokens"],
    )
    assert opus["cost_micro_usd"] > sonnet["cost_micro_usd"]  # Opus lists above Sonnet


def test_pattern_to_an_openai_shaped_alias_keeps_its_model_name(gw, fakes, key):
    _, event = ask(gw, key, "mistral-large-latest")
    assert fakes["vllm"].requests[-1].body["model"] == "mistralai/Mistral-7B-Instruct-v0.3"
    assert (event["model"], event["backend"]) == ("mistral-large-latest", "vllm")


def test_patterns_apply_to_chat_completions_too(gw, fakes, key):
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    resp = c.chat.completions.create(
        model="claude-opus-4-5-20251101", messages=[{"role": "user", "content": "hi"}]
    )
    assert resp.choices[0].message.content
    assert fakes["anthropic"].requests[-1].body["model"] == "claude-opus-4-5-20251101"


def test_unknown_model_is_404_naming_the_models_in_both_shapes(gw, key):
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as exc:
        c.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    message = exc.value.response.json()["error"]["message"]
    for name in ("'gpt-9'", "vllm-model", "claude", "sonnet", "claude-*"):
        assert name in message
    a = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as aexc:
        a.messages.create(model="gpt-9", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    body = aexc.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "vllm-model" in body["error"]["message"]


def test_models_list_names_aliases_and_the_alias_table(gw, fakes, key):
    expected = [m["name"] for m in backend_models(fakes)] + list(ALIASES)
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    assert [m.id for m in c.models.list()] == expected
    a = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    assert [m.id for m in a.models.list()] == expected


@pytest.mark.parametrize("name", ["claude", "sonnet", "claude-opus-4-5", "mistral-small-x"])
def test_models_retrieve_answers_every_resolvable_name(gw, key, name):
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    assert c.models.retrieve(name).id == name
    a = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    assert a.models.retrieve(name).id == name


def test_models_retrieve_unknown_is_404_in_the_callers_shape(gw, key):
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-9")
    r = httpx.get(
        gw.url + "/v1/models/gpt-9", headers={"x-api-key": key, "anthropic-version": "2023-06-01"}
    )
    assert r.status_code == 404 and r.json()["type"] == "error"


def test_models_endpoints_need_a_key(gw):
    assert httpx.get(gw.url + "/v1/models").status_code == 401
    assert httpx.get(gw.url + "/v1/models/claude").status_code == 401


@pytest.mark.parametrize(
    "config",
    [
        {"model_routes": [{"pattern": "claude-*", "model": "nope"}]},
        {"model_aliases": {"sonnet": "nope"}},
        {"model_routes": [{"pattern": "claude-*", "model": "m", "send_model": "upstream"}]},
    ],
    ids=["route-to-unknown", "alias-to-unknown", "bad-send_model"],
)
def test_bad_routes_are_config_errors(config):
    models = [{"name": "m", "deployments": [{"backend": "anthropic", "model": "claude-x"}]}]
    with pytest.raises(ConfigError, match="model_"):
        load_settings(models=models, **config)


@pytest.mark.parametrize(
    ("name", "alias", "sent"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet", "claude-sonnet-4-5-20250929"),
        ("claude-opus-4-5-20251101", "claude-sonnet", "claude-opus-4-5-20251101"),
        ("claude-haiku-4-5-20251001", "claude-haiku", "claude-haiku-4-5-20251001"),
        ("mistral-large", "mistral-large", None),
    ],
)
def test_default_catalogue_routes_claude_code_ids(name, alias, sent):
    settings = load_settings()
    router = build_router(effective_models(settings), {}, routes=effective_routes(settings))
    assert router.resolve(name) == (alias, sent)
    [dep] = [d for d in router.candidates(name) if d.is_anthropic] or [None]
    if sent is not None:
        assert dep is not None and dep.model == sent
