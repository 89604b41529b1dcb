"""Answers for what no endpoint handles: the root, unknown paths, wrong methods, admin bodies that
fail validation. Always in the client family's error shape (Anthropic under ``/v1/messages``,
OpenAI elsewhere), never the framework's ``{"detail": ...}``, and naming what is served."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from proxy.gateway.errors import anthropic_error, openai_error

PRODUCT = "tokenmeter"
SERVED = (
    "POST /v1/chat/completions",
    "POST /v1/embeddings",
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "GET /v1/models",
    "GET /v1/models/{id}",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "/admin/* (GET /admin/docs)",
)


def _version() -> str:
    try:
        return version(PRODUCT)
    except PackageNotFoundError:
        return "unknown"


async def root(request: Request) -> Response:
    """Clients probe ``HEAD /`` before their first request (Claude Code does)."""
    body = {"name": PRODUCT, "version": _version(), "endpoints": list(SERVED)}
    return Response(orjson.dumps(body), media_type="application/json")


def _family_error(request: Request, status: int, message: str, code: str) -> Response:
    if request.url.path.startswith("/v1/messages"):
        return anthropic_error(status, message)
    return openai_error(status, message, code=code)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    method, path = request.method, request.url.path
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no endpoint {method} {path}; served: {', '.join(SERVED)}"
        return _family_error(request, 404, message, "unknown_endpoint")
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        response = _family_error(
            request, 405, f"{method} is not allowed on {path}; use {allowed}", "method_not_allowed"
        )
        if allowed:
            response.headers["allow"] = allowed
        return response
    return _family_error(request, exc.status_code, str(exc.detail), "error")


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg")))
    # never the input itself: it may hold what no response can encode (a lone surrogate)
    message = ("invalid request: " + "; ".join(problems))[:1000].encode("utf-8", "replace").decode()
    return _family_error(request, 422, message, "invalid_request")
