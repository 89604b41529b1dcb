"""The client-facing API: OpenAI Chat Completions, Embeddings and Models; Anthropic Messages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from proxy.gateway.anthropic_relay import chat_via_anthropic, messages_native, native_headers
from proxy.gateway.auth import bearer_token
from proxy.gateway.call import Call
from proxy.gateway.deployments import Deployment
from proxy.gateway.errors import ProxyError, anthropic_error, openai_error
from proxy.gateway.exchange import raise_for_upstream, read_timed, send_timed
from proxy.gateway.fallback import with_fallback
from proxy.gateway.intake import (
    attribute_by_headers,
    authenticate,
    client_gone,
    read_json,
    stop_disconnect_watch,
    upstream_body,
)
from proxy.gateway.openai_relay import forward_json, forward_stream
from proxy.gateway.runtime import Runtime
from proxy.gateway.streaming import EventStreamResponse

log = logging.getLogger(__name__)
Handler = Callable[[Request, Runtime, Call], Awaitable[ASGIApp]]


def _endpoint(
    handler: Handler, *, anthropic: bool = False
) -> Callable[[Request], Awaitable[ASGIApp]]:
    """Wrap a handler: errors in the client family's shape, and every authenticated request
    recorded exactly once (the handler records successes and upstream failures itself)."""
    error = _anthropic_error if anthropic else openai_error

    async def endpoint(request: Request) -> ASGIApp:
        rt: Runtime = request.app.state.runtime
        call: Call | None = None
        try:
            call = await authenticate(request, rt, anthropic=anthropic)
            response = await handler(request, rt, call)
            if isinstance(response, EventStreamResponse):
                rt.drain.track(response)
            if rt.settings.metrics.overhead_header:
                _add_overhead_header(response, call)
            return response
        except ProxyError as exc:
            if call is not None:
                attribute_by_headers(request, rt, call)
                call.finish("client_error" if exc.status < 500 else "upstream_error", exc.status)
            return error(
                exc.status,
                rt.router.redactor.scrub(exc.message),
                code=exc.code,
                headers=exc.headers,
            )
        except orjson.JSONEncodeError as exc:
            # Valid JSON that cannot be sent on: nested deeper than the encoder's 254 levels.
            if call is not None:
                call.finish("client_error", 400)
            return error(400, f"request body cannot be forwarded: {exc}", code="invalid_request")
        except asyncio.CancelledError:
            if call is not None:
                call.finish("cancelled", 499)
            if not client_gone(request):
                raise  # shutdown: the server cancels what outlived the drain
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return error(499, "client closed the request", code="client_closed")
        except Exception as exc:
            # A bug of ours: still one event, a count by class, and the family's error shape.
            name = type(exc).__name__
            log.exception("internal error serving %s", request.url.path)
            rt.ledger.count_internal_error(name)
            if call is not None:
                call.finish("internal_error", 500)
            return error(500, f"internal error ({name})", code="internal_error")
        finally:
            stop_disconnect_watch(request)

    return endpoint


OVERHEAD_HEADER = "x-tokenmeter-overhead-ms"


def _add_overhead_header(response: ASGIApp, call: Call) -> None:
    """The proxy's own time so far (not waiting on the upstream), for users to verify."""
    value = f"{call.overhead_s() * 1000:.3f}"
    if isinstance(response, EventStreamResponse):
        response.add_header(OVERHEAD_HEADER, value)
    elif isinstance(response, Response):
        response.headers[OVERHEAD_HEADER] = value


def _anthropic_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return anthropic_error(status, message, headers=headers)


def _check_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProxyError(400, "messages must be a non-empty array", code="invalid_request")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise ProxyError(
                400, f"messages.{i} must be an object with a role", code="invalid_request"
            )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ProxyError(400, "stream must be a boolean", code="invalid_request")


