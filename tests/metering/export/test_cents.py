"""Largest-remainder cents: they add up to the rounded total, and no row moves a cent or more."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given
from hypothesis import strategies as st

from metering.export.cents import cents


def half_up(micros: int) -> Decimal:
    return (Decimal(micros) / 1_000_000).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@given(st.lists(st.integers(min_value=0, max_value=10**12), max_size=200))
def test_cents_sum_to_the_rounded_total_and_stay_within_a_cent(micros):
    out = cents(micros)
    assert sum(out, Decimal(0)) == half_up(sum(micros))
    for amount, exact in zip(out, micros, strict=True):
        assert abs(amount - Decimal(exact) / 1_000_000) < Decimal("0.01")


def test_the_issues_drift_is_gone():
    # three rows of 0.5 cent each: half up per row gives 3 cents against a total of 2
    assert [half_up(5_000)] * 3 == [Decimal("0.01")] * 3
    assert cents([5_000, 5_000, 5_000]) == [Decimal("0.01"), Decimal("0.01"), Decimal("0.00")]


def test_the_missing_cent_goes_to_the_largest_remainder():
    assert cents([14_999, 14_000, 2_001]) == [Decimal("0.02"), Decimal("0.01"), Decimal("0.00")]


def test_no_rows():
    assert cents([]) == []
