"""The ``/v1/responses`` handlers: create (metered) and the stored-response paths (refused)."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp

from proxy.gateway.attribution import UNKNOWN, client_value
from proxy.gateway.call import Call
from proxy.gateway.deployments import Deployment
from proxy.gateway.errors import ProxyError
from proxy.gateway.fallback import with_fallback
from proxy.gateway.intake import admit, read_json
from proxy.gateway.responses.relay import respond
from proxy.gateway.responses.request import to_chat_request
from proxy.gateway.runtime import Runtime

NOT_STORED = (
    "tokenmeter does not store responses (every response is store=false), so it cannot be "
    "retrieved, listed or deleted; keep the output items and send them back in input"
)


async def create_response(request: Request, rt: Runtime, call: Call) -> ASGIApp:
    body = await read_json(request, rt, call)
    _session_from_body(call, body)  # first, so a refused request is attributed too
    chat = to_chat_request(body)
    await admit(rt, call)

    async def attempt(call: Call, dep: Deployment) -> ASGIApp:
        return await respond(rt.upstream, call, dep, chat, body)

    return await with_fallback(rt, call, body.get("model"), attempt)


async def stored_response(request: Request, rt: Runtime, call: Call) -> ASGIApp:
    """GET/DELETE ``/v1/responses/{id}`` and its sub-paths: authenticated, never metered."""
    call.discard()
    raise ProxyError(400, NOT_STORED, code="unsupported")


def _session_from_body(call: Call, body: dict[str, Any]) -> None:
    """The Responses ``conversation`` or ``prompt_cache_key`` is the session when no header or
    metadata named one (Codex sends its session id as both header and cache key)."""
    if call.attribution.session != UNKNOWN:
        return
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    for value, where in (
        (conversation, "conversation"),
        (body.get("prompt_cache_key"), "prompt_cache_key"),
    ):
        session = client_value(value, where)
        if session:
            call.attribution = dataclasses.replace(call.attribution, session=session)
            return
