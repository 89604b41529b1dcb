"""The model catalogue used when the config names none: hosted Claude, Azure Mistral with a 5%
on-prem vLLM pilot, an on-prem TGI model and an embeddings model. Each deployment whose provider
key (or endpoint) is not in the environment runs on the built-in simulated backend."""

from __future__ import annotations

import os

from proxy.config.settings import DeploymentConfig, ModelConfig, ModelRouteConfig, Settings


def default_models() -> list[ModelConfig]:
    has_anthropic = bool(os.environ.get("ANTHROPIC_API_KEY"))
    azure_base = os.environ.get("AZURE_AI_ENDPOINT")
    has_azure = bool(os.environ.get("AZURE_AI_API_KEY") and azure_base)

    def claude(model: str) -> DeploymentConfig:
        return DeploymentConfig(
            backend="anthropic",
            model=model,
            api_key_env="ANTHROPIC_API_KEY",
            simulated=not has_anthropic,
        )

    return [
        ModelConfig(name="claude-sonnet", deployments=[claude("claude-sonnet-4-5")]),
        ModelConfig(name="claude-haiku", deployments=[claude("claude-haiku-4-5")]),
        ModelConfig(
            name="mistral-large",
            deployments=[
                DeploymentConfig(
                    backend="azure_mistral",
                    model="mistral-large-3",
                    api_base=azure_base if has_azure else None,
                    api_key_env="AZURE_AI_API_KEY",
                    weight=95,
                    simulated=not has_azure,
                ),
                DeploymentConfig(
                    backend="vllm",
                    model="mistralai/Mistral-Large-Instruct-2411",
                    weight=5,
                    simulated=True,
                ),
            ],
        ),
        ModelConfig(
            name="mistral-small",
            deployments=[
                DeploymentConfig(
                    backend="tgi", model="mistralai/Mistral-Small-24B-Instruct-2501", simulated=True
                ),
            ],
        ),
        ModelConfig(
            name="e5-mistral",
            deployments=[
                DeploymentConfig(
                    backend="vllm", model="intfloat/e5-mistral-7b-instruct", simulated=True
                ),
            ],
        ),
    ]


def effective_models(settings: Settings) -> list[ModelConfig]:
    """The configured models, or the default catalogue when the config names none."""
    return settings.models or default_models()


def effective_routes(settings: Settings) -> list[ModelRouteConfig]:
    """The configured pattern routes; with the default catalogue, Claude Code's own model ids
    (``claude-haiku-…`` for its small fast model, any other ``claude-…``) go to the Claude
    aliases with the client's name sent upstream."""
    if settings.models:
        return settings.model_routes
    return [
        *settings.model_routes,
        ModelRouteConfig(pattern="claude-haiku-*", model="claude-haiku"),
        ModelRouteConfig(pattern="claude-*", model="claude-sonnet"),
    ]


def auth_required(settings: Settings, models: list[ModelConfig]) -> bool:
    """Keys are required unless every backend is simulated (or the config says otherwise)."""
    if settings.auth.required is not None:
        return settings.auth.required
    return not all(d.simulated for m in models for d in m.deployments)
