"""The default catalogue, and the rules that follow from the models in force."""

from __future__ import annotations

import pytest

from proxy.config.catalogue import auth_required, default_models, effective_models
from proxy.config.settings import DeploymentConfig, ModelConfig, Settings

PROVIDER_ENV = ("ANTHROPIC_API_KEY", "AZURE_AI_API_KEY", "AZURE_AI_ENDPOINT")


@pytest.fixture
def no_provider_keys(monkeypatch):
    for name in PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)


def real(name: str) -> ModelConfig:
    dep = DeploymentConfig(backend="vllm", model=name, api_base="http://gpu:8000/v1")
    return ModelConfig(name=name, deployments=[dep])


def test_without_provider_keys_every_default_deployment_is_simulated(no_provider_keys):
    deployments = [d for m in default_models() for d in m.deployments]
    assert deployments and all(d.simulated for d in deployments)


def test_an_anthropic_key_makes_the_claude_deployments_real(no_provider_keys, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    claude = [d for m in default_models() for d in m.deployments if d.backend == "anthropic"]
    assert claude and not any(d.simulated for d in claude)


def test_configured_models_replace_the_default_catalogue(no_provider_keys):
    assert effective_models(Settings(models=[real("m")])) == [real("m")]
    assert effective_models(Settings()) == default_models()


@pytest.mark.parametrize(
    ("required", "models", "expected"),
    [
        (None, None, False),  # every default deployment simulated: open mode
        (None, [real("m")], True),  # a real backend: keys required
        (True, None, True),
        (False, [real("m")], False),  # the operator's word wins
    ],
)
def test_keys_are_required_unless_every_backend_is_simulated(
    no_provider_keys, required, models, expected
):
    settings = Settings(auth={"required": required}, models=models or [])
    assert auth_required(settings, effective_models(settings)) is expected
