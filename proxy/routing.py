"""Model aliases → deployments: where a request goes and how to address it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from urllib.parse import quote

from proxy.errors import ProxyError
from proxy.settings import ANTHROPIC_PUBLIC_API, DeploymentConfig, ModelConfig

ANTHROPIC_VERSION = "2023-06-01"  # pinned for requests we translate; native calls forward theirs


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream target of a model alias, with everything precomputed for the hot path."""

    alias: str
    name: str
    backend: str
    model: str
    api_base: str
    timeout_s: float
    weight: float
    on_prem: bool
    simulated: bool
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""

    @property
    def is_anthropic(self) -> bool:
        return self.backend == "anthropic"

    def url(self, path: str) -> str:
        """``path`` is ``/chat/completions``, ``/embeddings`` or ``/v1/messages...``."""
        return f"{self.api_base}{path}{self.query}"


def build_deployment(
    alias: str, cfg: DeploymentConfig, *, api_base: str | None = None
) -> Deployment:
    default_base = ANTHROPIC_PUBLIC_API if cfg.backend == "anthropic" else ""
    base = (api_base or cfg.api_base or default_base).rstrip("/")
    key = cfg.api_key()
    headers: dict[str, str] = {"content-type": "application/json"}
    query = ""
    if cfg.backend == "anthropic":
        base = base.removesuffix("/v1")
        if key:
            headers["x-api-key"] = key
    elif cfg.backend == "azure_mistral":
        query = f"?api-version={quote(cfg.api_version)}"
        # The service rejects unknown body fields by default; we forward OpenAI-only ones.
        headers["extra-parameters"] = "drop"
        if key:
            headers["api-key"] = key
    elif key:
        headers["authorization"] = f"Bearer {key}"
    return Deployment(
        alias=alias,
        name=cfg.name or f"{cfg.backend}/{cfg.model}",
        backend=cfg.backend,
        model=cfg.model,
        api_base=base,
        timeout_s=cfg.timeout_s,
        weight=cfg.weight,
        on_prem=cfg.is_on_prem,
        simulated=cfg.simulated,
        headers=headers,
        query=query,
    )


class Router:
    """Picks a deployment of an alias by weight."""

    def __init__(self, models: dict[str, list[Deployment]]) -> None:
        self._models = models
        self._weights = {name: [d.weight for d in deps] for name, deps in models.items()}

    @property
    def aliases(self) -> list[str]:
        return list(self._models)

    def deployments(self, alias: str) -> list[Deployment]:
        return self._models.get(alias, [])

    def pick(self, alias: object) -> Deployment:
        if not isinstance(alias, str) or not alias:
            raise ProxyError(400, "model is required", code="invalid_request")
        deps = self._models.get(alias)
        if not deps:
            raise ProxyError(
                404, f"model {alias!r} does not exist; see GET /v1/models", code="model_not_found"
            )
        if len(deps) == 1:
            return deps[0]
        return random.choices(deps, weights=self._weights[alias])[0]


def build_router(models: list[ModelConfig], api_bases: dict[tuple[str, int], str]) -> Router:
    """``api_bases`` overrides the base URL of deployments (alias, index): the simulated ones."""
    return Router(
        {
            m.name: [
                build_deployment(m.name, d, api_base=api_bases.get((m.name, i)))
                for i, d in enumerate(m.deployments)
            ]
            for m in models
        }
    )
