"""Choosing a deployment: smooth weighted round robin, session stickiness, a circuit breaker.

Smooth weighted round robin (nginx's scheme) is deterministic: over any run of picks each
deployment's share stays within one pick of its weight, so a 95/5 pilot is 95/5 over every
window, not only on average. Sticky sessions use weighted rendezvous hashing: a session always
maps to the same deployment while the set of healthy deployments is unchanged, and sessions
spread over deployments in proportion to their weights.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class Breaker:
    """Passive circuit breaker of one deployment.

    ``failures`` consecutive failures open it for ``cooldown_s``; then one trial request is let
    through (half-open): success closes it, failure opens it again. After closing, the
    deployment's share ramps from 10% back to its full weight over ``cooldown_s``.
    """

    failures_to_open: int = 5
    cooldown_s: float = 30.0
    failures: int = 0
    open_until: float = 0.0
    trial_in_flight: bool = False
    closed_at: float = -math.inf

    def available(self, now: float) -> bool:
        """Closed, or open past its cool-down with no trial request in flight (half-open)."""
        if self.failures < self.failures_to_open:
            return True
        return now >= self.open_until and not self.trial_in_flight

    def begin(self, now: float) -> None:
        """A request is sent: when half-open, it is the one trial."""
        if self.failures >= self.failures_to_open and now >= self.open_until:
            self.trial_in_flight = True

    def release(self) -> None:
        """The request never reached the deployment: it says nothing of its health."""
        self.trial_in_flight = False

    def weight_factor(self, now: float) -> float:
        ramp = (now - self.closed_at) / self.cooldown_s
        return 1.0 if ramp >= 1 else max(0.1, ramp)

    def record(self, ok: bool, now: float) -> None:
        was_open = self.failures >= self.failures_to_open
        self.trial_in_flight = False
        if ok:
            if was_open:
                self.closed_at = now
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= self.failures_to_open:
            self.open_until = now + self.cooldown_s

    @property
    def is_open(self) -> bool:
        return self.failures >= self.failures_to_open


class SmoothWeighted:
    """Smooth weighted round robin over indices 0..n-1 with weights that may change per pick."""

    def __init__(self, n: int) -> None:
        self._current = [0.0] * n

    def pick(self, weights: Sequence[float], allowed: Sequence[bool]) -> int:
        total = 0.0
        best = -1
        for i, (w, ok) in enumerate(zip(weights, allowed, strict=True)):
            if not ok or w <= 0:
                continue
            self._current[i] += w
            total += w
            if best < 0 or self._current[i] > self._current[best]:
                best = i
        if best < 0:
            return -1
        self._current[best] -= total
        return best


def rendezvous(
    key: str, names: Sequence[str], weights: Sequence[float], allowed: Sequence[bool]
) -> int:
    """Weighted rendezvous hashing: the index with the highest w / -ln(h(key, name))."""
    best, best_score = -1, -math.inf
    for i, (name, w, ok) in enumerate(zip(names, weights, allowed, strict=True)):
        if not ok or w <= 0:
            continue
        digest = hashlib.blake2b(f"{key}\x00{name}".encode(), digest_size=8).digest()
        h = (int.from_bytes(digest, "big") + 0.5) / 2**64  # in (0, 1)
        score = w / -math.log(h)
        if score > best_score:
            best, best_score = i, score
    return best


def monotonic() -> float:
    return time.monotonic()
