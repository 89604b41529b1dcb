"""One settings object: YAML file (optional) overlaid by ``TOKENMETER_*`` environment variables.

Environment wins over the file, so a container can override one key of a mounted config. Nested
keys use a double underscore: ``TOKENMETER_STORAGE__URL=postgresql+psycopg://...``.
"""

from __future__ import annotations

import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from cost.prices import ON_PREM_BACKENDS
from proxy.config.observability import RequestLogSettings, TracingSettings

Backend = Literal["anthropic", "azure_mistral", "vllm", "tgi", "openai_compatible"]

ANTHROPIC_PUBLIC_API = "https://api.anthropic.com"
DEFAULT_TIMEOUT_S = 600.0  # long generations of large models take minutes
# Anthropic sends a ping event every few seconds and vLLM/TGI a chunk per token; minutes without a
# line is a stuck upstream (or one dripping bytes), not a slow one.
DEFAULT_STREAM_IDLE_TIMEOUT_S = 120.0
DEFAULT_AZURE_API_VERSION = "2024-05-01-preview"  # what the azure-ai-inference SDKs send
# A loopback or same-zone Redis answers in well under 1 ms (docs/governance.md); 50 ms is a
# store in trouble, and the request is then decided without it.
DEFAULT_REDIS_TIMEOUT_S = 0.05
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")  # what redis-py's from_url reads


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeploymentConfig(_Strict):
    backend: Backend
    model: str = Field(min_length=1, description="model name sent to the upstream")
    api_base: str | None = None
    api_key_env: str | None = None
    api_version: str = DEFAULT_AZURE_API_VERSION
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    stream_idle_timeout_s: float = Field(
        default=DEFAULT_STREAM_IDLE_TIMEOUT_S,
        gt=0,
        description="end a stream (metered, error event to the client) after this long without "
        "a complete line from the upstream",
    )
    weight: float = Field(default=1.0, ge=0)
    on_prem: bool | None = None
    simulated: bool = False
    name: str | None = None
    native_messages: bool = Field(
        default=False,
        description="the server speaks Anthropic Messages itself (vLLM >= 0.11): forward "
        "/v1/messages requests as they are instead of translating them to Chat Completions",
    )
    price_key: str | None = Field(
        default=None, description="price-map key; derived from backend and model when not set"
    )

    @property
    def is_on_prem(self) -> bool:
        if self.on_prem is not None:
            return self.on_prem
        return self.backend in ON_PREM_BACKENDS

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    deployments: list[DeploymentConfig] = Field(min_length=1)
    sticky: Literal["none", "session"] = Field(
        default="none", description="session: one conversation stays on one deployment"
    )
    max_attempts: int = Field(
        default=2, ge=1, le=5, description="deployments tried per request, fallbacks included"
    )


class ModelRouteConfig(_Strict):
    """Model names that clients pick by themselves (Claude Code's ids), matched by a glob."""

    pattern: str = Field(min_length=1, description="glob on the client's model name: claude-*")
    model: str = Field(min_length=1, description="the configured model alias that serves it")
    send_model: Literal["client", "alias"] = Field(
        default="client",
        description="client: the client's model name goes to the alias's anthropic deployments "
        "(and prices the request); alias: every deployment gets its own configured name",
    )


class RoutingSettings(_Strict):
    """The passive circuit breaker of every deployment."""

    failures_to_open: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)


class UseCaseConfig(_Strict):
    agents: list[str] = Field(default_factory=list)


