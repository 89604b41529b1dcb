"""The common front half of every proxied request: auth, size, JSON, model, attribution."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from proxy.gateway.attribution import UNKNOWN, header_map, resolve_attribution
from proxy.gateway.auth import bearer_token
from proxy.gateway.call import Call
from proxy.gateway.errors import ProxyError, journal_unavailable
from proxy.gateway.governance.budgets import BUDGET_HEADER
from proxy.gateway.runtime import Runtime

# Attribution keys we read from body metadata; stripped before the body goes upstream, where
# OpenAI-family servers would reject or store them and Anthropic accepts only user_id.
METADATA_KEYS = ("user", "agent", "session", "use_case")
# The ledger's model column holds 256 characters; a longer or unprintable name is refused here,
# where it enters, so no client can hand the writer a row the database rejects (a NUL on
# PostgreSQL) or the XLSX export a control character.
MAX_MODEL_LEN = 256
SIMULATED_TIME_HEADER = "x-tokenmeter-simulated-time"
# A client that hangs up while its answer is awaited is noticed at most this much later.
WATCH_AFTER_S = 0.05
_WATCH = "tokenmeter.disconnect_watch"
_GONE = "tokenmeter.client_gone"


async def authenticate(request: Request, rt: Runtime, *, anthropic: bool = False) -> Call:
    token = bearer_token(request.headers, allow_x_api_key=anthropic)
    key = await rt.keys.authenticate(token)
    if not rt.ledger.accepting:
        raise journal_unavailable()
    call = Call(rt.ledger, key, rt.telemetry)
    if rt.telemetry is not None:
        rt.telemetry.request_started(call, request.headers)
    if rt.settings.simulated_clock:
        _set_simulated_start(call, request.headers.get(SIMULATED_TIME_HEADER))
    return call


def _set_simulated_start(call: Call, value: str | None) -> None:
    """Only with ``simulated_clock`` on (the demo): the request is metered as if it started at
    the header's Unix time, through the same path as live traffic."""
    if value is None:
        return
    try:
        call.started = float(value)
    except ValueError as exc:
        raise ProxyError(400, f"header {SIMULATED_TIME_HEADER} must be Unix seconds") from exc


async def read_json(request: Request, rt: Runtime, call: Call) -> dict[str, Any]:
    """The body as a JSON object; sets the call's model and attribution on the way."""
    limit = rt.settings.limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProxyError(413, f"request body exceeds {limit} bytes", code="request_too_large")
    raw = bytearray()
    timeout_s = rt.settings.limits.body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):  # a client trickling its body holds nothing long
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > limit:
                    raise ProxyError(
                        413, f"request body exceeds {limit} bytes", code="request_too_large"
                    )
    except ClientDisconnect as exc:
        raise ProxyError(400, "client disconnected while sending the body") from exc
    except TimeoutError as exc:
        raise ProxyError(
            408, f"request body not received within {timeout_s:g} s", code="request_timeout"
        ) from exc
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProxyError(
            400, f"request body is not valid JSON: {exc}", code="invalid_json"
        ) from exc
    if not isinstance(body, dict):
        raise ProxyError(400, "request body must be a JSON object", code="invalid_request")
    call.model = checked_model(body.get("model"))
    call.stream = body.get("stream") is True
    call.attribution = resolve_attribution(
        header_map(request),
        body,
        key=call.key,
        agent_use_cases=rt.agent_use_cases,
        pinned=rt.keys.required,
        on_normalized=rt.identity.count,
    )
    call.attributed = True
    _watch_disconnect(request)
    return body


async def admit(rt: Runtime, call: Call) -> None:
    """Budgets, then rate limits: refused here, before any upstream call (429)."""
    att = call.attribution
    warning = rt.budgets.admit(
        key_id=call.key.id, user=att.user, team=att.team, use_case=att.use_case
    )
    if warning:
        call.headers[BUDGET_HEADER] = warning
    call.headers.update(await rt.limiter.admit(key_id=call.key.id, team=att.team))


def _watch_disconnect(request: Request) -> None:
    """Once the body is in, a client that hangs up before its answer starts cancels the request,
    and with it the upstream's work (a stream's own watcher takes over once it starts).

    The watcher task starts only when the answer is not there ``WATCH_AFTER_S`` later: most
    upstream waits that matter last seconds, and a request answered sooner costs one timer
    instead of a task, a pending receive and its cancellation."""
    task = asyncio.current_task()
    receive = request.receive

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        request.scope[_GONE] = True
        if task is not None:
            task.cancel()

    def start() -> None:
        request.scope[_WATCH] = asyncio.ensure_future(watch())

    request.scope[_WATCH] = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start)


def stop_disconnect_watch(request: Request) -> None:
    watcher = request.scope.pop(_WATCH, None)
    if watcher is not None:
        watcher.cancel()  # the timer, or the task it started


def client_gone(request: Request) -> bool:
    return bool(request.scope.get(_GONE))


def checked_model(model: Any) -> str:
    """The body's ``model``, validated; absent is left to the router (its default or a 400)."""
    if model is None:
        return UNKNOWN
    if not isinstance(model, str) or not 0 < len(model) <= MAX_MODEL_LEN or not model.isprintable():
        raise ProxyError(
            400,
            f"model must be a string of 1 to {MAX_MODEL_LEN} printable characters",
            code="invalid_model",
        )
    return model


def attribute_by_headers(request: Request, rt: Runtime, call: Call) -> None:
    """Attribute a request whose body was unusable, so its error record is still findable."""
    if call.attributed:
        return
    with contextlib.suppress(ProxyError):  # a bad header: the key's own attribution stands
        call.attribution = resolve_attribution(
            header_map(request),
            {},
            key=call.key,
            agent_use_cases=rt.agent_use_cases,
            pinned=rt.keys.required,
        )


def upstream_body(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A shallow copy for the upstream: its model name, our attribution keys removed."""
    out = dict(body)
    out["model"] = model
    metadata = out.get("metadata")
    if isinstance(metadata, dict) and any(k in metadata for k in METADATA_KEYS):
        rest = {k: v for k, v in metadata.items() if k not in METADATA_KEYS}
        if rest:
            out["metadata"] = rest
        else:
            del out["metadata"]
    return out
