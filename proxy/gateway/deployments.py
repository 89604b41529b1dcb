"""Model aliases → deployments: where a request goes and how to address it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import translate
from urllib.parse import quote

from proxy.config.settings import (
    ANTHROPIC_PUBLIC_API,
    DeploymentConfig,
    ModelConfig,
    ModelRouteConfig,
)
from proxy.gateway.balancer import Breaker, SmoothWeighted, monotonic, rendezvous
from proxy.gateway.errors import ProxyError
from proxy.gateway.redaction import Redactor

ANTHROPIC_VERSION = "2023-06-01"
UNKNOWN_SESSION = "unknown"  # pinned for requests we translate; native calls forward theirs


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
    native_messages: bool = False
    stream_idle_timeout_s: float | None = None
    redactor: Redactor = field(
        default_factory=lambda: Redactor((), ()), compare=False, hash=False, repr=False
    )

    @property
    def speaks_messages(self) -> bool:
        """Anthropic Messages requests go through as they are (else: translated to Chat)."""
        return self.backend == "anthropic" or self.native_messages

    @property
    def messages_path(self) -> str:
        # OpenAI-shaped bases end in /v1 (chat is {base}/chat/completions); Anthropic's do not.
        return "/v1/messages" if self.backend == "anthropic" else "/messages"

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
        native_messages=cfg.native_messages and cfg.backend != "anthropic",
        stream_idle_timeout_s=cfg.stream_idle_timeout_s,
        redactor=Redactor.for_upstream(cfg.name or f"{cfg.backend}/{cfg.model}", base, headers),
    )


@dataclass(frozen=True, slots=True)
class PatternRoute:
    """``claude-*`` → an alias; ``send_client`` puts the client's name on its anthropic
    deployments (an OpenAI-shaped server knows only its own model name)."""

    pattern: str
    alias: str
    send_client: bool
    regex: re.Pattern[str]

    @classmethod
    def of(cls, cfg: ModelRouteConfig) -> PatternRoute:
        return cls(
            cfg.pattern, cfg.model, cfg.send_model == "client", re.compile(translate(cfg.pattern))
        )


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    sticky_sessions: bool = False
    max_attempts: int = 2


class Router:
    """Orders the deployments of an alias for one request: the chosen one first, then the
    fallbacks by weight. Breakers are per deployment name and survive config reloads."""

    def __init__(
        self,
        models: dict[str, list[Deployment]],
        policies: dict[str, RoutePolicy] | None = None,
        breakers: dict[str, Breaker] | None = None,
        *,
        failures_to_open: int = 5,
        cooldown_s: float = 30.0,
        routes: Sequence[PatternRoute] = (),
        model_aliases: Mapping[str, str] | None = None,
    ) -> None:
        self._models = models
        self._routes = [r for r in routes if r.alias in models]
        self._names = {k: v for k, v in (model_aliases or {}).items() if v in models}
        self._policies = policies or {}
        self._balancers = {alias: SmoothWeighted(len(deps)) for alias, deps in models.items()}
        self.breakers = breakers if breakers is not None else {}
        for deps in models.values():
            for d in deps:
                self.breakers.setdefault(d.name, Breaker(failures_to_open, cooldown_s))
        self.redactor = Redactor.for_deployments(d for deps in models.values() for d in deps)

    @property
    def aliases(self) -> list[str]:
        return list(self._models)

    @property
    def model_names(self) -> list[str]:
        """Every exact name a client may send: the aliases, then the alias table's names."""
        return [*self._models, *(n for n in self._names if n not in self._models)]

    @property
    def patterns(self) -> list[str]:
        return [r.pattern for r in self._routes]

    def resolve(self, name: str) -> tuple[str, str | None] | None:
        """(the alias that serves ``name``, the model name to send its anthropic deployments
        instead of theirs, if any); None when nothing matches."""
        if name in self._models:
            return name, None
        alias = self._names.get(name)
        if alias is not None:
            return alias, None
        for route in self._routes:
            if route.regex.match(name):
                return route.alias, name if route.send_client else None
        return None

    def not_found(self, name: str) -> ProxyError:
        listed = ", ".join(self.model_names) or "none"
        patterns = f" and names matching {', '.join(self.patterns)}" if self._routes else ""
        return ProxyError(
            404,
            f"model {name!r} does not exist; configured models: {listed}{patterns} "
            "(GET /v1/models)",
            code="model_not_found",
        )

    def deployments(self, alias: str) -> list[Deployment]:
        return self._models.get(alias, [])

    def candidates(self, alias: object, *, session: str | None = None) -> list[Deployment]:
        """Deployments to try in order, at most the alias's ``max_attempts``."""
        if not isinstance(alias, str) or not alias:
            raise ProxyError(400, "model is required", code="invalid_request")
        resolved = self.resolve(alias)
        if resolved is None:
            raise self.not_found(alias)
        target, client_model = resolved
        chosen = self._choose(target, session)
        if client_model is None:
            return chosen
        return [replace(d, model=client_model) if d.is_anthropic else d for d in chosen]

    def _choose(self, alias: str, session: str | None) -> list[Deployment]:
        deps = self._models[alias]
        policy = self._policies.get(alias, RoutePolicy())
        if len(deps) == 1:
            return deps
        now = monotonic()
        breakers = [self.breakers[d.name] for d in deps]
        allowed = [b.available(now) for b in breakers]
        if not any(allowed):  # everything is failing: trying beats refusing
            allowed = [True] * len(deps)
        if policy.sticky_sessions and session and session != UNKNOWN_SESSION:
            first = rendezvous(session, [d.name for d in deps], [d.weight for d in deps], allowed)
        else:
            weights = [d.weight * b.weight_factor(now) for d, b in zip(deps, breakers, strict=True)]
            first = self._balancers[alias].pick(weights, allowed)
        rest = sorted(
            (i for i in range(len(deps)) if i != first),
            key=lambda i: (not allowed[i], -deps[i].weight),
        )
        return [deps[i] for i in [first, *rest][: policy.max_attempts]]

    def begin(self, dep: Deployment) -> None:
        self.breakers[dep.name].begin(monotonic())

    def record(self, dep: Deployment, *, ok: bool) -> None:
        self.breakers[dep.name].record(ok, monotonic())

    def release(self, dep: Deployment) -> None:
        self.breakers[dep.name].release()


def build_router(
    models: list[ModelConfig],
    api_bases: dict[tuple[str, int], str],
    *,
    breakers: dict[str, Breaker] | None = None,
    failures_to_open: int = 5,
    cooldown_s: float = 30.0,
    routes: Sequence[ModelRouteConfig] = (),
    model_aliases: Mapping[str, str] | None = None,
) -> Router:
    """``api_bases`` overrides the base URL of deployments (alias, index): the simulated ones.
    Passing the previous router's ``breakers`` keeps their state across a config reload."""
    return Router(
        {
            m.name: [
                build_deployment(m.name, d, api_base=api_bases.get((m.name, i)))
                for i, d in enumerate(m.deployments)
            ]
            for m in models
        },
        {m.name: RoutePolicy(m.sticky == "session", m.max_attempts) for m in models},
        breakers,
        failures_to_open=failures_to_open,
        cooldown_s=cooldown_s,
        routes=[PatternRoute.of(r) for r in routes],
        model_aliases=model_aliases,
    )
