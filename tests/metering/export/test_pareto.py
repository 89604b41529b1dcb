"""The 80% set is the smallest set that carries 80%, checked against brute force."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations

from hypothesis import given
from hypothesis import strategies as st

from metering.export.pareto import headline, smallest_set

volumes = st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=10)


def brute_force_size(values: list[int], share: Fraction) -> int:
    total = sum(values)
    for k in range(len(values) + 1):
        for subset in combinations(values, k):
            if sum(subset) * share.denominator >= total * share.numerator:
                return k
    raise AssertionError("unreachable: the whole set carries 100%")


@given(volumes)
def test_no_smaller_set_carries_80_percent(values: list[int]):
    pareto = smallest_set((f"uc{i}", v) for i, v in enumerate(values))
    expected = brute_force_size(values, Fraction(4, 5)) if sum(values) else 0
    assert len(pareto.members) == expected
    assert 5 * pareto.carried >= 4 * pareto.total


@given(volumes, st.fractions(min_value=Fraction(1, 100), max_value=1))
def test_any_share_gives_the_smallest_set(values: list[int], share: Fraction):
    pareto = smallest_set(((f"uc{i}", v) for i, v in enumerate(values)), share=share)
    expected = brute_force_size(values, share) if sum(values) else 0
    assert len(pareto.members) == expected


def test_exactly_80_percent_is_enough():
    pareto = smallest_set([("a", 80), ("b", 15), ("c", 5)])
    assert pareto.members == ("a",) and pareto.carried_share == 0.8


def test_ties_are_broken_by_name():
    assert smallest_set([("b", 50), ("a", 50), ("c", 0)]).members == ("a", "b")


def test_headline_rounds_items_to_nearest_and_volume_down():
    pareto = smallest_set(
        [("a", 700), ("b", 149), ("c", 90), ("d", 61), *[(f"t{i}", 0) for i in range(6)]]
    )
    # 2 of 10 use cases carry 849 of 1000 tokens: 84.9% is shown as 84%.
    assert headline(pareto, items="use cases", volume="tokens") == (
        "20% of use cases (2 of 10) carry 84% of tokens"
    )


def test_headline_without_volume():
    assert headline(smallest_set([("a", 0)]), items="use cases", volume="cost") == (
        "no cost recorded"
    )
