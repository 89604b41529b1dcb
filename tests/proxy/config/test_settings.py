"""The settings object: derived rules that several parts of the gateway read."""

from __future__ import annotations

import pytest

from cost.prices import ON_PREM_BACKENDS
from proxy.config.settings import ConfigError, DeploymentConfig, Settings, load_settings


def test_agents_map_to_their_use_case():
    settings = Settings(
        use_cases={"coding": {"agents": ["claude-code", "aider"]}, "rag": {"agents": ["kb"]}}
    )
    assert settings.agent_use_cases == {"claude-code": "coding", "aider": "coding", "kb": "rag"}


@pytest.mark.parametrize(
    "backend", ["anthropic", "azure_mistral", "vllm", "tgi", "openai_compatible"]
)
def test_on_prem_follows_the_backend_unless_the_deployment_says(backend):
    dep = DeploymentConfig(backend=backend, model="m", api_base="http://x")
    assert dep.is_on_prem is (backend in ON_PREM_BACKENDS)
    assert DeploymentConfig(backend=backend, model="m", on_prem=True).is_on_prem
    assert not DeploymentConfig(backend=backend, model="m", on_prem=False).is_on_prem


def test_environment_overrides_one_key_of_the_file(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("storage: {url: 'sqlite:///a.db'}\ntco: {interval_s: 5}\n")
    monkeypatch.setenv("TOKENMETER_TCO__INTERVAL_S", "7")
    settings = load_settings(path)
    assert settings.tco.interval_s == 7
    assert settings.storage.url == "sqlite:///a.db"


def test_an_unknown_key_is_refused_by_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("storage: {ulr: 'x'}\n")
    with pytest.raises(ConfigError, match=r"storage\.ulr"):
        load_settings(path)


def test_the_redis_url_of_rate_limits_comes_from_the_environment_as_a_secret(monkeypatch):
    monkeypatch.setenv("TOKENMETER_RATE_LIMITS__REDIS_URL", "redis://:pw@cache:6379/0")
    url = load_settings().rate_limits.redis_url
    assert url is not None and url.get_secret_value() == "redis://:pw@cache:6379/0"
    assert "pw" not in repr(load_settings().rate_limits)


def test_a_redis_url_without_a_scheme_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"rate_limits\.redis_url: must start with redis://"):
        load_settings(rate_limits={"redis_url": "cache:6379"})