async def chat_completions(request: Request, rt: Runtime, call: Call) -> ASGIApp:
    body = await read_json(request, rt, call)
    _check_messages(body)

    async def attempt(call: Call, dep: Deployment) -> ASGIApp:
        if dep.is_anthropic:
            return await chat_via_anthropic(rt.upstream, call, dep, body)
        out = upstream_body(body, dep.model)
        if call.stream:
            return await forward_stream(rt.upstream, call, dep, out)
        out.pop("stream_options", None)  # vLLM rejects stream_options on non-streaming requests
        return await forward_json(rt.upstream, call, dep, "/chat/completions", out)

    return await with_fallback(rt, call, body.get("model"), attempt)


async def embeddings(request: Request, rt: Runtime, call: Call) -> ASGIApp:
    body = await read_json(request, rt, call)
    if body.get("input") in (None, "", []):
        raise ProxyError(400, "input is required", code="invalid_request")
    call.stream = False

    async def attempt(call: Call, dep: Deployment) -> ASGIApp:
        out = upstream_body(body, dep.model)
        return await forward_json(rt.upstream, call, dep, "/embeddings", out)

    return await with_fallback(
        rt, call, body.get("model"), attempt, accept=lambda d: not d.is_anthropic
    )


async def messages(request: Request, rt: Runtime, call: Call) -> ASGIApp:
    body = await read_json(request, rt, call)
    _check_messages(body)

    async def attempt(call: Call, dep: Deployment) -> ASGIApp:
        out = upstream_body(body, dep.model)
        return await messages_native(rt.upstream, call, dep, out, request.headers)

    try:
        return await with_fallback(
            rt, call, body.get("model"), attempt, accept=lambda d: d.is_anthropic
        )
    except ProxyError as exc:
        if exc.code != "unsupported":
            raise
        raise ProxyError(
            400,
            f"model {call.model!r} is not served by an anthropic deployment; "
            "use /v1/chat/completions",
            code="unsupported",
        ) from exc


async def count_tokens(request: Request) -> Response:
    """Pass-through for Claude Code; spends no tokens, so nothing is recorded."""
    rt: Runtime = request.app.state.runtime
    try:
        call = await authenticate(request, rt, anthropic=True)
        body = await read_json(request, rt, call)
        dep = call.deployment = rt.router.candidates(body.get("model"))[0]
        if not dep.is_anthropic:
            raise ProxyError(400, f"model {call.model!r} is not an anthropic deployment")
        call.discard()
        headers = native_headers(dep, request.headers)
        resp = await send_timed(
            rt.upstream,
            call,
            dep,
            "/v1/messages/count_tokens",
            orjson.dumps(upstream_body(body, dep.model)),
            headers,
        )
        await raise_for_upstream(resp, call, dep)
        return Response(await read_timed(resp, call, dep), media_type="application/json")
    except ProxyError as exc:
        return anthropic_error(
            exc.status, rt.router.redactor.scrub(exc.message), headers=exc.headers
        )
    except orjson.JSONEncodeError as exc:
        return anthropic_error(400, f"request body cannot be forwarded: {exc}")
    except Exception as exc:
        log.exception("internal error counting tokens")
        rt.ledger.count_internal_error(type(exc).__name__)
        return anthropic_error(500, f"internal error ({type(exc).__name__})")
    finally:
        stop_disconnect_watch(request)


async def list_models(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    try:
        await rt.keys.authenticate(bearer_token(request.headers, allow_x_api_key=True))
    except ProxyError as exc:
        return openai_error(exc.status, exc.message, code=exc.code)
    data = [
        {"id": alias, "object": "model", "created": 0, "owned_by": "tokenmeter"}
        for alias in rt.router.aliases
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


def api_routes() -> list[Route]:
    return [
        Route("/v1/chat/completions", _endpoint(chat_completions), methods=["POST"]),
        Route("/chat/completions", _endpoint(chat_completions), methods=["POST"]),
        Route("/v1/embeddings", _endpoint(embeddings), methods=["POST"]),
        Route("/v1/messages", _endpoint(messages, anthropic=True), methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
    ]