class StorageSettings(_Strict):
    url: str = "sqlite:///./tokenmeter.db"
    batch_max_events: int = Field(default=1000, gt=0)
    flush_interval_s: float = Field(default=0.2, gt=0)
    journal: bool = Field(default=True, description="off only for benchmarks: loses on a crash")
    journal_dir: str = "./tokenmeter-journal"
    fsync: Literal["none", "interval", "always"] = "none"
    fsync_interval_s: float = Field(default=1.0, gt=0)
    on_journal_error: Literal["reject", "serve"] = Field(
        default="reject",
        description="reject: answer 503 while the journal is unwritable; serve: keep serving, "
        "holding events in memory (lost if the process dies before the database takes them)",
    )
    retention_days: int | None = Field(default=None, gt=0)
    ledger: Literal["process", "inline"] = Field(
        default="process",
        description="process: the serving processes only append to the journal and a ledger "
        "process (started by serve; `tokenmeter ledger run`) moves it into the database; "
        "inline: each serving process writes the database itself (always so without a journal)",
    )

    @property
    def ledger_process(self) -> bool:
        return self.journal and self.ledger == "process"


class AuthSettings(_Strict):
    admin_key: SecretStr | None = None
    required: bool | None = Field(
        default=None,
        description="require a virtual key; default: yes unless every backend is simulated",
    )
    refresh_interval_s: float = Field(default=0.25, gt=0)
    allow_no_admin_key: bool = Field(
        default=False,
        description="serve real backends with no admin key (the admin API then answers 401)",
    )


class BudgetConfig(_Strict):
    """A spending limit in config; the admin API and `tokenmeter budgets` add more."""

    scope: Literal["key", "user", "team", "use_case"]
    subject: str = Field(min_length=1, max_length=128, description="key id, user, team, use case")
    period: Literal["month", "week", "day"] = Field(default="month", description="UTC calendar")
    limit_usd: Decimal | None = Field(default=None, ge=0)
    limit_tokens: int | None = Field(default=None, ge=0, description="input + output tokens")
    soft_ratio: float = Field(default=0.8, gt=0, le=1, description="warn from this share on")

    @model_validator(mode="after")
    def _has_limit(self) -> BudgetConfig:
        if self.limit_usd is None and self.limit_tokens is None:
            raise ValueError("a budget needs limit_usd, limit_tokens, or both")
        return self


class BudgetSettings(_Strict):
    refresh_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="how often each replica re-reads the ledger's spend: with several "
        "replicas, a budget can be overshot by what the others spend in one interval",
    )
    limits: list[BudgetConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> BudgetSettings:
        seen: set[tuple[str, str, str]] = set()
        for i, b in enumerate(self.limits):
            key = (b.scope, b.subject, b.period)
            if key in seen:
                raise ValueError(f"budgets.limits.{i}: a second {b.period} budget for {key[:2]}")
            seen.add(key)
        return self


class RateLimit(_Strict):
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0, description="input + output")


class RateLimitSettings(_Strict):
    """Token buckets per key and per team: in Redis, shared by every replica, when
    ``redis_url`` is set; otherwise (and while Redis does not answer) each replica enforces its
    share of every limit (limit / replicas)."""

    per_key: RateLimit = Field(default_factory=RateLimit, description="every key's default")
    keys: dict[str, RateLimit] = Field(default_factory=dict, description="by key id")
    teams: dict[str, RateLimit] = Field(default_factory=dict)
    replicas: int = Field(default=1, ge=1, description="replicas sharing the limits")
    redis_url: SecretStr | None = Field(
        default=None, description="redis://host:6379/0: one bucket per key and team for all"
    )
    redis_key_prefix: str = Field(default="tokenmeter:ratelimit", min_length=1)
    redis_timeout_s: float = Field(
        default=DEFAULT_REDIS_TIMEOUT_S,
        gt=0,
        description="past this, a request is decided by this replica's share instead",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(REDIS_SCHEMES):
            raise ValueError(f"must start with {', '.join(REDIS_SCHEMES)}")
        return url


class LimitSettings(_Strict):
    """What one client may cost the gateway, and how long a shutdown waits for streams."""

    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="a request body must arrive within this (else 408)"
    )
    max_header_bytes: int = Field(
        default=64 * 1024, gt=0, description="request line and headers together (else 431)"
    )
    max_headers: int = Field(default=200, gt=0, description="header lines per request (else 431)")
    header_timeout_s: float = Field(
        default=15.0, gt=0, description="request line and headers must arrive within this"
    )
    drain_timeout_s: float = Field(
        default=120.0,
        ge=0,
        description="on SIGTERM, how long open streams may run before they are cut (metered "
        "cancelled); keep terminationGracePeriodSeconds above it",
    )


