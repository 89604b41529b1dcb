"""The client-facing API: OpenAI Chat Completions, Responses, Completions, Embeddings and Models;
Anthropic Messages."""

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

from metering.events import Status
from proxy.gateway.auth import bearer_token
from proxy.gateway.call import Call
from proxy.gateway.completions import completions
from proxy.gateway.deployments import Deployment
from proxy.gateway.errors import ProxyError, anthropic_error, openai_error
from proxy.gateway.fallback import with_fallback
from proxy.gateway.intake import (
    admit,
    attribute_by_headers,
    authenticate,
    client_gone,
    read_json,
    stop_disconnect_watch,
    upstream_body,
)
from proxy.gateway.relays.anthropic_relay import chat_via_anthropic, messages_native, native_headers
from proxy.gateway.relays.exchange import raise_for_upstream, read_timed, send_timed
from proxy.gateway.relays.messages_relay import messages_via_chat
from proxy.gateway.relays.openai_relay import forward_json, forward_stream
from proxy.gateway.relays.streaming import EventStreamResponse
from proxy.gateway.relays.upstream_usage import estimate_tokens, prompt_chars
from proxy.gateway.responses.endpoint import create_response, stored_response
from proxy.gateway.runtime import Runtime
from proxy.gateway.translation.messages_chat import to_chat_request

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
                call.headers[OVERHEAD_HEADER] = f"{call.overhead_s() * 1000:.3f}"
            _add_headers(response, call.headers)
            return response
        except ProxyError as exc:
            headers = exc.headers
            if call is not None:
                attribute_by_headers(request, rt, call)
                status: Status = "client_error" if exc.status < 500 else "upstream_error"
                call.finish(status, exc.status, error_code=exc.code)
                headers = {**call.headers, **exc.headers}
            return error(
                exc.status,
                rt.router.redactor.scrub(exc.message),
                code=exc.code,
                headers=headers or None,
            )
        except orjson.JSONEncodeError as exc:
            # Valid JSON that cannot be sent on: nested deeper than the encoder's 254 levels.
            if call is not None:
                call.finish("client_error", 400, error_code="invalid_request")
            return error(400, f"request body cannot be forwarded: {exc}", code="invalid_request")
        except asyncio.CancelledError:
            if call is not None:
                call.finish("cancelled", 499, error_code="client_closed")
            if not client_gone(request):
                raise  # shutdown: the server cancels what outlived the drain
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return error(499, "client closed the request", code="client_closed")
        except Exception as exc:
            # A bug of ours: still one event, a count by class, and the family's error shape.
            name = type(exc).__name__
            log.exception("internal error serving %s", request.url.path)
            if call is None:
                rt.ledger.count_internal_error(name)
            else:  # counted with its event (once: a fallback attempt may have recorded it)
                call.finish("internal_error", 500, error_code="internal_error", detail=name)
            return error(500, f"internal error ({name})", code="internal_error")
        finally:
            stop_disconnect_watch(request)

    return endpoint


OVERHEAD_HEADER = "x-tokenmeter-overhead-ms"


def _add_headers(response: ASGIApp, headers: dict[str, str]) -> None:
    """The call's own headers: the proxy's overhead so far (not waiting on the upstream, for
    users to verify), rate-limit state, budget warnings."""
    for name, value in headers.items():
        if isinstance(response, EventStreamResponse):
            response.add_header(name, value)
        elif isinstance(response, Response):
            response.headers[name] = value


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
    await admit(rt, call)

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
    call.stream, call.operation = False, "embeddings"
    await admit(rt, call)

    async def attempt(call: Call, dep: Deployment) -> ASGIApp:
        out = upstream_body(body, dep.model)
        return await forward_json(rt.upstream, call, dep, "/embeddings", out)

    return await with_fallback(
        rt, call, body.get("model"), attempt, accept=lambda d: not d.is_anthropic
    )


async def messages(request: Request, rt: Runtime, call: Call) -> ASGIApp:
    body = await read_json(request, rt, call)
    _check_messages(body)
    await admit(rt, call)

    async def attempt(call: Call, dep: Deployment) -> ASGIApp:
        if dep.speaks_messages:
            out = upstream_body(body, dep.model)
            return await messages_native(rt.upstream, call, dep, out, request.headers)
        return await messages_via_chat(rt.upstream, call, dep, body)

    return await with_fallback(rt, call, body.get("model"), attempt)


async def count_tokens(request: Request) -> Response:
    """Pass-through for Claude Code; spends no tokens, so nothing is recorded. A deployment that
    does not speak Messages gets an estimate (four characters a token, as for cut streams)."""
    rt: Runtime = request.app.state.runtime
    try:
        call = await authenticate(request, rt, anthropic=True)
        body = await read_json(request, rt, call)
        dep = call.deployment = rt.router.candidates(body.get("model"))[0]
        call.discard()
        if not dep.speaks_messages:
            tokens = estimate_tokens(prompt_chars(to_chat_request(body, model="", backend="")))
            return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json")
        headers = native_headers(dep, request.headers)
        resp = await send_timed(
            rt.upstream,
            call,
            dep,
            dep.messages_path + "/count_tokens",
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


def _model_entry(name: str) -> dict[str, Any]:
    """One model in both families' list shapes: OpenAI's fields and Anthropic's side by side."""
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "tokenmeter",
        "type": "model",
        "display_name": name,
        "created_at": "1970-01-01T00:00:00Z",
    }


def _models_error(request: Request, exc: ProxyError) -> Response:
    if "anthropic-version" in request.headers:
        return anthropic_error(exc.status, exc.message)
    return openai_error(exc.status, exc.message, code=exc.code)


async def list_models(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    try:
        await rt.keys.authenticate(bearer_token(request.headers, allow_x_api_key=True))
    except ProxyError as exc:
        return _models_error(request, exc)
    names = rt.router.model_names
    body = {
        "object": "list",
        "data": [_model_entry(name) for name in names],
        "has_more": False,
        "first_id": names[0] if names else None,
        "last_id": names[-1] if names else None,
    }
    return Response(orjson.dumps(body), media_type="application/json")


async def retrieve_model(request: Request) -> Response:
    """Any name that resolves (an alias, the alias table, a pattern route) exists."""
    rt: Runtime = request.app.state.runtime
    name = str(request.path_params["model_id"])
    try:
        await rt.keys.authenticate(bearer_token(request.headers, allow_x_api_key=True))
        if rt.router.resolve(name) is None:
            raise rt.router.not_found(name)
    except ProxyError as exc:
        return _models_error(request, exc)
    return Response(orjson.dumps(_model_entry(name)), media_type="application/json")


def api_routes() -> list[Route]:
    return [
        Route("/v1/chat/completions", _endpoint(chat_completions), methods=["POST"]),
        Route("/chat/completions", _endpoint(chat_completions), methods=["POST"]),
        Route("/v1/embeddings", _endpoint(embeddings), methods=["POST"]),
        Route("/v1/completions", _endpoint(completions), methods=["POST"]),
        Route("/v1/responses", _endpoint(create_response), methods=["POST"]),
        Route("/responses", _endpoint(create_response), methods=["POST"]),
        Route(
            "/v1/responses/{rest:path}",
            _endpoint(stored_response),
            methods=["GET", "DELETE"],
        ),
        Route("/v1/messages", _endpoint(messages, anthropic=True), methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
    ]
