"""Cents that add up: each row's USD amount rounded so that a column sums to its rounded total.

Rounding every row half up on its own lets a column of cents drift from the rounded total by up
to half a cent per row. The largest-remainder method (Hamilton's) floors every row to the cent,
then gives the cents still missing to the rows that lost the most, so the column sums exactly to
the total rounded half up. No row moves by a cent or more from its exact amount, and the exact
micro-dollars stay in the ``*_micro_usd`` column beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

MICRO_PER_CENT = 10_000


def cents(micros: Sequence[int]) -> list[Decimal]:
    """USD amounts (with cents) for ``micros`` that sum to the total rounded half up.

    Ties in the remainders go to the earlier row, so the result is reproducible.
    """
    floors = [m // MICRO_PER_CENT for m in micros]
    target = (sum(micros) + MICRO_PER_CENT // 2) // MICRO_PER_CENT
    missing = target - sum(floors)  # 0 <= missing <= len(micros)
    by_remainder = sorted(range(len(micros)), key=lambda i: (-(micros[i] % MICRO_PER_CENT), i))
    for i in by_remainder[:missing]:
        floors[i] += 1
    return [Decimal(c).scaleb(-2) for c in floors]