class MetricsSettings(_Strict):
    """Prometheus label policy: user and agent labels are opt-in, every label is capped."""

    user_label: bool = False
    agent_label: bool = False
    overhead_header: bool = Field(
        default=False, description="add x-tokenmeter-overhead-ms to every proxied response"
    )
    max_label_values: int = Field(default=100, gt=0, description="per opt-in label")
    max_use_cases: int = Field(
        default=50, gt=0, description="use cases beyond the configured ones; the rest: other"
    )


class PriceRuleConfig(_Strict):
    """A negotiated discount, batch share or explicit price; prices in USD per million tokens."""

    model: str | None = None
    backend: Backend | None = None
    effective_from: datetime | None = None
    discount: Decimal = Field(default=Decimal(0), ge=0, le=1)
    batch_share: Decimal = Field(default=Decimal(0), ge=0, le=1)
    input_per_mtok: Decimal | None = Field(default=None, ge=0)
    output_per_mtok: Decimal | None = Field(default=None, ge=0)
    cache_read_per_mtok: Decimal | None = Field(default=None, ge=0)
    cache_write_per_mtok: Decimal | None = Field(default=None, ge=0)
    cache_write_1h_per_mtok: Decimal | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _prices_complete(self) -> PriceRuleConfig:
        given = [f for f in _PRICE_FIELDS if getattr(self, f) is not None]
        if given and (self.input_per_mtok is None or self.output_per_mtok is None):
            raise ValueError("an explicit price needs input_per_mtok and output_per_mtok")
        return self


_PRICE_FIELDS = (
    "input_per_mtok",
    "output_per_mtok",
    "cache_read_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
)


class PricingSettings(_Strict):
    price_file: str | None = Field(
        default=None, description="a litellm-format price file to use instead of litellm's own"
    )
    rules: list[PriceRuleConfig] = Field(default_factory=list)


class MigrationTargetConfig(_Strict):
    """One line of the migration plan: which hosted traffic moves to which on-prem model.

    Either ``scenario`` (a preset of ``cost.scenarios``, e.g. the RTX rigs) or ``gpu`` + ``model``
    (``cost.presets``: h100-node, h200-node, b200-node, l40s-node × mistral-large-3, devstral-2,
    mistral-small, devstral-small-2), bought in colocation or rented by the GPU-hour.
    """

    name: str = Field(min_length=1, max_length=64)
    models: list[str] = Field(default_factory=list, description="hosted model aliases; [] = any")
    use_cases: list[str] = Field(default_factory=list, description="use cases; [] = any")
    scenario: str | None = None
    gpu: str | None = None
    model: str | None = None
    acquire: Literal["buy", "rent"] = "buy"
    overrides: dict[str, Any] = Field(default_factory=dict, description="OnPremPlan fields")
    pilots: list[str] = Field(
        default_factory=list,
        description="on-prem model aliases already serving this target's model (the pilot)",
    )

    def build(self) -> tuple[Any, dict[str, Any]]:
        """The preset scenario with the overrides applied; ValueError naming what is wrong."""
        from cost.presets import target_scenario
        from cost.scenarios import get_scenario

        if self.scenario is not None:
            if self.gpu is not None or self.model is not None:
                raise ValueError(f"{self.name}: give either scenario or gpu + model, not both")
            base = get_scenario(self.scenario)
        elif self.gpu is not None and self.model is not None:
            base = target_scenario(gpu=self.gpu, model=self.model, acquire=self.acquire)
        else:
            raise ValueError(f"{self.name}: give a scenario, or a gpu and a model")
        return base.with_overrides(**self.overrides), self.overrides


