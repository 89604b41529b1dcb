"""Trying the deployments of an alias in turn until one answers.

A request moves to the next deployment on connection failure, 5xx, 429 or timeout, as long as
nothing has been sent to the client yet (a streaming response is only returned once its upstream
answered, so a stream that has started never moves). Each attempt is its own usage event, all
sharing the request id; the attempt budget is the alias's ``max_attempts``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from starlette.types import ASGIApp

from proxy.gateway.call import Call
from proxy.gateway.deployments import Deployment
from proxy.gateway.errors import ProxyError, retryable_code
from proxy.gateway.runtime import Runtime

Attempt = Callable[[Call, Deployment], Awaitable[ASGIApp]]


def retryable(exc: ProxyError) -> bool:
    return retryable_code(exc.code, exc.status)


async def with_fallback(
    rt: Runtime,
    call: Call,
    model: object,
    attempt: Attempt,
    *,
    accept: Callable[[Deployment], bool] = lambda _dep: True,
) -> ASGIApp:
    """Run ``attempt`` on each candidate deployment that ``accept``s until one succeeds."""
    candidates = [
        d for d in rt.router.candidates(model, session=call.attribution.session) if accept(d)
    ]
    if not candidates:
        raise ProxyError(
            400, f"model {call.model!r} has no deployment for this API", code="unsupported"
        )
    current = call
    for i, dep in enumerate(candidates):
        if i:
            current = call.next_attempt()
        current.deployment = dep
        current.last = i == len(candidates) - 1
        if current.telemetry is not None:
            current.telemetry.attempt_started(current)
        rt.router.begin(dep)
        try:
            response = await attempt(current, dep)
        except ProxyError as exc:
            failed = retryable(exc)
            rt.router.record(dep, ok=not failed)
            if not failed or i == len(candidates) - 1:
                raise
            continue
        except asyncio.CancelledError:
            # The client left (or the drain deadline passed) while the upstream was working:
            # the upstream request is dropped with this task, and the attempt is billed as such.
            rt.router.record(dep, ok=True)
            current.finish("cancelled", 499)
            raise
        except orjson.JSONEncodeError:
            # The client's body cannot be encoded (nested too deep): sent nowhere, the client's
            # error, which the endpoint records as a 400; no deployment's failure.
            rt.router.release(dep)
            raise
        except Exception as exc:
            rt.router.record(dep, ok=False)
            current.finish("internal_error", 500, detail=type(exc).__name__)
            raise
        rt.router.record(dep, ok=True)
        return response
    raise AssertionError("unreachable: the loop returns or raises")
