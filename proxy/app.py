"""The ASGI application, made by a factory; its resources live in the lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from metering.metrics import exposition
from proxy import admin
from proxy.config.catalogue import auth_required, effective_models
from proxy.config.observability import configure_logging
from proxy.config.settings import Settings, load_settings
from proxy.gateway.drain import hook_signals
from proxy.gateway.reload import watch_config
from proxy.gateway.routes import api_routes
from proxy.gateway.runtime import Runtime, build_runtime, close_runtime, publish_state
from proxy.gateway.unrouted import http_error, root, validation_error
from proxy.simulated.launcher import bases_from_env

log = logging.getLogger("tokenmeter")

ENV_CONFIG = "TOKENMETER_CONFIG"
ENV_LOG_LEVEL = "TOKENMETER_LOG_LEVEL"  # serve's --log-level, handed to each worker process


def create_app(
    settings: Settings,
    *,
    simulated_bases: dict[tuple[str, int], str] | None = None,
    config_path: Path | None = None,
) -> FastAPI:
    """The app; with ``config_path`` it re-reads that file when it changes (routing reload)."""
    models = effective_models(settings)
    open_mode = not auth_required(settings, models)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = await build_runtime(settings, models, simulated_bases or {}, open_mode=open_mode)
        if config_path is not None:
            rt.tasks.append(asyncio.create_task(watch_config(rt, config_path)))
        app.state.runtime = rt
        hook_signals(rt.drain)
        _freeze_startup_heap()
        try:
            yield
        finally:
            await close_runtime(rt)

    app = Gateway(
        api=api_routes(),
        title="tokenmeter",
        lifespan=lifespan,
        docs_url="/admin/docs",
        openapi_url="/admin/openapi.json",
        redoc_url=None,
    )
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    for router in admin.routers:
        app.include_router(router)
    app.add_route("/", root, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    return app


# The cyclic GC's thresholds (CPython's default: 700, 10, 10). Every suspended request holds a
# chain of a dozen fresh objects (its coroutines' awaitables, futures, lists) re-made at each
# wake-up, so the young generation holds them all: with 2,000 open streams, ~26,000 objects that
# every young collection traversed, 5-17 ms each, some ten a second, which stalled a new
# request for hundreds of ms (bench/open_streams.py). At 10,000 allocations a young collection
# comes fourteen times less often for the same work each; the older generations likewise.
GC_THRESHOLDS = (10_000, 20, 50)


def _freeze_startup_heap() -> None:
    """Move everything built at start (modules, the price map, caches) out of the collector's
    reach: the cyclic GC's full collections otherwise re-scan it every few seconds under load,
    70 ms each with nothing to free (measured at c=64), which was the whole p99 tail. Then the
    collector's thresholds for a server (``GC_THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Gateway(FastAPI):
    """FastAPI, with the metered API's routes dispatched straight to their endpoints.

    Those endpoints answer every error themselves, so FastAPI's middleware stack (exception
    middlewares, body limit, telemetry, async exit stack: ~8 % of a request's CPU, profiled)
    only ever wrapped them. Everything else (admin, health, metrics, docs, 404 and 405) still
    goes through the stack.
    """

    def __init__(self, *, api: list[Route], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.router.routes.extend(api)
        self._hot = {
            (r.path, method): r.endpoint
            for r in api
            for method in r.methods or ()
            if method != "HEAD"
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self._hot.get((scope["path"], scope["method"]))
            if endpoint is not None:
                scope["app"] = self
                response: ASGIApp = await endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers, the writer moves and the journal is writable; reports
    the backlog. A stalled writer (database up, writes refused) reads apart from a down one."""
    rt: Runtime = request.app.state.runtime
    stalled = rt.ledger.writer_stalled
    body: dict[str, Any] = {
        "backlog_events": rt.ledger.backlog_events,
        "backlog_bytes": rt.ledger.backlog_bytes,
        "journal": "failed" if rt.ledger.journal_failed else "ok",
        "writer": f"stalled: {stalled}" if stalled else "ok",
    }
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping, rt), timeout=5)
        body["database"] = "ok"
    except Exception as exc:
        body["database"] = f"unreachable: {type(exc).__name__}"
    ready = body["database"] == "ok" and not rt.ledger.journal_failed and not stalled
    body["status"] = "ready" if ready else "unavailable"
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    publish_state(rt)
    return Response(exposition(rt.metrics), media_type=CONTENT_TYPE_LATEST)


def _ping(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers: the CLI hands the config over through the environment."""
    configure_logging(os.environ.get(ENV_LOG_LEVEL, "info"))  # a spawned worker starts bare
    path = os.environ.get(ENV_CONFIG)
    settings = load_settings(Path(path) if path else None)
    return create_app(
        settings, simulated_bases=bases_from_env(), config_path=Path(path) if path else None
    )