class TcoSettings(_Strict):
    """The migration plan the observed traffic is projected onto, and the window it reads.

    With no ``migration``, all hosted traffic moves to ``scenario`` (with ``overrides``).
    """

    scenario: str = "enterprise-h100"
    overrides: dict[str, Any] = Field(default_factory=dict, description="OnPremPlan fields")
    migration: list[MigrationTargetConfig] = Field(default_factory=list)
    hosted_model: str | None = Field(
        default=None, description="price-map key to check: warned about when missing/deprecated"
    )
    interval_s: float = Field(default=15.0, gt=0)
    window_days: float = Field(
        default=7.0, gt=0, description="trailing window the projection reads"
    )
    min_window_s: float = Field(default=3_600.0, ge=0, description="shorter: not enough traffic")
    min_requests: int = Field(default=1_000, ge=0, description="fewer: not enough traffic")
    growth_per_month: float = Field(default=0.0, ge=-0.5, le=10.0)

    @model_validator(mode="after")
    def _check_plan(self) -> TcoSettings:
        from cost.capacity import gpus_per_replica
        from cost.scenarios import get_scenario

        try:
            get_scenario(self.scenario).with_overrides(**self.overrides)
            for target in self.migration:
                gpus_per_replica(target.build()[0].plan)  # the model fits one node
        except (ValueError, TypeError) as exc:
            raise ValueError(f"tco: {exc}") from exc
        names = [t.name for t in self.migration]
        if len(set(names)) != len(names):
            raise ValueError(f"tco.migration: target names must be unique, got {names}")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOKENMETER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    storage: StorageSettings = StorageSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    pricing: PricingSettings = PricingSettings()
    tco: TcoSettings = TcoSettings()
    metrics: MetricsSettings = MetricsSettings()
    routing: RoutingSettings = RoutingSettings()
    budgets: BudgetSettings = BudgetSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    request_log: RequestLogSettings = RequestLogSettings()
    tracing: TracingSettings = TracingSettings()
    models: list[ModelConfig] = Field(default_factory=list)
    model_routes: list[ModelRouteConfig] = Field(
        default_factory=list, description="tried in order after the aliases and model_aliases"
    )
    model_aliases: dict[str, str] = Field(
        default_factory=dict, description="exact client model name → a configured model alias"
    )
    use_cases: dict[str, UseCaseConfig] = Field(default_factory=dict)
    admin_key: SecretStr | None = Field(default=None, description="alias of auth.admin_key")
    simulated_clock: bool = Field(
        default=False,
        description="honour X-Tokenmeter-Simulated-Time (Unix s) as the request's start: for "
        "`tokenmeter demo` and tests only; never in production",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _check_names(self) -> Settings:
        seen: set[str] = set()
        for i, model in enumerate(self.models):
            if model.name in seen:
                raise ValueError(f"models.{i}.name: duplicate model name {model.name!r}")
            seen.add(model.name)
            for j, dep in enumerate(model.deployments):
                if dep.api_base is None and not dep.simulated and dep.backend != "anthropic":
                    raise ValueError(
                        f"models.{i}.deployments.{j}.api_base: required for backend {dep.backend!r}"
                    )
        if self.models:
            targets = [
                (f"model_routes.{i}.model", r.model) for i, r in enumerate(self.model_routes)
            ]
            targets += [(f"model_aliases.{k}", v) for k, v in self.model_aliases.items()]
            for where, target in targets:
                if target not in seen:
                    raise ValueError(f"{where}: {target!r} is not a configured model name")
        return self

    @property
    def agent_use_cases(self) -> dict[str, str]:
        """Agent → the use case it serves, from ``use_cases.<name>.agents``."""
        return {a: uc for uc, cfg in self.use_cases.items() for a in cfg.agents}

    @property
    def effective_admin_key(self) -> str | None:
        key = self.auth.admin_key or self.admin_key
        return key.get_secret_value() if key else None


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (if any), overlay the environment, validate; ConfigError on failure."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping")
        data = loaded or {}
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc and not msg.startswith(loc) else msg)
    return "invalid configuration: " + "; ".join(lines)
