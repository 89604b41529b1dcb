"""Reloading routing from the config file without a restart.

When the file changes, its models (weights, deployments, stickiness, attempt budgets) and the
agent → use case map take effect for the next request. Circuit breaker state carries over.
Everything else (storage, auth, pricing) needs a restart. An invalid file is logged and ignored.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from proxy.config.catalogue import effective_models, effective_routes
from proxy.config.settings import ConfigError, load_settings
from proxy.gateway.deployments import build_router
from proxy.gateway.runtime import Runtime

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 1.0


async def watch_config(rt: Runtime, path: Path) -> None:
    last = _mtime(path)
    while True:
        await asyncio.sleep(POLL_INTERVAL_S)
        mtime = _mtime(path)
        if mtime == last:
            continue
        last = mtime
        reload_routing(rt, path)


def reload_routing(rt: Runtime, path: Path) -> bool:
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        log.error("config %s changed but is invalid; keeping the running routing: %s", path, exc)
        return False
    models = effective_models(settings)
    rt.router = build_router(
        models,
        rt.simulated_bases,
        breakers=rt.router.breakers,
        failures_to_open=settings.routing.failures_to_open,
        cooldown_s=settings.routing.cooldown_s,
        routes=effective_routes(settings),
        model_aliases=settings.model_aliases,
    )
    rt.agent_use_cases = settings.agent_use_cases
    log.warning("config %s reloaded: routing for %d models", path, len(models))
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
