"""The ASGI application, made by a factory; its resources live in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from metering.journal import Journal
from metering.ledger import Ledger
from metering.metrics import ledger_registry
from metering.store import create_db_engine, prepare_schema
from metering.writer import BatchWriter
from proxy import admin
from proxy.auth import KeyCache
from proxy.catalogue import default_models
from proxy.errors import openai_error
from proxy.pricing_setup import build_pricebook
from proxy.projector import Projector
from proxy.routes import api_routes
from proxy.routing import build_router
from proxy.runtime import Runtime
from proxy.settings import ModelConfig, Settings, load_settings
from proxy.simulation import bases_from_env
from proxy.upstream import Upstream

log = logging.getLogger("tokenmeter")

ENV_CONFIG = "TOKENMETER_CONFIG"


def effective_models(settings: Settings) -> list[ModelConfig]:
    return settings.models or default_models()


def auth_required(settings: Settings, models: list[ModelConfig]) -> bool:
    if settings.auth.required is not None:
        return settings.auth.required
    return not all(d.simulated for m in models for d in m.deployments)


def create_app(
    settings: Settings, *, simulated_bases: dict[tuple[str, int], str] | None = None
) -> FastAPI:
    models = effective_models(settings)
    open_mode = not auth_required(settings, models)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        storage = settings.storage
        engine = create_db_engine(storage.url)
        await asyncio.to_thread(prepare_schema, engine)
        prices = await asyncio.to_thread(build_pricebook, settings, models)
        projector = Projector(engine, settings.tco, prices)
        journal = None
        if storage.journal:
            journal = Journal(Path(storage.journal_dir), fsync=storage.fsync)
            journal.open()
        writer = BatchWriter(
            engine,
            journal,
            max_batch=storage.batch_max_events,
            flush_interval_s=storage.flush_interval_s,
            fsync_interval_s=storage.fsync_interval_s,
            retention_days=storage.retention_days,
        )
        keys = KeyCache(
            engine, refresh_interval_s=settings.auth.refresh_interval_s, required=not open_mode
        )
        upstream = Upstream()
        writer.start()
        await keys.start()
        await upstream.start()
        ledger = Ledger(
            writer=writer,
            prices=prices,
            reject_unjournaled=storage.on_journal_error == "reject",
        )
        app.state.runtime = Runtime(
            settings=settings,
            engine=engine,
            ledger=ledger,
            keys=keys,
            router=build_router(models, simulated_bases or {}),
            upstream=upstream,
            agent_use_cases={a: uc for uc, cfg in settings.use_cases.items() for a in cfg.agents},
            open_mode=open_mode,
            metrics=ledger_registry(ledger, tco=lambda: projector.latest),
            projector=projector,
        )
        projector.start()
        try:
            yield
        finally:
            await projector.stop()
            await upstream.stop()
            await keys.stop()
            await writer.stop()
            engine.dispose()

    app = FastAPI(
        title="tokenmeter",
        lifespan=lifespan,
        docs_url="/admin/docs",
        openapi_url="/admin/openapi.json",
        redoc_url=None,
    )
    app.add_exception_handler(HTTPException, _admin_error)
    app.router.routes.extend(api_routes())
    app.include_router(admin.router)
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    return app


async def _admin_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return openai_error(exc.status_code, str(exc.detail))


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers and the journal is writable; reports the backlog."""
    rt: Runtime = request.app.state.runtime
    body: dict[str, Any] = {
        "backlog_events": rt.ledger.backlog_events,
        "backlog_bytes": rt.ledger.backlog_bytes,
        "journal": "failed" if rt.ledger.journal_failed else "ok",
    }
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping, rt), timeout=5)
        body["database"] = "ok"
    except Exception as exc:
        body["database"] = f"unreachable: {type(exc).__name__}"
    ready = body["database"] == "ok" and not rt.ledger.journal_failed
    body["status"] = "ready" if ready else "unavailable"
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    return Response(generate_latest(rt.metrics), media_type=CONTENT_TYPE_LATEST)


def _ping(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers: the CLI hands the config over through the environment."""
    path = os.environ.get(ENV_CONFIG)
    settings = load_settings(Path(path) if path else None)
    return create_app(settings, simulated_bases=bases_from_env())
