"""One request's metering state, from authentication to the usage event."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from cost.usage import TokenUsage
from metering.events import Status, UsageEvent, UsageSource, error_detail, new_event_id
from metering.keys import KeyInfo
from proxy.gateway.attribution import UNKNOWN, Attribution, key_attribution

if TYPE_CHECKING:
    from metering.ledger import Ledger
    from proxy.gateway.deployments import Deployment


class Telemetry(Protocol):
    """What the request path reports besides the ledger (the request log, traces): implemented by
    proxy.gateway.observability.telemetry, seen here only through this interface."""

    def request_started(self, call: Call, headers: Mapping[str, str]) -> None: ...
    def attempt_started(self, call: Call) -> None: ...
    def propagate(self, call: Call, headers: dict[str, str]) -> dict[str, str]: ...
    def finished(self, call: Call, event: UsageEvent, error_code: str | None) -> None: ...
    def discarded(self, call: Call) -> None: ...


class Call:
    """Collects what the usage event needs while a request is served; ``finish`` records it once.

    ``upstream_s`` accumulates time spent waiting on the upstream, so the proxy's own overhead is
    the rest of the latency. ``last`` is False while a failure would still move the request to
    another deployment; ``telemetry`` (request log, traces) is None when both are off.
    """

    __slots__ = (
        "_done",
        "_ledger",
        "attempt",
        "attributed",
        "attribution",
        "deployment",
        "headers",
        "key",
        "last",
        "model",
        "operation",
        "request_id",
        "spans",
        "started",
        "started_perf",
        "stream",
        "telemetry",
        "ttft_s",
        "upstream_s",
    )

    def __init__(self, ledger: Ledger, key: KeyInfo, telemetry: Telemetry | None = None) -> None:
        self._ledger = ledger
        self._done = False
        self.key = key
        self.telemetry = telemetry
        self.spans: Any = None  # the tracer's own state of this request
        self.last = True
        self.operation = "chat"
        self.request_id = ""  # the first attempt's event id, set when it is recorded
        self.attempt = 1
        self.started = time.time()
        self.started_perf = time.perf_counter()
        self.attribution: Attribution = key_attribution(key)
        self.attributed = False  # True once the request itself was read for attribution
        self.headers: dict[str, str] = {}  # added to the answer: rate limits, budget warnings
        self.deployment: Deployment | None = None
        self.model = UNKNOWN
        self.stream = False
        self.ttft_s: float | None = None
        self.upstream_s = 0.0

    def mark_first_chunk(self) -> None:
        if self.ttft_s is None:
            self.ttft_s = time.perf_counter() - self.started_perf

    def next_attempt(self) -> Call:
        """The same request on its next deployment: a new event, the same request id."""
        nxt = Call(self._ledger, self.key, self.telemetry)
        nxt.request_id, nxt.attempt = self.request_id, self.attempt + 1
        nxt.attribution, nxt.model, nxt.stream = self.attribution, self.model, self.stream
        nxt.attributed = self.attributed
        nxt.operation, nxt.spans = self.operation, self.spans
        return nxt

    def overhead_s(self) -> float:
        """Time since the request started that was not spent waiting on the upstream."""
        return max(0.0, time.perf_counter() - self.started_perf - self.upstream_s)

    def discard(self) -> None:
        """Nothing to record for this request (it spends no tokens)."""
        self._done = True
        if self.telemetry is not None:
            self.telemetry.discarded(self)

    def finish(
        self,
        status: Status,
        http_status: int,
        usage: TokenUsage | None = None,
        *,
        source: UsageSource = "upstream",
        error_code: str | None = None,
        detail: str = "",
    ) -> bool:
        """Record the event once; False if it could not be journaled (answer 503 if possible).

        ``error_code`` says why a refused or failed request failed (default: the status's); it is
        the code of the error body the client gets (``upstream_timeout``...). ``detail`` is the
        event's ``error_detail``: the exception class of an ``internal_error``, an upstream's
        status; never text from the request or an upstream's body (no prompt at rest)."""
        if self._done:
            return True
        self._done = True
        latency_s = time.perf_counter() - self.started_perf
        dep = self.deployment
        att = self.attribution
        event_id = new_event_id()
        self.request_id = self.request_id or event_id
        event = UsageEvent(
            id=event_id,
            request_id=self.request_id,
            attempt=self.attempt,
            started_at=self.started,
            finished_at=self.started + latency_s,
            key_id=self.key.id,
            team=att.team,
            user=att.user,
            end_user=att.end_user,
            user_source=att.user_source,
            agent=att.agent,
            session=att.session,
            use_case=att.use_case,
            model=self.model,
            backend=dep.backend if dep else "none",
            deployment=dep.name if dep else "none",
            upstream_model=dep.model if dep else "none",
            on_prem=dep.on_prem if dep else False,
            stream=self.stream,
            status=status,
            http_status=http_status,
            usage=usage or TokenUsage(),
            usage_source=source,
            latency_s=latency_s,
            ttft_s=self.ttft_s,
            overhead_s=max(0.0, latency_s - self.upstream_s),
            error_code=_error_code(status, http_status, error_code or ""),
            error_detail=error_detail(detail),
        )
        journaled = self._ledger.record(event)
        if status == "internal_error":  # the metric and the event say the same, once
            self._ledger.count_internal_error(event.error_detail)
        if self.telemetry is not None:
            self.telemetry.finished(self, event, event.error_code or None)
        return journaled


_STATUS_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    408: "timeout",
    413: "request_too_large",
    429: "rate_limited",
    499: "cancelled",
    502: "upstream_error",
    503: "unavailable",
    504: "timeout",
}


def _error_code(status: Status, http_status: int, code: str) -> str:
    """Every event that is not ``ok`` carries a code: the given one, else its status's."""
    if status == "ok":
        return ""
    if code:
        return code
    if status in ("timeout", "cancelled", "internal_error"):
        return status
    return _STATUS_CODES.get(http_status, "upstream_error" if http_status >= 500 else "error")
