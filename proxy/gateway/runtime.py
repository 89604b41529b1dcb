"""Everything a request handler needs, built once in the app's lifespan, and torn down."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from metering.appender import JournalAppender
from metering.journal import Journal
from metering.ledger import Ledger
from metering.metrics import IdentityMetrics, StateMetrics, UsageMetrics
from metering.store import create_db_engine, prepare_schema
from metering.writer import BatchWriter
from proxy.config.budgets import config_budgets
from proxy.config.catalogue import effective_routes
from proxy.config.pricebook import build_pricebook
from proxy.config.settings import ModelConfig, Settings, StorageSettings
from proxy.gateway.auth import KeyCache
from proxy.gateway.deployments import Router, build_router
from proxy.gateway.drain import Drain
from proxy.gateway.governance.budgets import BudgetGuard
from proxy.gateway.governance.ratelimit import RateLimiter
from proxy.gateway.observability.telemetry import Telemetry, build_telemetry
from proxy.gateway.projector import Projector
from proxy.gateway.relays.upstream import Upstream

STATE_INTERVAL_S = 1.0  # how often each process refreshes its state gauges


@dataclass(slots=True)
class Runtime:
    settings: Settings
    engine: Engine
    ledger: Ledger
    writer: BatchWriter | JournalAppender
    keys: KeyCache
    router: Router
    upstream: Upstream
    agent_use_cases: dict[str, str]
    open_mode: bool
    admin_open: bool  # the simulated open mode: the admin API answers loopback without a key
    metrics: CollectorRegistry
    usage_metrics: UsageMetrics
    state: StateMetrics
    projector: Projector
    budgets: BudgetGuard
    limiter: RateLimiter
    identity: IdentityMetrics
    drain: Drain
    simulated_bases: dict[tuple[str, int], str] = field(default_factory=dict)
    telemetry: Telemetry | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    quarantined_seen: tuple[int, int] = (0, 0)  # (ledger process, its count) counted so far


async def build_runtime(
    settings: Settings,
    models: list[ModelConfig],
    simulated_bases: dict[tuple[str, int], str],
    *,
    open_mode: bool,
) -> Runtime:
    storage = settings.storage
    telemetry = build_telemetry(settings)
    engine = create_db_engine(storage.url)
    await asyncio.to_thread(prepare_schema, engine)
    prices = await asyncio.to_thread(build_pricebook, settings, models)
    writer = _writer(storage, engine)
    registry = CollectorRegistry(auto_describe=True)
    m = settings.metrics
    usage_metrics = UsageMetrics(
        registry,
        use_cases=list(settings.use_cases),
        max_use_cases=m.max_use_cases,
        user_label=m.user_label,
        agent_label=m.agent_label,
        max_label_values=m.max_label_values,
    )
    keys = KeyCache(
        engine, refresh_interval_s=settings.auth.refresh_interval_s, required=not open_mode
    )
    if isinstance(writer, BatchWriter):
        writer.quarantine.on_quarantined = usage_metrics.quarantined.inc
    upstream = Upstream()
    ledger = Ledger(
        writer=writer,
        prices=prices,
        reject_unjournaled=storage.on_journal_error == "reject",
        metrics=usage_metrics,
    )
    budgets = BudgetGuard(
        engine,
        ledger,
        config=config_budgets(settings.budgets),
        refresh_interval_s=settings.budgets.refresh_interval_s,
    )
    limiter = RateLimiter(settings.rate_limits, registry=registry)
    if limiter.enabled:
        ledger.listeners.append(limiter.observe)
    writer.start()
    await keys.start()
    await upstream.start()
    await budgets.start()
    await limiter.start()
    rt = Runtime(
        settings=settings,
        engine=engine,
        ledger=ledger,
        writer=writer,
        keys=keys,
        router=build_router(
            models,
            simulated_bases,
            failures_to_open=settings.routing.failures_to_open,
            cooldown_s=settings.routing.cooldown_s,
            routes=effective_routes(settings),
            model_aliases=settings.model_aliases,
        ),
        upstream=upstream,
        agent_use_cases=settings.agent_use_cases,
        open_mode=open_mode,
        admin_open=open_mode and all(d.simulated for m in models for d in m.deployments),
        metrics=registry,
        state=StateMetrics(registry),
        projector=Projector(
            engine,
            settings.tco,
            prices,
            models,
            window_dir=Path(storage.journal_dir) if storage.ledger_process else None,
        ),
        budgets=budgets,
        limiter=limiter,
        identity=IdentityMetrics(registry),
        drain=Drain(settings.limits.drain_timeout_s),
        simulated_bases=simulated_bases,
        usage_metrics=usage_metrics,
        telemetry=telemetry,
    )
    rt.projector.start()
    rt.tasks.append(asyncio.create_task(_publish_state_forever(rt), name="tokenmeter-state"))
    return rt


async def close_runtime(rt: Runtime) -> None:
    rt.drain.stop()
    for task in rt.tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await rt.projector.stop()
    await rt.budgets.stop()
    await rt.limiter.stop()
    await rt.upstream.stop()
    await rt.keys.stop()
    await rt.writer.stop()
    rt.engine.dispose()
    if rt.telemetry is not None:
        await rt.telemetry.close()


def _writer(storage: StorageSettings, engine: Engine) -> BatchWriter | JournalAppender:
    """The journal's appender when a ledger process takes it from there, else a writer of our
    own (inline: the batch writer thread in this process)."""
    journal = None
    if storage.journal:
        journal = Journal(
            Path(storage.journal_dir),
            fsync=storage.fsync,
            release_on_rotate=storage.ledger_process,
        )
        journal.open()
    if journal is not None and storage.ledger_process:
        return JournalAppender(
            engine,
            journal,
            tick_s=min(storage.flush_interval_s, 0.2),
            fsync_interval_s=storage.fsync_interval_s,
            stale_after_s=max(5.0, 20 * storage.flush_interval_s),
        )
    return BatchWriter(
        engine,
        journal,
        max_batch=storage.batch_max_events,
        flush_interval_s=storage.flush_interval_s,
        fsync_interval_s=storage.fsync_interval_s,
        retention_days=storage.retention_days,
    )


def publish_state(rt: Runtime) -> None:
    """Copy this process's ledger state and latest projection into the state gauges."""
    status = rt.writer.status if isinstance(rt.writer, JournalAppender) else None
    if status is not None and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # one process: the ledger process's count becomes our counter (several workers read
        # the counter the ledger process keeps in the shared metrics directory instead)
        pid, seen = rt.quarantined_seen
        seen = seen if pid == status.pid else 0
        if status.quarantined > seen:
            rt.usage_metrics.quarantined.inc(status.quarantined - seen)
        rt.quarantined_seen = (status.pid, status.quarantined)
    if isinstance(rt.writer, JournalAppender) and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # the gauges sum over processes: each worker its own, the ledger process the orphans'
        backlog = (rt.writer.own_pending_events, rt.writer.own_backlog_bytes)
    else:
        backlog = (rt.ledger.backlog_events, rt.ledger.backlog_bytes)
    rt.state.set_ledger(
        backlog_events=backlog[0],
        backlog_bytes=backlog[1],
        database_ok=rt.ledger.database_ok,
        journal_ok=not rt.ledger.journal_failed,
        writer_ok=rt.ledger.writer_stalled is None,
    )
    rt.state.set_tco(rt.projector.latest)
    rt.state.set_budgets([(s.budget.name, s.ratio) for s in rt.budgets.states()])


async def _publish_state_forever(rt: Runtime) -> None:
    # Each worker refreshes its own gauges: with several workers, the one that answers a
    # scrape reads the others' values from the shared multiprocess files.
    while True:
        publish_state(rt)
        await asyncio.sleep(STATE_INTERVAL_S)
