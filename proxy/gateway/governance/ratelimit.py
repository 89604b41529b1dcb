"""Rate limits: requests and tokens per minute per key and per team, as token buckets.

A bucket holds up to a minute's allowance and refills continuously. A request takes one from
its request buckets; it is admitted to the token buckets while they are above zero and its
actual tokens (input + output, known only when it ends) are taken afterwards, so a large
response can drive a bucket below zero and the next requests wait until it refills. Refusals
are 429 ``rate_limited`` with ``retry-after`` and OpenAI's ``x-ratelimit-*`` headers, which
every answer of a limited key carries.

Across replicas: with ``rate_limits.redis_url`` every bucket lives in Redis and all replicas
share one per key and team (shared_limits.py). Without it, and while Redis does not answer, each
replica enforces ``limit / rate_limits.replicas`` in its own memory, so the sum over replicas is
the limit when the load balancer spreads the traffic evenly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from metering.events import UsageEvent
from metering.metrics import RateLimitMetrics
from proxy.config.settings import RateLimit, RateLimitSettings
from proxy.gateway.errors import ProxyError
from proxy.gateway.governance.shared_limits import SharedBuckets, Take


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


@dataclass(slots=True)
class _Buckets:
    requests: TokenBucket | None
    tokens: TokenBucket | None


class RateLimiter:
    def __init__(self, settings: RateLimitSettings, *, registry: CollectorRegistry) -> None:
        self._settings = settings
        self._share = 1.0 / settings.replicas
        self._buckets: dict[tuple[str, str], _Buckets] = {}
        self.enabled = bool(_any(settings.per_key) or settings.keys or settings.teams)
        self.shared: SharedBuckets | None = None
        if self.enabled and settings.redis_url is not None:
            # imported here: redis is loaded only by a gateway that uses it
            from proxy.gateway.governance.redis_buckets import RedisBuckets

            store = RedisBuckets(
                settings.redis_url.get_secret_value(), timeout_s=settings.redis_timeout_s
            )
            self.shared = SharedBuckets(store, RateLimitMetrics(registry))

    async def start(self) -> None:
        if self.shared is not None:
            await self.shared.start()

    async def stop(self) -> None:
        if self.shared is not None:
            await self.shared.stop()

    def _limits(self, kind: str, name: str) -> RateLimit | None:
        s = self._settings
        limits = s.teams.get(name) if kind == "team" else s.keys.get(name, s.per_key)
        return limits if limits is not None and _any(limits) else None

    def _get(self, kind: str, name: str, now: float) -> _Buckets | None:
        found = self._buckets.get((kind, name))
        if found is None:
            limits = self._limits(kind, name)
            if limits is None:
                return None
            rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
            # a replica's share is at least one unit, or a small limit would refuse everything
            found = self._buckets[(kind, name)] = _Buckets(
                TokenBucket(max(1.0, rpm * self._share), now) if rpm else None,
                TokenBucket(max(1.0, tpm * self._share), now) if tpm else None,
            )
        return found

    async def admit(self, *, key_id: str, team: str) -> dict[str, str]:
        """Take one request from the key's and the team's buckets; the x-ratelimit headers,
        or ProxyError(429, rate_limited) with them and retry-after when a bucket is empty."""
        if not self.enabled:  # the common case costs one attribute read
            return {}
        subjects = [("key", key_id), ("team", team)]
        if self.shared is not None:
            answer = await self._admit_shared(subjects)
            if answer is not None:
                wait, levels = answer
                return _decide(wait, levels, subjects)
        return self._admit_local(subjects)

    async def _admit_shared(self, subjects: list[tuple[str, str]]) -> _Answer | None:
        assert self.shared is not None
        takes: list[Take] = []
        parts: list[tuple[str, str]] = []
        for kind, name in subjects:
            limits = self._limits(kind, name)
            if limits is None:
                continue
            for unit, limit, take in (
                ("requests", limits.requests_per_minute, 1.0),
                ("tokens", limits.tokens_per_minute, 0.0),
            ):
                if limit:
                    takes.append(Take(self._key(kind, name, unit), float(limit), 1.0, take))
                    parts.append((kind, unit))
        if not takes:
            return 0.0, []
        answer = await self.shared.take(takes)
        if answer is None:
            return None
        wait, after = answer
        return wait, [
            _Level(kind, unit, t.capacity, level)
            for (kind, unit), t, level in zip(parts, takes, after, strict=True)
        ]

    def _admit_local(self, subjects: list[tuple[str, str]]) -> dict[str, str]:
        now = time.monotonic()
        found = [
            (kind, b) for kind, name in subjects if (b := self._get(kind, name, now)) is not None
        ]
        wait = 0.0
        for _, b in found:
            for bucket in (b.requests, b.tokens):
                if bucket is not None:
                    bucket.refill(now)
                    wait = max(wait, bucket.wait_s(1.0))
        if wait == 0:
            for _, b in found:
                if b.requests is not None:
                    b.requests.level -= 1
        levels = [
            _Level(kind, unit, bucket.capacity, bucket.level)
            for kind, b in found
            for unit, bucket in (("requests", b.requests), ("tokens", b.tokens))
            if bucket is not None
        ]
        return _decide(wait, levels, subjects)

    def observe(self, event: UsageEvent) -> None:
        """Take the tokens a finished request spent from its token buckets."""
        tokens = event.usage.total_tokens
        if not tokens:
            return
        now = time.monotonic()
        for kind, name in (("key", event.key_id), ("team", event.team)):
            if self.shared is not None:
                limits = self._limits(kind, name)
                if limits is not None and limits.tokens_per_minute:
                    key = self._key(kind, name, "tokens")
                    self.shared.debit(key, capacity=limits.tokens_per_minute, tokens=tokens)
                if self.shared.up:
                    continue  # this replica's share is not in use: nothing to take from it
            b = self._buckets.get((kind, name))
            if b is not None and b.tokens is not None:
                b.tokens.refill(now)
                b.tokens.level -= tokens

    def _key(self, kind: str, name: str, unit: str) -> str:
        return f"{self._settings.redis_key_prefix}:{kind}:{name}:{unit}"


@dataclass(frozen=True, slots=True)
class _Level:
    """One bucket as the headers show it."""

    kind: str  # key or team
    unit: str  # requests or tokens
    capacity: float
    level: float

    def reset_s(self) -> float:
        """Seconds until the bucket is full again (OpenAI's x-ratelimit-reset-*)."""
        return max(0.0, (self.capacity - self.level) / (self.capacity / 60.0))


_Answer = tuple[float, list[_Level]]


def _decide(wait: float, levels: list[_Level], subjects: list[tuple[str, str]]) -> dict[str, str]:
    """The headers of an admitted request, or the 429 of a refused one."""
    headers = _headers(levels)
    if wait <= 0:
        return headers
    headers["retry-after"] = str(max(1, math.ceil(wait)))
    limited = {lv.kind for lv in levels}
    which = " and ".join(f"{kind} {name!r}" for kind, name in subjects if kind in limited)
    raise ProxyError(
        429,
        f"rate_limited: the rate limit of {which} is reached; retry in {wait:.1f} s",
        code="rate_limited",
        headers=headers,
    )


def _any(limits: RateLimit) -> bool:
    return bool(limits.requests_per_minute or limits.tokens_per_minute)


def _headers(levels: list[_Level]) -> dict[str, str]:
    """OpenAI's names; where a key and its team are both limited, the tighter bucket."""
    headers: dict[str, str] = {}
    for unit in ("requests", "tokens"):
        buckets = [lv for lv in levels if lv.unit == unit]
        if not buckets:
            continue
        tight = min(buckets, key=lambda lv: lv.level / lv.capacity)
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
