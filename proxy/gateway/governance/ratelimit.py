"""Rate limits: requests and tokens per minute per key and per team, as token buckets.

A bucket holds up to a minute's allowance and refills continuously. A request takes one from
its request buckets; it is admitted to the token buckets while they are above zero and its
actual tokens (input + output, known only when it ends) are taken afterwards, so a large
response can drive a bucket below zero and the next requests wait until it refills. Refusals
are 429 ``rate_limited`` with ``retry-after`` and OpenAI's ``x-ratelimit-*`` headers, which
every answer of a limited key carries.

Across replicas (no shared store): each replica enforces ``limit / rate_limits.replicas``, so
the sum over replicas is the limit when the load balancer spreads the traffic evenly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from metering.events import UsageEvent
from proxy.config.settings import RateLimit, RateLimitSettings
from proxy.gateway.errors import ProxyError


class TokenBucket:
    """``capacity`` units, refilled at ``capacity`` per minute; ``level`` may go negative."""

    __slots__ = ("capacity", "level", "rate_per_s", "updated")

    def __init__(self, capacity: float, now: float) -> None:
        self.capacity = capacity
        self.rate_per_s = capacity / 60.0
        self.level = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate_per_s)
        self.updated = now

    def wait_s(self, need: float) -> float:
        """Seconds until the bucket holds ``need`` (0 if it does)."""
        return max(0.0, (need - self.level) / self.rate_per_s)

    def reset_s(self) -> float:
        """Seconds until the bucket is full again (OpenAI's x-ratelimit-reset-*)."""
        return max(0.0, (self.capacity - self.level) / self.rate_per_s)


@dataclass(slots=True)
class _Buckets:
    requests: TokenBucket | None
    tokens: TokenBucket | None


class RateLimiter:
    def __init__(self, settings: RateLimitSettings) -> None:
        self._settings = settings
        self._share = 1.0 / settings.replicas
        self._buckets: dict[tuple[str, str], _Buckets] = {}
        self.enabled = bool(_any(settings.per_key) or settings.keys or settings.teams)

    def _limits(self, kind: str, name: str) -> RateLimit | None:
        s = self._settings
        if kind == "team":
            return s.teams.get(name)
        return s.keys.get(name, s.per_key)

    def _get(self, kind: str, name: str, now: float) -> _Buckets | None:
        found = self._buckets.get((kind, name))
        if found is None:
            limits = self._limits(kind, name)
            if limits is None or not _any(limits):
                return None
            rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
            # a replica's share is at least one unit, or a small limit would refuse everything
            found = self._buckets[(kind, name)] = _Buckets(
                TokenBucket(max(1.0, rpm * self._share), now) if rpm else None,
                TokenBucket(max(1.0, tpm * self._share), now) if tpm else None,
            )
        return found

    def admit(self, *, key_id: str, team: str) -> dict[str, str]:
        """Take one request from the key's and the team's buckets; the x-ratelimit headers,
        or ProxyError(429, rate_limited) with them and retry-after when a bucket is empty."""
        if not self.enabled:  # the common case costs one attribute read
            return {}
        now = time.monotonic()
        found = [
            (kind, b)
            for kind, name in (("key", key_id), ("team", team))
            if (b := self._get(kind, name, now)) is not None
        ]
        if not found:
            return {}
        wait = 0.0
        for _, b in found:
            for bucket, need in ((b.requests, 1.0), (b.tokens, 1.0)):
                if bucket is not None:
                    bucket.refill(now)
                    wait = max(wait, bucket.wait_s(need))
        if wait > 0:
            headers = _headers(found)
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            which = " and ".join(f"{kind} {_name(kind, key_id, team)}" for kind, _ in found)
            raise ProxyError(
                429,
                f"rate_limited: the rate limit of {which} is reached; retry in {wait:.1f} s",
                code="rate_limited",
                headers=headers,
            )
        for _, b in found:
            if b.requests is not None:
                b.requests.level -= 1
        return _headers(found)

    def observe(self, event: UsageEvent) -> None:
        """Take the tokens a finished request spent from its token buckets."""
        tokens = event.usage.total_tokens
        if not tokens:
            return
        now = time.monotonic()
        for kind, name in (("key", event.key_id), ("team", event.team)):
            b = self._buckets.get((kind, name))
            if b is not None and b.tokens is not None:
                b.tokens.refill(now)
                b.tokens.level -= tokens


def _any(limits: RateLimit) -> bool:
    return bool(limits.requests_per_minute or limits.tokens_per_minute)


def _name(kind: str, key_id: str, team: str) -> str:
    return repr(key_id if kind == "key" else team)


def _headers(found: list[tuple[str, _Buckets]]) -> dict[str, str]:
    """OpenAI's names; where a key and its team are both limited, the tighter bucket."""
    headers: dict[str, str] = {}
    for unit in ("requests", "tokens"):
        buckets = [getattr(b, unit) for _, b in found if getattr(b, unit) is not None]
        if not buckets:
            continue
        tight = min(buckets, key=lambda t: t.level / t.capacity)
        headers[f"x-ratelimit-limit-{unit}"] = str(round(tight.capacity))
        headers[f"x-ratelimit-remaining-{unit}"] = str(max(0, math.floor(tight.level)))
        headers[f"x-ratelimit-reset-{unit}"] = duration(tight.reset_s())
    return headers


def duration(seconds: float) -> str:
    """As OpenAI writes its reset times: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"
