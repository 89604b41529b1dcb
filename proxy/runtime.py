"""Everything a request handler needs, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from metering.ledger import Ledger
from proxy.auth import KeyCache
from proxy.projector import Projector
from proxy.routing import Router
from proxy.settings import Settings
from proxy.upstream import Upstream


@dataclass(slots=True)
class Runtime:
    settings: Settings
    engine: Engine
    ledger: Ledger
    keys: KeyCache
    router: Router
    upstream: Upstream
    agent_use_cases: dict[str, str]
    open_mode: bool
    metrics: CollectorRegistry
    projector: Projector
