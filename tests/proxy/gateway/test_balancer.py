"""The balancer's parts: smooth weighted round robin, weighted rendezvous hashing, the breaker."""

from __future__ import annotations

from collections import Counter

import pytest

from proxy.gateway.balancer import Breaker, SmoothWeighted, rendezvous


def test_breaker_opens_after_failures_half_opens_and_ramps_back():
    b = Breaker(failures_to_open=3, cooldown_s=10)
    for t in range(3):
        b.record(False, now=t)
    assert not b.available(now=5)  # open
    assert b.available(now=13)  # cool-down over: half-open
    b.begin(now=13)
    assert not b.available(now=13)  # one trial at a time
    b.record(True, now=14)
    assert b.available(now=14) and not b.is_open
    assert b.weight_factor(now=14) == pytest.approx(0.1)
    assert b.weight_factor(now=19) == pytest.approx(0.5)
    assert b.weight_factor(now=30) == 1.0


def test_smooth_weighted_interleaves_instead_of_bursting():
    rr = SmoothWeighted(3)
    picks = [rr.pick([5, 1, 1], [True, True, True]) for _ in range(7)]
    assert Counter(picks) == {0: 5, 1: 1, 2: 1}
    assert picks[0] == 0 and picks[1:3] != [0, 0]  # nginx's sequence: a a b a c a a


def test_smooth_weighted_skips_disallowed_and_zero_weights():
    rr = SmoothWeighted(3)
    assert {rr.pick([1, 0, 1], [False, True, True]) for _ in range(10)} == {2}
    assert rr.pick([1, 1], [False, False]) == -1


def test_rendezvous_is_stable_and_moves_only_the_keys_of_a_removed_node():
    names, weights = ["a", "b", "c"], [1.0, 1.0, 1.0]
    before = {k: rendezvous(f"s{k}", names, weights, [True] * 3) for k in range(3000)}
    assert before == {k: rendezvous(f"s{k}", names, weights, [True] * 3) for k in range(3000)}
    after = {k: rendezvous(f"s{k}", names, weights, [True, False, True]) for k in range(3000)}
    moved = [k for k in before if before[k] != after[k]]
    assert moved and all(before[k] == 1 for k in moved)
    assert rendezvous("s", names, weights, [False] * 3) == -1


def test_rendezvous_follows_weights():
    homes = Counter(rendezvous(f"s{k}", ["a", "b"], [3.0, 1.0], [True, True]) for k in range(8000))
    assert 0.72 < homes[0] / 8000 < 0.78
