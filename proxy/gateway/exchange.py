"""One exchange with an upstream, shared by both relays: send and read with the wait timed,
upstream errors recorded and turned into the client's status, the error event of a cut stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

from metering.events import Status
from proxy.gateway.call import Call
from proxy.gateway.deployments import Deployment
from proxy.gateway.errors import ProxyError, upstream_message
from proxy.gateway.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout


@contextmanager
def waiting_on_upstream(call: Call, dep: Deployment) -> Iterator[None]:
    """Time spent inside counts as upstream wait; failures are recorded and become 502/504."""
    t0 = time.perf_counter()
    try:
        yield
    except UpstreamTimeout as exc:
        call.finish("timeout", 504, error_code="upstream_timeout")
        raise ProxyError(
            504, f"upstream timed out after {dep.timeout_s:g} s", code="upstream_timeout"
        ) from exc
    except UpstreamError as exc:
        call.finish("upstream_error", 502, error_code="upstream_unavailable")
        raise ProxyError(502, str(exc), code="upstream_unavailable") from exc
    finally:
        call.upstream_s += time.perf_counter() - t0


async def send_timed(
    upstream: Upstream,
    call: Call,
    dep: Deployment,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> UpstreamResponse:
    """Send and wait for the response headers."""
    headers = headers or dep.headers
    if call.spans is not None and call.telemetry is not None:
        headers = call.telemetry.propagate(call, headers)
    with waiting_on_upstream(call, dep):
        return await upstream.send(
            dep.url(path),
            body=body,
            headers=headers,
            timeout_s=dep.timeout_s,
            stream=call.stream,
        )


async def read_timed(resp: UpstreamResponse, call: Call, dep: Deployment) -> bytes:
    with waiting_on_upstream(call, dep):
        return await resp.read()


async def raise_for_upstream(resp: UpstreamResponse, call: Call, dep: Deployment) -> None:
    """Upstream 4xx pass through with their message; 5xx become 502. Both are recorded."""
    if resp.status < 400:
        return
    message = upstream_message(await read_timed(resp, call, dep))
    if resp.status >= 500:
        call.finish("upstream_error", 502, error_code="upstream_error")
        raise ProxyError(502, f"upstream returned {resp.status}: {message}", code="upstream_error")
    status: Status = "upstream_error" if resp.status == 429 else "client_error"
    code = upstream_code(resp.status)
    call.finish(status, resp.status, error_code=code)
    raise ProxyError(resp.status, message, code=code)


def upstream_code(status: int) -> str:
    """The error code of a request an upstream refused or failed with ``status``."""
    if status >= 500:
        return "upstream_error"
    return "upstream_rate_limited" if status == 429 else "upstream_rejected"


def error_event(message: str) -> bytes:
    body = {"error": {"message": message, "type": "upstream_error", "code": "upstream_error"}}
    return b"data: " + orjson.dumps(body) + b"\n\n"
