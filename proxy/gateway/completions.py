"""Legacy text completions (``POST /v1/completions``), as editors' autocomplete uses them:
passed through to the servers that have them (vLLM, TGI, OpenAI-compatible), metered like chat."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp

from proxy.gateway.call import Call
from proxy.gateway.deployments import Deployment
from proxy.gateway.errors import ProxyError
from proxy.gateway.fallback import with_fallback
from proxy.gateway.intake import admit, read_json, upstream_body
from proxy.gateway.relays.openai_relay import forward_json, forward_stream
from proxy.gateway.runtime import Runtime

# Azure AI model inference and the Anthropic API have no text-completion endpoint.
SERVED_BY = frozenset({"vllm", "tgi", "openai_compatible"})


async def completions(request: Request, rt: Runtime, call: Call) -> ASGIApp:
    body = await read_json(request, rt, call)
    prompt = body.get("prompt")
    if prompt in (None, "", []) or not isinstance(prompt, str | list):
        raise ProxyError(400, "prompt must be a non-empty string or array", code="invalid_request")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ProxyError(400, "stream must be a boolean", code="invalid_request")
    await admit(rt, call)

    async def attempt(call: Call, dep: Deployment) -> ASGIApp:
        out = upstream_body(body, dep.model)
        if call.stream:
            return await forward_stream(rt.upstream, call, dep, out, path="/completions")
        out.pop("stream_options", None)  # vLLM rejects stream_options on non-streaming requests
        return await forward_json(rt.upstream, call, dep, "/completions", out)

    try:
        return await with_fallback(
            rt, call, body.get("model"), attempt, accept=lambda d: d.backend in SERVED_BY
        )
    except ProxyError as exc:
        if exc.code != "unsupported":
            raise
        raise ProxyError(
            400,
            f"model {call.model!r} has no deployment that serves /v1/completions (only vllm, "
            "tgi and openai_compatible backends do); use /v1/chat/completions",
            code="unsupported",
        ) from exc
